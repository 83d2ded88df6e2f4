package status

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/linkagg/linkagg-hooks/apply"
	"github.com/linkagg/linkagg-hooks/health"
	"github.com/linkagg/linkagg-hooks/plan"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var now = time.Date(2026, 11, 25, 10, 0, 10, 0, time.UTC)

// sample is a running packet-mode group with weights 3:2: path 1 up and carrying, path 2 probe-failed
// since 10:00:01 with one silent gateway, and a watcher probing.
func sample() Report {
	since := now.Add(-9 * time.Second)
	r := Report{Version: Version, Time: now, Watcher: Watcher{Running: true, Updated: &since,
		Probes: &health.ProbeInfo{Targets: 2, PeriodSec: 0.2, BudgetPPS: 1000, Misses: 3, RatePPS: 10, IntervalSec: 0.2}}}
	g := Group{Group: "tun0", Iface: "tun0", Family: "inet", Mode: "packet", Running: true, Converged: true,
		Objects: []Objects{{Kind: "routes", Desired: 2, Present: 2}}, report: "tun0: tun tun0 up=true carrier=true ours=true mtu=1500 gso_max_size=65536\n",
		Tuning: Tuning{Weights: "from the speeds 3000/1000 Mbit/s (ethtool)", GSOMaxSize: 65536, Unit: "0.26 ms at the active paths' mean speed (2 Gbit/s)"}}
	g.Paths = []Path{
		{Path: 1, Table: 20000, Mark: "0x4e000000", Weight: 3, Speed: 3000, Address: "10.0.0.10", Link: "eth0", State: "up", Carrier: true,
			Packets: 120000, Bytes: 900_000_000, WeightShare: 1, NIC: &NIC{Name: "eth0", TxBytes: 910_000_000, RxBytes: 12_000_000, RxDropped: 3},
			Gateways: Gateways{Peers: 1, Probed: 1}},
		{Path: 2, Table: 20001, Mark: "0x4f000000", Weight: 2, Speed: 2000, Address: "10.0.1.10", Link: "eth1", State: "probe-failed", Since: &since,
			Carrier: true, Reason: "eth1 passes no traffic: no gateway on it answers probes", NIC: &NIC{Name: "eth1", TxBytes: 500_000_000},
			Gateways: Gateways{Peers: 1, Probed: 1, Down: []GatewayDown{{Peer: netip.MustParseAddr("10.99.255.20"), Gateway: netip.MustParseAddr("10.0.1.20"), Link: "eth1", State: "probe-failed", Since: &since,
				Reason: "gateway 10.0.1.20 on eth1 does not answer probes"}}}},
		// up, but one of its two peers has its gateway on no subnet of ours: nothing goes to that peer here
		{Path: 3, Table: 20002, Mark: "0x50000000", Weight: 1, Speed: 1000, Address: "10.0.2.10", Link: "eth2", State: "up", Carrier: true,
			Packets: 40000, Bytes: 300_000_000, WeightShare: 0.25, NIC: &NIC{Name: "eth2", TxBytes: 301_000_000},
			Gateways: Gateways{Peers: 2, Down: []GatewayDown{{Peer: netip.MustParseAddr("10.99.255.30"), Gateway: netip.MustParseAddr("10.0.9.30"),
				State: "pending", Reason: "gateway 10.0.9.30 is on no subnet of a link that is up"}}}},
	}
	Shares(g.Paths)
	r.Groups = []Group{g, {Group: "tun1", Iface: "tun1", Family: "inet", Mode: "mptcp", Paths: []Path{{Path: 1, State: "pending"}}}, transparentGroup()}
	return r
}

