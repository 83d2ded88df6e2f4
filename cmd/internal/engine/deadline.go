package engine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/linkagg/linkagg-hooks/apply"
	"github.com/linkagg/linkagg-hooks/parser"
)

// DefaultTimeout bounds one hook run or CLI write command: at boot `ifup -a` runs the hook for every
// interface, one after another, and none of them may hang it.
const DefaultTimeout = 20 * time.Second

// DefaultsFile holds settings for every entry point: ifupdown gives its hooks no environment but its own,
// so the hooks read LINKAGG_TIMEOUT and LINKAGG_LOCK_TIMEOUT there too (the environment wins).
const DefaultsFile = "/etc/default/linkagg"

// settings are the NAME=VALUE lines of the defaults file (shell syntax as far as `export`, comments and
// quotes go; nothing is expanded). A file that is not a root-owned regular file of ours is ignored with a
// warning: root would act on what it says.
func settings(path string, warn func(string, ...any)) map[string]string {
	out := map[string]string{}
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return out
	}
	data, err := parser.ReadConfigFile(path)
	if err != nil {
		warn("ignoring %v", err)
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		out[strings.TrimSpace(k)] = v
	}
	return out
}

// setting is the environment's value of name, else the defaults file's.
func (e *Engine) setting(name string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return e.defaults[name]
}

// duration reads a positive duration setting; a bad one is reported and def used.
func (e *Engine) duration(name string, def time.Duration) time.Duration {
	v := e.setting(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		e.Log.Errorf("%s=%q: expected a positive duration like 60s; using %s", name, v, def)
		return def
	}
	return d
}

// doing records what the event is busy with, for the watchdog's line.
func (e *Engine) doing(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	e.stage.Store(&s)
}

// exit ends the process (a variable for tests).
var exit = os.Exit

// Watchdog ends the process at the deadline (Timeout from now): one line saying what the run was doing,
// then exit status code(). Killing a run is safe at any point (apply writes its footprint ahead and the
// next run converges), and it is the only way to stop a call blocked in the kernel or a file system. stop
// disarms it; a watchdog that has fired already wins (stop then waits for the exit).
func (e *Engine) Watchdog(prefix string, code func() int) (stop func()) {
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var fired atomic.Bool
	t := time.AfterFunc(timeout, func() {
		fired.Store(true)
		what := ""
		if s := e.stage.Load(); s != nil {
			what = " while " + *s
			if strings.HasPrefix(*s, "waiting for the lock") {
				what += e.lockHolder()
			}
		}
		e.Log.Errorf("%sgave up after %s (LINKAGG_TIMEOUT)%s: exiting (a run stopped at any point leaves nothing the next one cannot find)", prefix, timeout, what)
		exit(code())
	})
	return func() {
		if !t.Stop() && fired.Load() {
			select {} // the watchdog is exiting
		}
	}
}

// lockHolder names who holds the lock, as its holder wrote it; bounded, since the watchdog must not hang.
func (e *Engine) lockHolder() string {
	ch := make(chan string, 1)
	go func() { ch <- apply.LockHolder(e.Apply.RunDir) }()
	select {
	case h := <-ch:
		if h == "" {
			return " (held by a process that did not say who it is, e.g. flock " + filepath.Join(e.Apply.RunDir, "lock") + ")"
		}
		return " (held by " + h + ")"
	case <-time.After(200 * time.Millisecond):
		return ""
	}
}
