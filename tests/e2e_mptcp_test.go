package tests

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// mptcpStanzas is host's interfaces file: n member NICs on 10.97.i.0/24 and a `mode mptcp` group.
func mptcpStanzas(l *Lab, h string, host, n int, extra string) string {
	var b strings.Builder
	var tables, own, peer []string
	for i := range n {
		fmt.Fprintf(&b, "auto %s\niface %s inet static\n    address 10.97.%d.%d/24\n\n", l.Link(h, i), l.Link(h, i), i, host)
		tables = append(tables, fmt.Sprint(11000+i))
		own = append(own, fmt.Sprintf("10.97.%d.10", i))
		peer = append(peer, fmt.Sprintf("10.97.%d.20", i))
	}
	fmt.Fprintf(&b, `auto tun0
iface tun0 inet static
    address 10.97.255.%d
    netmask 255.255.255.255
    fakenet 10.97.255.0/24
    table %s
    mode mptcp
    rspec 10.97.255.10:%s 10.97.255.20:%s
%s`, host, strings.Join(tables, " "), strings.Join(own, ":"), strings.Join(peer, ":"), extra)
	return b.String()
}

// mpIperf runs one MPTCP (mptcpize) iperf3 flow A -> dst. during runs while the flow is on, after a second.
// It returns the received Mbit/s and the client's error.
func mpIperf(l *Lab, dst string, secs int, during func()) (float64, error) {
	l.t.Helper()
	return l.iperf(dst, secs, []string{"mptcpize", "run"}, during)
}

// subflowsByConn reads host A's established TCP subflows of MPTCP connections (ss -tni shows their
// tokens) and groups their local addresses by the connection's token.
func subflowsByConn(l *Lab, dst ...string) map[string][]string {
	out := l.In("A", append([]string{"ss", "-tniH", "state", "established"}, dstFilter(dst)...)...)
	// a subflow is a line "LOCAL:PORT PEER:PORT" followed by an info line with "token:THEIRS(id:N)/OURS(id:M)"
	re := regexp.MustCompile(`token:[0-9a-f]+\(id:\d+\)/([0-9a-f]+)\(id:\d+\)`)
	conns := map[string][]string{}
	var local string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.Contains(f[2], ":") && !strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, " ") {
			local = f[2][:strings.LastIndex(f[2], ":")]
			if i := strings.IndexByte(local, '%'); i >= 0 {
				local = local[:i]
			}
			continue
		}
		if m := re.FindStringSubmatch(line); m != nil && local != "" {
			conns[m[1]] = append(conns[m[1]], local)
			local = ""
		}
	}
	return conns
}

// dstFilter is the ss filter `dst ADDR[:PORT]` of an optional destination.
func dstFilter(dst []string) []string {
	if len(dst) == 0 || dst[0] == "" {
		return nil
	}
	return []string{"dst", dst[0]}
}

type mpEndpointJSON struct {
	Address string
	ID      int
	Flags   []string // `ip -j` gives each flag as a boolean key
	Dev     string
}

func mpEndpoints(l *Lab, h string) []mpEndpointJSON {
	var raw []map[string]any
	jsonInto(l.t, l.In(h, "ip", "-j", "mptcp", "endpoint", "show"), &raw)
	var eps []mpEndpointJSON
	for _, r := range raw {
		e := mpEndpointJSON{Address: fmt.Sprint(r["address"]), Dev: fmt.Sprint(r["dev"])}
		if id, ok := r["id"].(float64); ok {
			e.ID = int(id)
		}
		for _, f := range []string{"signal", "subflow", "backup", "fullmesh", "laminar"} {
			if r[f] == true {
				e.Flags = append(e.Flags, f)
			}
		}
		eps = append(eps, e)
	}
	return eps
}

