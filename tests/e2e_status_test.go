package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// statusDoc is the part of `linkagg status --json` the tests read (field names as documented).
type statusDoc struct {
	Watcher struct {
		Running bool `json:"running"`
		Probes  *struct {
			Targets int `json:"targets"`
		} `json:"probes"`
	} `json:"watcher"`
	Groups []struct {
		Group     string       `json:"group"`
		Running   bool         `json:"running"`
		Converged bool         `json:"converged"`
		Paths     []statusPath `json:"paths"`
	} `json:"groups"`
	raw string
}

type statusPath struct {
	Path        int        `json:"path"`
	Link        string     `json:"link"`
	State       string     `json:"state"`
	Since       *time.Time `json:"since"`
	Weight      int        `json:"weight"`
	Packets     uint64     `json:"packets"`
	Bytes       uint64     `json:"bytes"`
	WeightShare float64    `json:"weight_share"`
	Share       *float64   `json:"share"`
	PacketShare *float64   `json:"packet_share"`
	NIC         *struct {
		TxBytes uint64 `json:"tx_bytes"`
	} `json:"nic"`
	Gateways struct {
		Peers  int   `json:"peers"`
		Probed int   `json:"probed"`
		Down   []any `json:"down"`
	} `json:"gateways"`
}

func (s statusDoc) path(n int) statusPath {
	for _, g := range s.Groups {
		for _, p := range g.Paths {
			if p.Path == n {
				return p
			}
		}
	}
	return statusPath{}
}

// Status runs `linkagg status --json` in host h (exit 0 or 4) and parses it.
func (l *Lab) Status(h string) statusDoc {
	l.t.Helper()
	cmd := exec.Command("ip", append(append([]string{"netns", "exec", l.NS(h), filepath.Join(binDir, "linkagg")}, l.linkaggArgs(h)...), "status", "--json")...)
	cmd.Env = append(os.Environ(), l.linkaggEnv(h)...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 4) {
		l.t.Fatalf("status --json in %s: %v\n%s", l.NS(h), err, out)
	}
	var s statusDoc
	if err := json.Unmarshal(out, &s); err != nil {
		l.t.Fatalf("status --json in %s: %v\n%s", l.NS(h), err, out)
	}
	s.raw = string(out)
	return s
}

