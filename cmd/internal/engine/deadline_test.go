package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestSettings(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "linkagg")
	text := "# linkagg defaults\nLINKAGG_TIMEOUT=60s\nexport LINKAGG_LOCK_TIMEOUT=\"45s\"\n  OTHER='x y'\nnot a setting\n"
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var warned []string
	warn := func(f string, a ...any) { warned = append(warned, fmt.Sprintf(f, a...)) }
	got := settings(p, warn)
	if got["LINKAGG_TIMEOUT"] != "60s" || got["LINKAGG_LOCK_TIMEOUT"] != "45s" || got["OTHER"] != "x y" || len(got) != 3 || len(warned) != 0 {
		t.Errorf("settings = %q, warnings %q", got, warned)
	}
	if got := settings(filepath.Join(dir, "missing"), warn); len(got) != 0 || len(warned) != 0 {
		t.Errorf("a missing file: %q, warnings %q", got, warned)
	}
	// root acts on what it says: a file others could have written is ignored, and a FIFO never blocks
	os.Chmod(p, 0o666)
	if got := settings(p, warn); len(got) != 0 || len(warned) != 1 || !strings.Contains(warned[0], "writable by group/others") {
		t.Errorf("a world-writable file: %q, warnings %q", got, warned)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan map[string]string)
	go func() { done <- settings(fifo, warn) }()
	select {
	case got := <-done:
		if len(got) != 0 || !strings.Contains(warned[len(warned)-1], "named pipe") {
			t.Errorf("a FIFO: %q, warnings %q", got, warned)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO as the defaults file blocked")
	}
}

func TestDurationSetting(t *testing.T) {
	var errs bytes.Buffer
	e := &Engine{Log: &Logger{Tag: "test", Stderr: &errs}, defaults: map[string]string{"A": "60s", "B": "soon", "C": "0s"}}
	t.Setenv("D", "2s")
	if d := e.duration("A", time.Second); d != time.Minute {
		t.Errorf("A = %s", d)
	}
	if d := e.duration("D", time.Second); d != 2*time.Second {
		t.Errorf("D from the environment = %s", d)
	}
	if d := e.duration("missing", time.Second); d != time.Second {
		t.Errorf("missing = %s", d)
	}
	for _, k := range []string{"B", "C"} {
		errs.Reset()
		if d := e.duration(k, 20*time.Second); d != 20*time.Second || !strings.Contains(errs.String(), "expected a positive duration like 60s; using 20s") {
			t.Errorf("%s = %s, stderr %q", k, d, errs.String())
		}
	}
}

func TestWatchdog(t *testing.T) {
	codes := make(chan int, 1)
	exit = func(code int) { codes <- code }
	defer func() { exit = os.Exit }()
	var errs bytes.Buffer
	e := &Engine{Log: &Logger{Tag: "linkagg-ifupdown", Stderr: &errs}, Timeout: 50 * time.Millisecond}
	e.Apply.RunDir = t.TempDir()

	// disarmed in time: nothing happens
	stop := e.Watchdog("tun0 inet pre-up: ", func() int { return 1 })
	stop()
	time.Sleep(100 * time.Millisecond)
	if len(codes) != 0 || errs.Len() != 0 {
		t.Fatalf("a stopped watchdog fired: %q", errs.String())
	}

	e.doing("applying tun0")
	t0 := time.Now()
	e.Watchdog("tun0 inet post-up: ", func() int { return 7 })
	select {
	case code := <-codes:
		if code != 7 {
			t.Errorf("exit status %d, want 7", code)
		}
		if d := time.Since(t0); d < 50*time.Millisecond || d > 2*time.Second {
			t.Errorf("fired after %s, want 50ms", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watchdog did not fire")
	}
	want := "linkagg-ifupdown: tun0 inet post-up: gave up after 50ms (LINKAGG_TIMEOUT) while applying tun0: exiting"
	if s := errs.String(); strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, want) {
		t.Errorf("stderr %q\nwant one line starting %q", s, want)
	}

	// waiting for the lock: the line names who holds it
	errs.Reset()
	if err := os.WriteFile(filepath.Join(e.Apply.RunDir, "lock"), []byte("pid 812 linkagg-ifupdown\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(e.Apply.RunDir, 0o700)
	e.doing("waiting for the lock %s", filepath.Join(e.Apply.RunDir, "lock"))
	e.Watchdog("", func() int { return 3 })
	if code := <-codes; code != 3 || !strings.Contains(errs.String(), "/lock (held by pid 812 linkagg-ifupdown): exiting") {
		t.Errorf("exit %d, stderr %q", code, errs.String())
	}
}