// TestE2EMPTCP: mode mptcp on 300/200 Mbit/s links with the real ifupdown. The kernel gets one endpoint per
// path (ours in the reserved id range, a foreign one kept), raised limits, per-source rules; one mptcpize'd
// iperf3 flow VIP -> VIP opens exactly one subflow per path and puts bytes on both links; the flow survives
// one link going down; ifdown -a restores limits and net.mptcp.enabled and removes only our endpoints.
func TestE2EMPTCP(t *testing.T) {
	l := NewLab(t, "mp", 300, 200)
	for h, host := range map[string]int{"A": 10, "B": 20} {
		l.WriteInterfaces(h, mptcpStanzas(l, h, host, 2, ""))
	}
	// host A's state before: MPTCP off, limits at zero, an endpoint of other software
	l.In("A", "sysctl", "-qw", "net.mptcp.enabled=0")
	l.In("A", "ip", "mptcp", "limits", "set", "subflows", "0", "add_addr_accepted", "0")
	l.In("A", "ip", "mptcp", "endpoint", "add", "10.77.0.1", "id", "5", "signal")
	limitsBefore := l.In("A", "ip", "mptcp", "limits", "show")

	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifup", "-a")
	}

	if v := l.Sysctl("A", "net/mptcp/enabled"); v != "1" {
		t.Errorf("net.mptcp.enabled = %s, want 1", v)
	}
	eps := mpEndpoints(l, "A")
	byAddr := endpointsByAddr(l, "A")
	if e, ok := byAddr["10.77.0.1"]; !ok || e.ID != 5 {
		t.Errorf("foreign endpoint changed or gone: %+v", eps)
	}
	// path 1 (equal weights: the first) carries the first subflow from the VIP, so its endpoint opens none
	for addr, want := range map[string]struct {
		dev   string
		flags []string
	}{"10.97.0.10": {l.Link("A", 0), nil}, "10.97.1.10": {l.Link("A", 1), []string{"subflow"}}} {
		e, ok := byAddr[addr]
		if !ok || e.ID < 200 || e.ID > 254 || e.Dev != want.dev || !slices.Equal(e.Flags, want.flags) {
			t.Errorf("endpoint %s: got %+v, want id 200..254 dev %s flags %v", addr, e, want.dev, want.flags)
		}
	}
	if lim := l.In("A", "ip", "mptcp", "limits", "show"); !strings.Contains(lim, "subflows 1") || !strings.Contains(lim, "add_addr_accepted 2") {
		t.Errorf("limits: %s", lim)
	}
	rules, _ := l.Kernel("A").Ours()
	var srcs []string
	for _, r := range rules {
		if r["fwmark"] != nil {
			t.Errorf("fwmark rule in mode mptcp (marks must never split a subflow): %v", r)
		}
		if r["dst"] != nil {
			srcs = append(srcs, fmt.Sprintf("to %v/%v lookup %v", r["dst"], r["dstlen"], r["table"]))
			continue
		}
		srcs = append(srcs, fmt.Sprintf("%v lookup %v", r["src"], r["table"]))
	}
	slices.Sort(srcs)
	// the `to FAKENET` rule carries ping and unconnected UDP by the primary path (TestE2ENonTCP)
	if want := []string{"10.97.0.10 lookup 11000", "10.97.1.10 lookup 11001", "10.97.255.10 lookup 11000", "to 10.97.255.0/24 lookup 11000"}; !slices.Equal(srcs, want) {
		t.Errorf("per-source rules %q, want %q", srcs, want)
	}
	if strings.Contains(l.Kernel("A").Nft, "linkagg") {
		t.Error("mode mptcp installed the packet-mode nft striping")
	}

	// one flow: one subflow per path, bytes on both links, each link at least half of its proportional share
	mptcpFlow(t, l, 300, 200)

	// one link goes down mid-flow: the connection goes on over the other
	tx0 := l.TxBytes("A")
	mbit, err := mpIperf(l, "10.97.255.20", 5, func() { l.In("B", "ip", "link", "set", l.Link("B", 1), "down") })
	tx1 := l.TxBytes("A")
	if err != nil || mbit <= 0 {
		t.Errorf("the flow did not survive losing link 2: %.1f Mbit/s, %v", mbit, err)
	}
	t.Logf("with link 2 going down after 1 s of 5: %.1f Mbit/s, tx %v", mbit, sub(tx1, tx0))
	l.In("B", "ip", "link", "set", l.Link("B", 1), "up")

	// a member NIC's ifdown takes its endpoint and rule away (no stale endpoint), its ifup brings them back
	l.MustIfupdown("A", "ifdown", l.Link("A", 1))
	if _, ok := endpointsByAddr(l, "A")["10.97.1.10"]; ok {
		t.Errorf("endpoint of %s still there after its ifdown: %+v", l.Link("A", 1), mpEndpoints(l, "A"))
	}
	if rules, _ := l.Kernel("A").Ours(); len(rules) != 3 {
		t.Errorf("after ifdown %s want 3 rules (path 1, the VIP, the fakenet), got %v", l.Link("A", 1), rules)
	}
	l.MustIfupdown("A", "ifup", l.Link("A", 1))
	if e, ok := endpointsByAddr(l, "A")["10.97.1.10"]; !ok || e.Dev != l.Link("A", 1) {
		t.Errorf("endpoint of %s not back after its ifup: %+v", l.Link("A", 1), mpEndpoints(l, "A"))
	}

	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifdown", "-a")
	}
	rules, routes := l.Kernel("A").Ours()
	if len(rules) != 0 || len(routes) != 0 {
		t.Errorf("residue after ifdown -a: rules %v routes %v", rules, routes)
	}
	eps = mpEndpoints(l, "A")
	if len(eps) != 1 || eps[0].Address != "10.77.0.1" || eps[0].ID != 5 {
		t.Errorf("endpoints after ifdown -a: %+v, want only the foreign 10.77.0.1 id 5", eps)
	}
	if lim := l.In("A", "ip", "mptcp", "limits", "show"); lim != limitsBefore {
		t.Errorf("limits after ifdown -a: %q, want the old %q", lim, limitsBefore)
	}
	if v := l.Sysctl("A", "net/mptcp/enabled"); v != "0" {
		t.Errorf("net.mptcp.enabled = %s after ifdown -a, want the old 0", v)
	}
}