// TestE2EStatus: one flow over 300+200 Mbit/s links with weights 3:2 and a watcher on A. status --json
// shows each path's mark-chain counters growing in proportion to its weight (numgen alternates, so the
// packets split 3:2 exactly, the bytes nearly), the member NICs sending at least that, the gateway of each
// path probed and answering; status --watch shows both paths' Mbit/s and ends on SIGINT; --prometheus has
// the counters. Then it tries to break it: status while apply runs in a loop, a member NIC renamed, the
// watcher killed.
func TestE2EStatus(t *testing.T) {
	start := time.Now()
	l := NewLab(t, "st", 300, 200)
	foIfupdown(t, l, 89)
	w := startWatch(t, l, "A")
	s0 := l.Status("A")
	if !s0.Watcher.Running || s0.Watcher.Probes == nil || s0.Watcher.Probes.Targets != 2 || !s0.Groups[0].Converged {
		t.Fatalf("before the flow: watcher running with 2 probe targets and the group converged, got\n%s", s0.raw)
	}
	for _, n := range []int{1, 2} {
		if p := s0.path(n); p.State != "up" || p.Link != l.Link("A", n-1) || p.Gateways.Probed != 1 || len(p.Gateways.Down) != 0 {
			t.Errorf("path %d before the flow: %+v", n, p)
		}
	}
	f := l.StartFlow("10.89.255.20", 5)
	time.Sleep(1500 * time.Millisecond)
	s1 := l.Status("A")
	watch := exec.Command("ip", append(append([]string{"netns", "exec", l.NS("A"), filepath.Join(binDir, "linkagg")}, l.linkaggArgs("A")...), "status", "--watch", "500ms")...)
	var frames syncBuffer
	watch.Stdout = &frames
	must(t, watch.Start())
	time.Sleep(1800 * time.Millisecond)
	must(t, watch.Process.Signal(syscall.SIGINT))
	werr := watch.Wait()
	prom, _ := exec.Command("ip", append(append([]string{"netns", "exec", l.NS("A"), filepath.Join(binDir, "linkagg")}, l.linkaggArgs("A")...), "status", "--prometheus")...).Output()
	time.Sleep(500 * time.Millisecond)
	s2 := l.Status("A")
	r := f.Wait()
	t.Logf("flow: %.1f Mbit/s", r.End.SumReceived.BitsPerSecond/1e6)

	p1, p2 := s2.path(1), s2.path(2)
	dp1, dp2 := p1.Packets-s1.path(1).Packets, p2.Packets-s1.path(2).Packets
	db1, db2 := p1.Bytes-s1.path(1).Bytes, p2.Bytes-s1.path(2).Bytes
	t.Logf("during 2.3 s of the flow: path 1 +%d packets +%d bytes, path 2 +%d packets +%d bytes", dp1, db1, dp2, db2)
	if p1.Packets < s1.path(1).Packets || p2.Packets < s1.path(2).Packets || db1 < 20e6 || db2 < 10e6 {
		t.Fatalf("the counters did not grow with the flow:\n%s\n%s", s1.raw, s2.raw)
	}
	if got := float64(dp1) / float64(dp1+dp2); got < 0.595 || got > 0.605 {
		t.Errorf("path 1 marked %.3f of the packets, want 0.600 (weights 3:2)", got)
	}
	if got := float64(db1) / float64(db1+db2); got < 0.55 || got > 0.65 {
		t.Errorf("path 1 marked %.3f of the bytes, want about 0.6", got)
	}
	for _, p := range []statusPath{p1, p2} {
		want := map[int]float64{1: 0.6, 2: 0.4}[p.Path]
		if p.WeightShare != want || p.PacketShare == nil || *p.PacketShare < want-0.01 || *p.PacketShare > want+0.01 || p.Share == nil {
			t.Errorf("path %d: weight_share %v packet_share %v share %v, want %.1f", p.Path, p.WeightShare, p.PacketShare, p.Share, want)
		}
		if p.NIC == nil || p.NIC.TxBytes-s1.path(p.Path).NIC.TxBytes < uint64(0.9*float64(map[int]uint64{1: db1, 2: db2}[p.Path])) {
			t.Errorf("path %d: NIC sent less than the path marked: %+v", p.Path, p.NIC)
		}
	}
	if werr != nil {
		t.Errorf("status --watch ended with %v on SIGINT, want 0", werr)
	}
	screen := frames.String()
	t.Logf("status --watch 500ms during the flow:\n%s", screen)
	if n := strings.Count(screen, "Ctrl-C quits"); n < 3 {
		t.Errorf("%d frames in 1.8 s of --watch 500ms", n)
	}
	for _, n := range []int{1, 2} {
		// a frame line: PATH LINK STATE WEIGHT SHARE Mbit/s ...
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^ *%d +%s +up +[0-9.]+ +[0-9.]+ +([0-9.]+) `, n, l.Link("A", n-1)))
		best := 0.0
		for _, m := range re.FindAllStringSubmatch(screen, -1) {
			var v float64
			fmt.Sscan(m[1], &v)
			best = max(best, v)
		}
		if best < map[int]float64{1: 100, 2: 60}[n] {
			t.Errorf("status --watch never showed path %d above %v Mbit/s (best %.1f)", n, map[int]float64{1: 100, 2: 60}[n], best)
		}
	}
	for _, want := range []string{
		fmt.Sprintf(`linkagg_path_up{group="tun0",path="1",table="28900",link="%s"} 1`, l.Link("A", 0)),
		fmt.Sprintf(`linkagg_path_bytes_total{group="tun0",path="2",table="28901",link="%s"} `, l.Link("A", 1)),
	} {
		if !strings.Contains(string(prom), want) {
			t.Errorf("status --prometheus lacks %q:\n%s", want, prom)
		}
	}
	t.Logf("status:\n%s", l.linkagg("A", "status"))

	// status while apply runs: never an error, and the group converged once apply is done
	stop := make(chan struct{})
	applied := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				applied <- n
				return
			default:
			}
			exec.Command("ip", append(append([]string{"netns", "exec", l.NS("A"), filepath.Join(binDir, "linkagg")}, l.linkaggArgs("A")...), "apply")...).Run()
			n++
		}
	}()
	for range 15 {
		l.Status("A") // fails the test on an error other than exit 4 (a difference seen mid-apply)
	}
	close(stop)
	t.Logf("15 status runs beside %d applies", <-applied)
	if st := l.Status("A"); !st.Groups[0].Converged {
		t.Errorf("not converged after the applies:\n%s", st.raw)
	}

	// a member NIC renamed: its path follows its address to the new name
	renamed := "stren1"
	l.In("A", "ip", "link", "set", l.Link("A", 1), "down")
	l.Eventually(3*time.Second, "path 2 did not leave when its NIC went down", func() bool { return l.mapLen("A") == 1 })
	l.In("A", "ip", "link", "set", l.Link("A", 1), "name", renamed)
	l.In("A", "ip", "link", "set", renamed, "up")
	l.Eventually(5*time.Second, "path 2 did not rejoin on the renamed NIC", func() bool { return l.mapLen("A") == 5 })
	l.Eventually(3*time.Second, "status does not show path 2 on the renamed NIC", func() bool {
		p := l.Status("A").path(2)
		return p.Link == renamed && p.State == "up" && p.Gateways.Probed == 1
	})
	l.In("A", "ip", "link", "set", renamed, "down")
	l.In("A", "ip", "link", "set", renamed, "name", l.Link("A", 1))
	l.In("A", "ip", "link", "set", l.Link("A", 1), "up")
	l.Eventually(5*time.Second, "path 2 did not rejoin under its own name", func() bool { return l.mapLen("A") == 5 })

	// the far end of link 2 flaps 20 times in 2 s: the watcher keeps up, and once the link stays up the
	// path is back, converged, its gateway answering
	for i := range 20 {
		state := map[bool]string{true: "down", false: "up"}[i%2 == 0]
		l.In("B", "ip", "link", "set", l.Link("B", 1), state)
		time.Sleep(time.Duration(50+i%3*50) * time.Millisecond)
	}
	l.In("B", "ip", "link", "set", l.Link("B", 1), "up")
	l.Eventually(5*time.Second, "path 2 did not settle back after the flapping", func() bool {
		st := l.Status("A")
		p := st.path(2)
		return l.mapLen("A") == 5 && st.Groups[0].Converged && p.State == "up" && p.Gateways.Probed == 1 && len(p.Gateways.Down) == 0
	})
	if w.ProcessState != nil {
		t.Fatalf("the watcher died during the flapping: %v", w.ProcessState)
	}
	t.Logf("flapping done at %s", time.Since(start).Round(time.Millisecond))

	// the watcher killed: its files stay, but status and the planners ignore them
	must(t, w.Process.Signal(syscall.SIGKILL))
	w.Wait()
	if st := l.Status("A"); st.Watcher.Running || st.Watcher.Probes != nil || !st.Groups[0].Converged {
		t.Errorf("after the watcher was killed:\n%s", st.raw)
	}
}

// linkagg runs the CLI in host h and returns its output (any exit status).
func (l *Lab) linkagg(h string, args ...string) string {
	out, _ := exec.Command("ip", append(append([]string{"netns", "exec", l.NS(h), filepath.Join(binDir, "linkagg")}, l.linkaggArgs(h)...), args...)...).CombinedOutput()
	return string(out)
}
