package health

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/linkagg/linkagg-hooks/plan"
)

// Planners count carrier only while a watcher lives (or networkd says so), take its time for a carrier-less
// link and its probe verdicts for links that still have carrier; a killed watcher's files say nothing.
func TestCurrent(t *testing.T) {
	dir := t.TempDir()
	now := t0.Add(time.Hour)
	links := carrier(hostLinks(), "eth0", false)
	f := File{Links: map[string]plan.Down{
		"eth0": {State: plan.DownNoCarrier, Since: t0},
		"eth1": {State: plan.DownProbeFailed, Since: t0.Add(time.Second)},
	}, Gateways: []GatewayDown{{Link: "eth1", Gateway: ip("10.0.1.20"), State: plan.DownProbeFailed, Since: t0}}}
	if err := Save(dir, f); err != nil {
		t.Fatal(err)
	}

	// no watcher: ifupdown ignores carrier, and the file is stale
	if h := Current(dir, links, false, now); len(h.Links) != 0 || len(h.Gateways) != 0 {
		t.Errorf("no watcher: %+v", h)
	}
	// networkd counts carrier itself
	if h := Current(dir, links, true, now); h.Links["eth0"].State != plan.DownNoCarrier || !h.Links["eth0"].Since.Equal(now) || len(h.Gateways) != 0 {
		t.Errorf("networkd without watcher: %+v", h)
	}
	// a live watcher: this test process, by its own name
	b, _ := os.ReadFile("/proc/self/comm")
	defer func(c string) { watcherComm = c }(watcherComm)
	watcherComm = strings.TrimSpace(string(b))
	release, err := claimAs(dir, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !WatcherRunning(dir) {
		t.Fatal("watcher not seen")
	}
	h := Current(dir, links, false, now)
	if h.Links["eth0"] != (plan.Down{State: plan.DownNoCarrier, Since: t0}) || h.Links["eth1"].State != plan.DownProbeFailed || len(h.Gateways) != 1 {
		t.Errorf("with a watcher: %+v", h)
	}
	// a verdict about a link that has no carrier now is the carrier's business
	if h := Current(dir, carrier(links, "eth1", false), false, now); h.Links["eth1"].State != plan.DownNoCarrier || len(h.Gateways) != 0 {
		t.Errorf("eth1 without carrier: %+v", h)
	}
	release()
	// a dead watcher's pid, and a pid that a program not called linkagg holds now
	for _, pid := range []int{deadPID(t), 1} {
		if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if WatcherRunning(dir) {
			t.Errorf("pid %d counts as a live watcher", pid)
		}
	}
}

func claimAs(dir string, pid int) (func(), error) {
	if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return nil, err
	}
	return func() { os.Remove(filepath.Join(dir, PIDFile)) }, nil
}

// deadPID is a pid no process has.
func deadPID(t *testing.T) int {
	for pid := 4000000; pid > 3000000; pid-- {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); os.IsNotExist(err) {
			return pid
		}
	}
	t.Fatal("no free pid")
	return 0
}

// Claim refuses a second live watcher, not a stale pid file; release removes the pid file and health.json.
func TestClaim(t *testing.T) {
	dir := t.TempDir()
	b, _ := os.ReadFile("/proc/self/comm")
	defer func(c string) { watcherComm = c }(watcherComm)
	watcherComm = strings.TrimSpace(string(b))
	if WatcherRunning(dir) {
		t.Fatal("no pid file, yet a watcher is said to run")
	}
	release, err := Claim(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !WatcherRunning(dir) {
		t.Error("after Claim the watcher is not seen")
	}
	if _, err := Claim(dir); err == nil {
		t.Error("a second watcher on the same run dir was allowed")
	}
	if err := Save(dir, File{}); err != nil {
		t.Fatal(err)
	}
	release()
	if WatcherRunning(dir) {
		t.Error("after release a watcher is still seen")
	}
	if _, err := os.Stat(filepath.Join(dir, HealthFile)); !os.IsNotExist(err) {
		t.Errorf("health.json left after release: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, PIDFile), []byte(strconv.Itoa(deadPID(t))+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Claim(dir); err != nil {
		t.Errorf("a stale pid file blocks a new watcher: %v", err)
	}
}