func endpointsByAddr(l *Lab, h string) map[string]mpEndpointJSON {
	m := map[string]mpEndpointJSON{}
	for _, e := range mpEndpoints(l, h) {
		m[e.Address] = e
	}
	return m
}

func sub(a, b []uint64) []uint64 {
	out := make([]uint64, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

// checkMPTCPShares: MPTCP's scheduler fills subflows by their pace, not a fixed ratio, so the check is that
// every link carries at least half of its capacity share of the bytes.
func checkMPTCPShares(t *testing.T, tx0, tx1 []uint64, rates []float64) {
	t.Helper()
	d := sub(tx1, tx0)
	var total uint64
	var rsum float64
	for i := range d {
		total += d[i]
		rsum += rates[i]
	}
	for i := range d {
		share := float64(d[i]) / float64(total)
		if want := rates[i] / rsum; share < want/2 {
			t.Errorf("link %d carried %.2f of the bytes, want at least half of %.2f (tx %v)", i, share, want, d)
		}
	}
}

// TestE2EMPTCP4: 4x250 Mbit/s links: four endpoints, one subflow per path in the flow's connection, bytes
// on every link, and ifdown -a leaves nothing of ours.
func TestE2EMPTCP4(t *testing.T) {
	l := NewLab(t, "mp", 250, 250, 250, 250)
	for h, host := range map[string]int{"A": 10, "B": 20} {
		l.WriteInterfaces(h, mptcpStanzas(l, h, host, 4, ""))
	}
	limitsBefore := l.In("A", "ip", "mptcp", "limits", "show")
	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifup", "-a")
	}
	byAddr := endpointsByAddr(l, "A")
	for i := range 4 {
		if e, ok := byAddr[fmt.Sprintf("10.97.%d.10", i)]; !ok || e.Dev != l.Link("A", i) || e.ID < 200 {
			t.Errorf("path %d: endpoint %+v", i+1, e)
		}
	}
	if lim := l.In("A", "ip", "mptcp", "limits", "show"); !strings.Contains(lim, "subflows 3") || !strings.Contains(lim, "add_addr_accepted 4") {
		t.Errorf("limits: %s", lim)
	}
	mptcpFlow(t, l, 250, 250, 250, 250)
	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifdown", "-a")
	}
	rules, routes := l.Kernel("A").Ours()
	if len(rules) != 0 || len(routes) != 0 || len(mpEndpoints(l, "A")) != 0 {
		t.Errorf("residue after ifdown -a: rules %v routes %v endpoints %v", rules, routes, mpEndpoints(l, "A"))
	}
	if lim := l.In("A", "ip", "mptcp", "limits", "show"); lim != limitsBefore {
		t.Errorf("limits after ifdown -a: %q, want the old %q", lim, limitsBefore)
	}
}

