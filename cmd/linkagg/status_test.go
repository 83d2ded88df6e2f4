package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run the CLI as its own process (LINKAGG_TEST_MAIN=1 os.Args[0] ARGS...), to send it
// signals.
func TestMain(m *testing.M) {
	if os.Getenv("LINKAGG_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// `status --watch` redraws until Ctrl-C, then ends with exit status 0 and leaves nothing half-written. The
// group here is not running (no tun0 in this namespace, nothing is changed): the frames say so.
func TestStatusWatchSIGINT(t *testing.T) {
	good := writeFile(t, "interfaces", goodStanza)
	cmd := exec.Command(os.Args[0], "--interfaces", good, "--confdir", t.TempDir(), "--run-dir", t.TempDir(), "status", "--watch", "150ms")
	cmd.Env = append(os.Environ(), "LINKAGG_TEST_MAIN=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	frames := make(chan string, 100)
	var all strings.Builder
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "linkagg status --watch 150ms") {
				frames <- sc.Text()
			}
		}
	}()
	for i := range 3 {
		select {
		case <-frames:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("frame %d did not come; stderr %q", i+1, errb.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { <-readDone; waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("status --watch ended with %v on SIGINT, want exit status 0; stderr %q", err, errb.String())
		}
	case <-time.After(3 * time.Second):
		cmd.Process.Kill()
		t.Fatal("status --watch did not end on SIGINT")
	}
	if s := all.String(); !strings.Contains(s, "tun0: down (tun0 is not up)") || strings.Contains(s, "\033[") {
		t.Errorf("frames (not a terminal: no escape sequences):\n%q", s)
	}
}

func TestStatusUsage(t *testing.T) {
	good := writeFile(t, "interfaces", goodStanza)
	base := []string{"--interfaces", good, "--confdir", t.TempDir(), "--run-dir", t.TempDir(), "status"}
	for _, extra := range [][]string{{"--json", "--prometheus"}, {"--watch", "10ms"}, {"--watch=soon"}, {"--json", "--watch"}} {
		if code, _, errs := runCLI(append(base, extra...)...); code != exitUsage {
			t.Errorf("status %v = %d (%s), want %d", extra, code, errs, exitUsage)
		}
	}
	code, out, errs := runCLI(append(base, "--json")...)
	if code != exitOK || !strings.Contains(out, `"version": 1`) || !strings.Contains(out, `"running": false`) {
		t.Errorf("status --json = %d\n%s%s", code, out, errs)
	}
	code, out, _ = runCLI(append(base, "--prometheus")...)
	if code != exitOK || !strings.Contains(out, `linkagg_group_running{group="tun0"} 0`) {
		t.Errorf("status --prometheus = %d\n%s", code, out)
	}
}
