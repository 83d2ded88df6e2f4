package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/linkagg/linkagg-hooks/parser"
)

const stanza = `iface tun0 inet static
    address 10.99.255.10/32
    fakenet 10.99.255.0/24
    table 10000 10001
    rspec 10.99.255.10:10.99.0.10:10.99.1.10
    rspec 10.99.255.20:10.99.0.20:10.99.1.20
`

// KeepLastGood (the watcher): a drop-in that stops validating is logged once, with its file:line, and the
// last configuration that validated stays; fixing it is logged and read; ConfigChanged says yes only for
// a real change. Without KeepLastGood (hooks, CLI) a bad file is an error, as always.
func TestConfigKeepLastGood(t *testing.T) {
	dir := t.TempDir()
	ifaces := filepath.Join(dir, "interfaces")
	confdir := filepath.Join(dir, "linkagg")
	if err := os.Mkdir(confdir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(ifaces, stanza)
	var log bytes.Buffer
	e := &Engine{Load: parser.LoadOptions{Interfaces: ifaces, ConfDir: confdir}, Log: &Logger{Tag: "t", Verbose: true, Stderr: &log}, KeepLastGood: true}
	plain := &Engine{Load: e.Load, Log: e.Log}

	good, err := e.Config()
	if err != nil || len(good.Groups) != 1 {
		t.Fatalf("first read: %v %v", good, err)
	}
	if e.ConfigChanged() {
		t.Error("ConfigChanged with nothing changed")
	}

	wip := filepath.Join(confdir, "wip.toml")
	write(wip, "[group\nfakenet = \n")
	for range 3 {
		c, err := e.Config()
		if err != nil || !reflect.DeepEqual(c.Groups, good.Groups) {
			t.Fatalf("with a broken drop-in: %v %v, want the last good configuration", c, err)
		}
	}
	if e.ConfigChanged() {
		t.Error("ConfigChanged while the drop-in is broken")
	}
	if n := strings.Count(log.String(), "wip.toml:2"); n != 1 {
		t.Errorf("the broken drop-in logged %d times, want once with its file:line:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), "going on with the last configuration that validated") {
		t.Errorf("log does not say what it does:\n%s", log.String())
	}
	if _, err := plain.Config(); err == nil {
		t.Error("without KeepLastGood a broken drop-in is no error")
	}

	// fixed: the same groups as before, logged, no change to converge on
	if err := os.Remove(wip); err != nil {
		t.Fatal(err)
	}
	if e.ConfigChanged() {
		t.Error("ConfigChanged after a fix that changes nothing")
	}
	if !strings.Contains(log.String(), "validates again") {
		t.Errorf("the fix is not logged:\n%s", log.String())
	}
	// a real edit: a third path's table
	write(ifaces, strings.Replace(stanza, "table 10000 10001", "table 10000 10002", 1))
	if !e.ConfigChanged() {
		t.Error("ConfigChanged says no after an edit")
	}
	if e.ConfigChanged() {
		t.Error("ConfigChanged says yes twice for one edit")
	}
}