// TestE2EHybrid: mode hybrid on 300/200 Mbit/s links, weight 3 2. A plain TCP flow is striped 3:2 as in
// packet mode; an MPTCP flow goes by subflows: only its first subflow's segments (from the VIP) get a
// mark, the primary path's, and those of the other subflows (from the path addresses) none (a test-only nft
// counter after our chain sees every MPTCP segment of the host with its mark); ifdown -a leaves nothing.
func TestE2EHybrid(t *testing.T) {
	l := NewLab(t, "mp", 300, 200)
	for h, host := range map[string]int{"A": 10, "B": 20} {
		text := strings.Replace(mptcpStanzas(l, h, host, 2, "    weight 3 2\n"), "mode mptcp", "mode hybrid", 1)
		l.WriteInterfaces(h, text)
	}
	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifup", "-a")
	}
	k := l.Kernel("A")
	if !strings.Contains(k.Nft, "tcp option mptcp exists return") || !strings.Contains(k.Nft, "numgen inc mod 5") ||
		!strings.Contains(k.Nft, "ip saddr 10.97.255.10 tcp option mptcp exists goto mark_f8000000") {
		t.Fatalf("hybrid nft table:\n%s", k.Nft)
	}
	if len(mpEndpoints(l, "A")) != 2 {
		t.Errorf("endpoints: %+v", mpEndpoints(l, "A"))
	}
	// counts MPTCP segments after our route chain (priority mangle = -150): all of them, and those marked
	l.In("A", "nft", "add table ip mptest; add chain ip mptest out { type filter hook output priority 100; }; "+
		"add rule ip mptest out tcp option mptcp exists ip saddr 10.97.255.10 meta mark & 0xff000000 == 0xf8000000 counter comment \"first\"; "+
		"add rule ip mptest out tcp option mptcp exists ip saddr != 10.97.255.10 meta mark & 0xff000000 != 0 counter comment \"marked\"; "+
		"add rule ip mptest out tcp option mptcp exists ip saddr 10.97.255.10 meta mark & 0xff000000 != 0xf8000000 counter comment \"marked\"; "+
		"add rule ip mptest out tcp option mptcp exists counter comment \"all\"")

	tx0 := l.TxBytes("A")
	mbit := l.Iperf("10.97.255.20", 4)
	tx1 := l.TxBytes("A")
	checkShares(t, tx0, tx1, []float64{3, 2})
	t.Logf("plain TCP flow, striped: %.1f Mbit/s", mbit)

	tx0 = l.TxBytes("A")
	mbit, err := mpIperf(l, "10.97.255.20", 4, nil)
	if err != nil {
		t.Fatalf("mptcp iperf3: %v", err)
	}
	tx1 = l.TxBytes("A")
	checkMPTCPShares(t, tx0, tx1, []float64{300, 200})
	t.Logf("MPTCP flow, by subflows: %.1f Mbit/s", mbit)
	counters := l.In("A", "nft", "list", "table", "ip", "mptest")
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ comment "(\w+)"`)
	n := map[string]int{}
	for _, m := range re.FindAllStringSubmatch(counters, -1) {
		var v int
		fmt.Sscan(m[1], &v)
		n[m[2]] = v
	}
	if n["all"] < 1000 || n["marked"] != 0 || n["first"] == 0 {
		t.Errorf("MPTCP segments: %d in all, %d of the first subflow with the primary mark, %d others with a mark (want many, some, none):\n%s", n["all"], n["first"], n["marked"], counters)
	}
	t.Logf("MPTCP segments after our chain: %d, of the first subflow (primary mark) %d, other marked %d", n["all"], n["first"], n["marked"])
	l.In("A", "nft", "delete", "table", "ip", "mptest")

	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifdown", "-a")
	}
	k = l.Kernel("A")
	rules, routes := k.Ours()
	if len(rules) != 0 || len(routes) != 0 || strings.Contains(k.Nft, "linkagg") || len(mpEndpoints(l, "A")) != 0 {
		t.Errorf("residue after ifdown -a: rules %v routes %v endpoints %v nft:\n%s", rules, routes, mpEndpoints(l, "A"), k.Nft)
	}
}

// checkSubflowPerPath asserts that no MPTCP connection has two subflows on one path and that at least one
// connection has a subflow on each of the paths.
func checkSubflowPerPath(t *testing.T, conns map[string][]string, paths int) {
	t.Helper()
	full := 0
	for tok, locals := range conns {
		s := slices.Clone(locals)
		slices.Sort(s)
		if len(slices.Compact(s)) != len(locals) {
			t.Errorf("connection %s has two subflows on one path: %v", tok, locals)
		}
		if len(locals) == paths {
			full++
		}
	}
	if full == 0 {
		t.Errorf("no MPTCP connection has a subflow on each of the %d paths: %v", paths, conns)
	}
}

// mptcpFlow runs one MPTCP flow A -> B's VIP over links of the given rates and checks that each connection
// has one subflow per path and that the bytes per link follow the rates.
func mptcpFlow(t *testing.T, l *Lab, rates ...float64) {
	t.Helper()
	tx0 := l.TxBytes("A")
	var conns map[string][]string
	mbit, err := mpIperf(l, "10.97.255.20", 4, func() { time.Sleep(time.Second); conns = subflowsByConn(l) })
	if err != nil {
		t.Fatalf("mptcp iperf3: %v", err)
	}
	tx1 := l.TxBytes("A")
	t.Logf("one MPTCP flow over %v Mbit/s: %.1f Mbit/s; subflows by connection: %v", rates, mbit, conns)
	checkSubflowPerPath(t, conns, len(rates))
	checkMPTCPShares(t, tx0, tx1, rates)
}
