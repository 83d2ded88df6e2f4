package tests

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What an admin and the host do to a running `linkagg watch` (issue 21, #1 and #5), through the real
// ifupdown on two hosts with the watcher on A:
//   - a half-written drop-in appears: the watcher logs it once and a member's carrier loss still takes
//     the path out within a second (the last configuration that validated stays in force); the fix is
//     noticed within a second;
//   - SIGHUP reloads (the process lives on and converges);
//   - its log pipe closes: the next failover still converges, the process lives on.
func TestE2EWatchHostile(t *testing.T) {
	l := NewLab(t, "ewh", 300, 200)
	foIfupdown(t, l, 83)
	w := watchCmd(l, "A", "--resync", "10m") // its stderr is a pipe of the test's, to be closed under it
	pipe, err := w.StderrPipe()
	must(t, err)
	var log syncBuffer
	copied := make(chan struct{})
	go func() { io.Copy(&log, pipe); close(copied) }()
	must(t, w.Start())
	exited := make(chan error, 1)
	go func() { <-copied; exited <- w.Wait() }()
	t.Cleanup(func() {
		w.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			w.Process.Kill()
		}
		if t.Failed() {
			t.Logf("watch in A:\n%s", tail(log.String(), 3000))
		}
	})
	l.Eventually(5*time.Second, "linkagg watch did not start", func() bool { return strings.Contains(log.String(), "watching links") })
	alive := func(when string) {
		t.Helper()
		select {
		case err := <-exited:
			t.Fatalf("%s: linkagg watch ended: %v", when, err)
		default:
		}
	}
	outage := func(when string) {
		t.Helper()
		l.In("B", "ip", "link", "set", l.Link("B", 1), "down")
		took := l.Eventually(3*time.Second, when+": path 2 did not leave A's map after its link lost carrier", func() bool { return l.mapLen("A") == 1 })
		if took > time.Second {
			t.Errorf("%s: path 2 left the map after %s, want under 1 s", when, took)
		}
		l.In("B", "ip", "link", "set", l.Link("B", 1), "up")
		l.Eventually(5*time.Second, when+": path 2 did not rejoin A's map", func() bool { return l.mapLen("A") == 5 })
	}

	// a half-written drop-in beside the interfaces file
	confdir := filepath.Join(l.Etc("A"), "no-toml")
	must(t, os.MkdirAll(confdir, 0o755))
	t.Cleanup(func() { os.RemoveAll(confdir) })
	wip := filepath.Join(confdir, "wip.toml")
	must(t, os.WriteFile(wip, []byte("[[group]]\niface = \"tun1\"\nfakenet = \n"), 0o644))
	l.Eventually(3*time.Second, "the watcher did not notice the broken drop-in", func() bool {
		return strings.Contains(log.String(), "wip.toml:")
	})
	outage("with a broken drop-in")
	if n := strings.Count(log.String(), "wip.toml:"); n != 1 {
		t.Errorf("the broken drop-in was logged %d times, want once", n)
	}
	must(t, os.Remove(wip))
	l.Eventually(3*time.Second, "the watcher did not notice the fix", func() bool { return strings.Contains(log.String(), "validates again") })

	// SIGHUP: a reload, not an end
	must(t, w.Process.Signal(syscall.SIGHUP))
	l.Eventually(3*time.Second, "no convergence after SIGHUP", func() bool { return strings.Contains(log.String(), "converged after reload") })
	alive("after SIGHUP")
	outage("after SIGHUP")

	// the log pipe closes: logging fails, converging does not
	pipe.Close()
	<-copied
	outage("with its log pipe closed")
	alive("with its log pipe closed")
}
