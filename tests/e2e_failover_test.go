package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Flow is one iperf3 TCP flow A -> dst running in the background.
type Flow struct {
	l        *Lab
	srv, cli *exec.Cmd
	out      bytes.Buffer
	started  time.Time // when the client started: the 0 of its intervals
}

// flowPorts hands out the server ports of background flows: several may run into one host at a time.
var flowPorts atomic.Int32

// StartFlow starts a flow A -> dst (on B) of secs seconds with 0.5 s intervals.
func (l *Lab) StartFlow(dst string, secs int) *Flow {
	l.t.Helper()
	return l.StartIperf(IperfFlow{From: "A", To: "B", Dst: dst, Secs: secs})
}

// StartIperf starts flow f in the background with 0.5 s intervals; Wait ends it.
func (l *Lab) StartIperf(fl IperfFlow) *Flow {
	l.t.Helper()
	port := fmt.Sprint(5701 + flowPorts.Add(1)%500)
	f := &Flow{l: l}
	f.srv = exec.Command("ip", "netns", "exec", l.NS(fl.To), "iperf3", "-s", "-1", "-p", port)
	must(l.t, f.srv.Start())
	for range 50 {
		if strings.Contains(l.In(fl.To, "ss", "-ltn"), ":"+port) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	args := []string{"netns", "exec", l.NS(fl.From), "timeout", fmt.Sprint(fl.Secs + 20), "iperf3", "-c", fl.Dst, "-p", port, "-t", fmt.Sprint(fl.Secs), "-i", "0.5", "-J"}
	if fl.CC != "" {
		args = append(args, "-C", fl.CC)
	}
	f.cli = exec.Command("ip", args...)
	f.cli.Stdout = &f.out
	must(l.t, f.cli.Start())
	f.started = time.Now()
	return f
}

// Intervals are the received Mbit/s per 0.5 s as the sender saw them.
type flowResult struct {
	Intervals []struct {
		Sum struct {
			Start         float64 `json:"start"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum"`
	} `json:"intervals"`
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// Wait ends the flow and fails the test unless iperf3 finished cleanly (no reset, no error).
func (f *Flow) Wait() flowResult {
	f.l.t.Helper()
	err := f.cli.Wait()
	done := make(chan struct{})
	go func() { f.srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		f.srv.Process.Kill()
		<-done
	}
	var r flowResult
	if jerr := json.Unmarshal(f.out.Bytes(), &r); jerr != nil || err != nil || r.Error != "" {
		f.l.t.Fatalf("the flow did not survive: exit %v, error %q, json %v\n%s", err, r.Error, jerr, tail(f.out.String(), 2000))
	}
	return r
}

// mapHas tells whether host h's numgen map holds K entries (the sequence length).
func (l *Lab) mapLen(h string) int {
	out, err := exec.Command("ip", "netns", "exec", l.NS(h), "nft", "list", "table", "ip", "linkagg_tun0").CombinedOutput()
	if err != nil {
		return -1
	}
	var k int
	if i := strings.Index(string(out), "numgen inc mod "); i >= 0 {
		fmt.Sscan(string(out[i+len("numgen inc mod "):]), &k)
	}
	return k
}

// failover takes link 1 (200 Mbit/s of 300+200, weights 3:2) down at B's end in the middle of a flow and
// brings it back: A's map must drop to path 1 alone (K=1) within a second, return to K=5, and the flow
// must finish cleanly.
func failover(t *testing.T, l *Lab, dst string) {
	f := l.StartFlow(dst, 8)
	time.Sleep(2 * time.Second)
	l.In("B", "ip", "link", "set", l.Link("B", 1), "down")
	took := l.Eventually(3*time.Second, "path 2 did not leave A's map after its link lost carrier", func() bool { return l.mapLen("A") == 1 })
	t.Logf("carrier loss -> path out of the map: %s (polled every 50 ms)", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("path left the map after %s, want under 1 s", took)
	}
	if rules, _ := l.Kernel("A").Ours(); len(rules) != 1 {
		t.Errorf("during the outage A has %d rules of ours, want 1", len(rules))
	}
	time.Sleep(2 * time.Second)
	l.In("B", "ip", "link", "set", l.Link("B", 1), "up")
	l.Eventually(5*time.Second, "path 2 did not rejoin A's map when the link returned", func() bool { return l.mapLen("A") == 5 })
	r := f.Wait()
	// the flow kept moving while one link was out: every half second carried data
	for _, iv := range r.Intervals {
		if iv.Sum.BitsPerSecond < 10e6 {
			t.Errorf("interval at %.1fs carried %.1f Mbit/s: the flow stalled", iv.Sum.Start, iv.Sum.BitsPerSecond/1e6)
		}
	}
	t.Logf("flow over the failover: %.1f Mbit/s average", r.End.SumReceived.BitsPerSecond/1e6)
}

// TestE2EFailoverIfupdown: ifupdown hosts have no carrier events, so `linkagg watch` runs on both; a link
// whose peer goes down mid-flow leaves the map and rejoins, the flow survives, status says no-carrier.
func TestE2EFailoverIfupdown(t *testing.T) {
	l := NewLab(t, "fo", 300, 200)
	foIfupdown(t, l, 94)
	watchers := map[string]*exec.Cmd{}
	for _, h := range []string{"A", "B"} {
		watchers[h] = startWatch(t, l, h)
	}

	failover(t, l, "10.94.255.20")

	// status shows a carrier-less path; take it down without a flow and read it
	l.In("B", "ip", "link", "set", l.Link("B", 1), "down")
	l.Eventually(3*time.Second, "path 2 did not leave the map", func() bool { return l.mapLen("A") == 1 })
	if st := l.Status("A"); st.path(2).State != "no-carrier" || st.path(2).Since == nil || st.path(2).Link != l.Link("A", 1) || !st.Groups[0].Converged {
		t.Errorf("status should show path 2 no-carrier with its time and the group converged:\n%s", st.raw)
	}
	l.In("B", "ip", "link", "set", l.Link("B", 1), "up")
	l.Eventually(5*time.Second, "path 2 did not rejoin", func() bool { return l.mapLen("A") == 5 })

	// SIGTERM ends the watcher cleanly and removes its pid file; ifdown -a then leaves nothing
	w := watchers["A"]
	w.Process.Signal(syscall.SIGTERM)
	if err := w.Wait(); err != nil {
		t.Errorf("watch exited with %v on SIGTERM, want 0", err)
	}
	if out := l.In("A", "ls", filepath.Join(l.Etc("A"), "run-linkagg")); strings.Contains(out, "watch.pid") {
		t.Errorf("watch.pid left behind: %s", out)
	}
	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifdown", "-a")
	}
	if ru, ro, nft := l.ourCounts("A"); ru+ro != 0 || nft {
		t.Errorf("residue after ifdown -a: %d rules, %d routes, nft %v", ru, ro, nft)
	}
}

// TestE2EFailoverNetworkd: on networkd hosts the dispatcher's no-carrier and routable events do the same
// without a watcher.
func TestE2EFailoverNetworkd(t *testing.T) {
	l := NewLab(t, "fon", 300, 200)
	for _, h := range []struct {
		name string
		host int
	}{{"A", 10}, {"B", 20}} {
		l.StartNetworkd(h.name, 93, h.host, ndGroup(93, h.host), true)
	}
	for _, h := range []string{"A", "B"} {
		l.Eventually(15*time.Second, "the aggregate did not come up in "+l.NS(h), func() bool { return l.mapLen(h) == 5 })
	}
	failover(t, l, "10.93.255.20")
}

// foIfupdown writes both hosts' interfaces (links 10.NET.i.HOST/24, group tun0 weights 3:2) and runs ifup -a.
func foIfupdown(t *testing.T, l *Lab, net int) {
	t.Helper()
	for _, h := range []struct {
		name string
		host int
	}{{"A", 10}, {"B", 20}} {
		var b strings.Builder
		for i := range 2 {
			fmt.Fprintf(&b, "auto %s\niface %s inet static\n    address 10.%d.%d.%d/24\n\n", l.Link(h.name, i), l.Link(h.name, i), net, i, h.host)
		}
		fmt.Fprintf(&b, "auto tun0\niface tun0 inet static\n    address 10.%[1]d.255.%[2]d\n    netmask 255.255.255.255\n    fakenet 10.%[1]d.255.0/24\n    table 2%[1]d00 2%[1]d01\n    weight 3 2\n    rspec 10.%[1]d.255.10:10.%[1]d.0.10:10.%[1]d.1.10\n    rspec 10.%[1]d.255.20:10.%[1]d.0.20:10.%[1]d.1.20\n", net, h.host)
		l.WriteInterfaces(h.name, b.String())
		l.MustIfupdown(h.name, "ifup", "-a")
	}
	if k := l.mapLen("A"); k != 5 {
		t.Fatalf("map of A has %d entries after ifup -a, want 5", k)
	}
}

// linkaggArgs are the global options that make the CLI read host h's lab configuration and state, the
// same the hooks use under ifupdown-netns.sh.
func (l *Lab) linkaggArgs(h string) []string {
	return []string{"--interfaces", filepath.Join(l.Etc(h), "interfaces"), "--confdir", filepath.Join(l.Etc(h), "no-toml"),
		"--run-dir", filepath.Join(l.Etc(h), "run-linkagg")}
}

// watchCmd is `linkagg -v watch EXTRA...` in host h, on its lab configuration and state, not started.
func watchCmd(l *Lab, h string, extra ...string) *exec.Cmd {
	args := append([]string{"netns", "exec", l.NS(h), filepath.Join(binDir, "linkagg"), "-v"}, l.linkaggArgs(h)...)
	return exec.Command("ip", append(append(args, "watch"), extra...)...)
}

// startWatch runs `linkagg watch` in host h until the test ends (SIGTERM).
func startWatch(t *testing.T, l *Lab, h string, extra ...string) *exec.Cmd {
	t.Helper()
	w := watchCmd(l, h, extra...)
	var errb syncBuffer
	w.Stderr = &errb
	must(t, w.Start())
	t.Cleanup(func() {
		w.Process.Signal(syscall.SIGTERM)
		w.Wait()
		if t.Failed() {
			t.Logf("watch in %s:\n%s", l.NS(h), tail(errb.String(), 3000))
		}
	})
	l.Eventually(5*time.Second, "linkagg watch did not start in "+l.NS(h), func() bool {
		return strings.Contains(errb.String(), "watching links")
	})
	return w
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestE2EFailoverProbe: a link that keeps its carrier but stops passing traffic (the peer drops everything
// arriving on it) is found by the watcher's gateway probe; its path leaves the map, status says
// probe-failed, a running flow survives, and the path rejoins once the gateway answers again.
func TestE2EFailoverProbe(t *testing.T) {
	l := NewLab(t, "fop", 300, 200)
	foIfupdown(t, l, 91)
	startWatch(t, l, "A", "--probe-interval", "100ms")
	f := l.StartFlow("10.91.255.20", 7)
	time.Sleep(2 * time.Second)
	l.In("B", "nft", "add table ip fotest { chain in { type filter hook input priority 0; iifname "+l.Link("B", 1)+" drop; }; }")
	took := l.Eventually(3*time.Second, "path 2 did not leave the map when its gateway stopped answering", func() bool { return l.mapLen("A") == 1 })
	t.Logf("traffic dropped -> path out of the map: %s (probe every 100 ms, out after 3 misses)", took.Round(time.Millisecond))
	if st := l.Status("A"); st.path(2).State != "probe-failed" || st.path(2).Since == nil || len(st.path(2).Gateways.Down) != 1 {
		t.Errorf("status should show path 2 probe-failed with its time and its silent gateway:\n%s", st.raw)
	}
	t.Logf("status:\n%s", l.linkagg("A", "status"))
	time.Sleep(time.Second)
	l.In("B", "nft", "delete table ip fotest")
	l.Eventually(3*time.Second, "path 2 did not rejoin when its gateway answered again", func() bool { return l.mapLen("A") == 5 })
	r := f.Wait()
	t.Logf("flow over the probe failover: %.1f Mbit/s average", r.End.SumReceived.BitsPerSecond/1e6)
}