// transparentGroup is a running mode mptcp group with `mptcp-transparent all` attached; its read-back text
// is apply's own rendering of the same report.
func transparentGroup() Group {
	paths := []Path{{Path: 1, Table: 20100, Mark: "0x84000000", Weight: 1, Address: "10.0.2.10", Link: "eth2", State: "up", Carrier: true, WeightShare: 1,
		Subflows: &apply.SubflowStats{Subflows: 1, BytesSent: 1000}}}
	Shares(paths)
	ts := &apply.TransparentStatus{Want: &plan.Transparent{All: true}, Found: &apply.Transparent{Group: "tun2", Dir: "/sys/fs/bpf/linkagg/4097/tun2",
		Scope: plan.Transparent{All: true}, Map: true, MapOK: true, Linked: true, LinkID: 7, ProgID: 42, Current: true}}
	rep := apply.Report{Group: "tun2", TUN: apply.TUNStatus{Name: "tun2", Exists: true, IsTun: true, Ours: true, Up: true, MTU: 1500, GSO: 65536},
		Kinds: []apply.Kind{{Kind: "mptcp-transparent", Desired: 1, Present: 1}}, Converged: true, Transparent: ts}
	return Group{Group: "tun2", Iface: "tun2", Family: "inet", Mode: "mptcp", Running: true, Converged: true,
		Objects: []Objects{{Kind: "mptcp-transparent", Desired: 1, Present: 1}}, Transparent: transparent(ts), report: rep.String(), Paths: paths}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/internal/status -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// The text, JSON and Prometheus views of one report, as golden files: the JSON field names are a
// documented interface (README), so a rename fails here.
func TestRender(t *testing.T) {
	var b bytes.Buffer
	Text(&b, sample())
	golden(t, "status.txt", b.Bytes())
	for _, want := range []string{"probe-failed 10:00:01 (9s)", "gateway 10.0.1.20 of peer 10.99.255.20 on eth1: probe-failed since", "state: converged", "tun1: down",
		"mptcp-transparent all: program linkagg_mptcp id 42, link id 7, pinned at /sys/fs/bpf/linkagg/4097/tun2/link"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text view lacks %q", want)
		}
	}

	b.Reset()
	if err := JSON(&b, sample()); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.json", b.Bytes())
	var doc map[string]any
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	p1 := doc["groups"].([]any)[0].(map[string]any)["paths"].([]any)[0].(map[string]any)
	for _, k := range []string{"path", "table", "mark", "weight", "address", "link", "state", "carrier", "packets", "bytes", "weight_share", "share", "packet_share", "share_drift", "nic", "gateways"} {
		if _, ok := p1[k]; !ok {
			t.Errorf("path object lacks %q: %v", k, p1)
		}
	}
	tr, _ := doc["groups"].([]any)[2].(map[string]any)["mptcp_transparent"].(map[string]any)
	for k, v := range map[string]any{"scope": "all", "attached": true, "linked": true, "current": true, "kernel_scope": "all", "program_id": 42.0, "link_id": 7.0, "pins": "/sys/fs/bpf/linkagg/4097/tun2"} {
		if tr[k] != v {
			t.Errorf("mptcp_transparent.%s = %v, want %v (%v)", k, tr[k], v, tr)
		}
	}

	b.Reset()
	Prometheus(&b, sample())
	golden(t, "status.prom", b.Bytes())
	checkExposition(t, b.String())
	for _, want := range []string{
		`linkagg_path_up{group="tun0",path="1",table="20000",link="eth0"} 1`,
		`linkagg_path_bytes_total{group="tun0",path="1",table="20000",link="eth0"} 900000000`,
		`linkagg_path_state{group="tun0",path="2",table="20001",link="eth1",state="probe-failed"} 1`,
		`linkagg_path_gateways_down{group="tun0",path="2",table="20001",link="eth1"} 1`,
		`linkagg_mptcp_transparent_attached{group="tun2",scope="all"} 1`,
	} {
		if !strings.Contains(b.String(), want+"\n") {
			t.Errorf("prometheus output lacks %s", want)
		}
	}
}

// checkExposition checks the Prometheus text format: every sample follows its metric's HELP and TYPE, all
// samples of one metric together, no duplicate series.
func checkExposition(t *testing.T, s string) {
	t.Helper()
	sample := regexp.MustCompile(`^([a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$`)
	typed := map[string]bool{}
	done := map[string]bool{}
	seen := map[string]bool{}
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "# TYPE ") {
			f := strings.Fields(l)
			if done[cur] = true; typed[f[2]] {
				t.Errorf("TYPE of %s twice", f[2])
			}
			typed[f[2]], cur = true, f[2]
			continue
		}
		if strings.HasPrefix(l, "# HELP ") {
			continue
		}
		m := sample.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("not a sample line: %q", l)
			continue
		}
		if m[1] != cur || done[m[1]] {
			t.Errorf("sample of %s outside its block: %q", m[1], l)
		}
		series := l[:strings.LastIndex(l, " ")]
		if seen[series] {
			t.Errorf("duplicate series %s", series)
		}
		seen[series] = true
	}
}

// A watch frame shows per-path Mbit/s between two reports: 37.5 MB in one second is 300.0 Mbit/s; a
// counter that went back (table replaced) counts from zero; the share is the interval's.
func TestFrame(t *testing.T) {
	prev := sample()
	cur := sample()
	cur.Time = prev.Time.Add(time.Second)
	p := &cur.Groups[0].Paths
	(*p)[0].Bytes += 37_500_000
	(*p)[0].Packets += 25_000
	(*p)[0].NIC = &NIC{Name: "eth0", TxBytes: prev.Groups[0].Paths[0].NIC.TxBytes + 38_000_000, RxBytes: prev.Groups[0].Paths[0].NIC.RxBytes + 1_000_000, RxDropped: 5}
	(*p)[1].Bytes = 12_500_000 // restarted from 0
	(*p)[1].State, (*p)[1].Since = "up", nil
	var b bytes.Buffer
	Frame(&b, prev, prev, time.Second, nil)
	if strings.Contains(b.String(), "total") || !regexp.MustCompile(`(?m)^ *1 +eth0 +up +1\.00 +- +- `).MatchString(b.String()) {
		t.Errorf("the first screen has no interval, so no rates:\n%s", b.String())
	}
	b.Reset()
	Frame(&b, prev, cur, time.Second, []health.Flag{{Group: "tun0", Path: 2}})
	golden(t, "frame.txt", b.Bytes())
	out := b.String()
	for _, re := range []string{`(?m)^ *1 +eth0 +up +1\.00 +0\.75 +300\.0 +25000 +304\.0 +8\.0 +\+0/\+2 *$`, `(?m)^ *2 +eth1 +up +0\.00 +0\.25 DRIFT +100\.0 `, `(?m)total +400\.0`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("frame does not match %s:\n%s", re, out)
		}
	}
}
