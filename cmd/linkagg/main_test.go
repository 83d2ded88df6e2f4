package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const goodStanza = `iface tun0 inet static
    address 10.99.255.10
    netmask 255.255.255.255
    fakenet 10.99.255.0/24
    table 10000 10001
    weight 3 2
    rspec 10.99.255.10:10.99.0.10:10.99.1.10
    rspec 10.99.255.20:10.99.0.20:10.99.1.20
`

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	good := writeFile(t, "interfaces", goodStanza)
	bad := writeFile(t, "interfaces", strings.Replace(goodStanza, "weight 3 2", "weight 3 0", 1))
	fifo := filepath.Join(t.TempDir(), "pipe.toml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	unknownTOML := writeFile(t, "x.toml", "[tun1]\naddress = \"10.98.255.10\"\nfakenet = [\"10.98.255.0/24\"]\ntable = [1]\nrspec = [\"10.98.255.10:10.98.0.10\"]\ncolour = \"blue\"\n")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		out, err string
	}{
		{"no command", nil, exitUsage, "", "a command is needed"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "", `unknown command "frobnicate"`},
		{"unknown flag", []string{"--colour", "validate"}, exitUsage, "", "unknown flag: --colour"},
		{"help", []string{"--help"}, exitOK, "EXIT STATUS", ""},
		{"man", []string{"--man"}, exitOK, ".TH LINKAGG 8", ""},
		{"version", []string{"--version"}, exitOK, "linkagg ", ""},
		{"validate good file", []string{"validate", good}, exitOK, "ok: 1 groups", ""},
		{"validate via --interfaces", []string{"--interfaces", good, "--confdir", t.TempDir(), "validate"}, exitOK, "group tun0: 2 paths", ""},
		{"validate bad weight", []string{"validate", bad}, exitConfig, "", bad + ":6: "},
		{"validate unknown TOML key", []string{"validate", unknownTOML}, exitConfig, "", unknownTOML + ":6"},
		{"missing file", []string{"validate", "/nonexistent/interfaces"}, exitConfig, "", "/nonexistent/interfaces"},
		{"validate a FIFO", []string{"validate", fifo}, exitConfig, "", fifo + ": file " + fifo + " is a named pipe (FIFO): expected a regular file"},
		{"plan unknown group", []string{"--interfaces", good, "--confdir", t.TempDir(), "plan", "tun9"}, exitConfig, "", `no group "tun9"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errs, tc.err) {
				t.Errorf("linkagg %v = %d\nstdout %q\nstderr %q\nwant %d, stdout containing %q, stderr containing %q", tc.args, code, out, errs, tc.code, tc.out, tc.err)
			}
			if code == exitConfig && strings.Count(strings.TrimSpace(errs), "\n") != 0 {
				t.Errorf("a config error must be one line, got %q", errs)
			}
		})
	}
}
