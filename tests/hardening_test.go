package tests

import (
	"bytes"
	"context"
	"errors"
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

// hdHost is one host namespace (PREFIX+"A") whose links PREFIX+"a"+i carry 10.NET.i.10/24 and are up,
// joined to a peer namespace PREFIX+"B" (10.NET.i.20) by tests/lab/twohost.sh. linkagg runs in it from
// the real binary with its configuration and run dir in a private temp dir, as an admin would run it.
type hdHost struct {
	t      *testing.T
	prefix string
	net    int
	links  int
	dir    string
}

func newHD(t *testing.T, prefix string, net, links int) *hdHost {
	t.Helper()
	needRoot(t)
	h := &hdHost{t: t, prefix: prefix, net: net, links: links, dir: t.TempDir()}
	rates := strings.TrimSpace(strings.Repeat("1000 ", links))
	cmd := exec.Command(filepath.Join(repoRoot, "tests/lab/twohost.sh"), "up", prefix, rates)
	cmd.Env = append(os.Environ(), fmt.Sprintf("NET=%d", net))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("twohost up: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(filepath.Join(repoRoot, "tests/lab/twohost.sh"), "down", prefix).Run() })
	// no IPv6 autoconfiguration: link-local addresses and DAD would change the snapshots by themselves
	h.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
	for _, d := range []string{"linkagg", "run"} {
		if err := os.MkdirAll(filepath.Join(h.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h *hdHost) ns() string           { return h.prefix + "A" }
func (h *hdHost) link(i int) string    { return fmt.Sprintf("%sa%d", h.prefix, i) }
func (h *hdHost) own(i int) string     { return fmt.Sprintf("10.%d.%d.10", h.net, i) }
func (h *hdHost) interfaces() string   { return filepath.Join(h.dir, "interfaces") }
func (h *hdHost) confdir() string      { return filepath.Join(h.dir, "linkagg") }
func (h *hdHost) rundir() string       { return filepath.Join(h.dir, "run") }
func (h *hdHost) gw(i, k int) string   { return fmt.Sprintf("10.%d.%d.%d", h.net, i, k) }
func (h *hdHost) writeIfaces(s string) { h.write("interfaces", s, 0o644) }

func (h *hdHost) write(name, text string, mode os.FileMode) {
	h.t.Helper()
	p := filepath.Join(h.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), mode); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		h.t.Fatal(err)
	}
}

// sh runs a shell command line in the host namespace and fails the test on error.
func (h *hdHost) sh(cmd string) string {
	h.t.Helper()
	return run(h.t, "ip", "netns", "exec", h.ns(), "sh", "-c", cmd)
}

// result is one run of a binary.
type result struct {
	code           int
	stdout, stderr string
	dur            time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%sstderr:\n%s", r.code, r.stdout, r.stderr)
}

// linkaggCmd is `linkagg` with this host's paths, in the host's namespace; wrap (a shell line taking the
// command as "$@") runs it under extra mounts.
func (h *hdHost) linkaggCmd(ctx context.Context, wrap string, env []string, args ...string) *exec.Cmd {
	argv := append([]string{filepath.Join(binDir, "linkagg"), "--interfaces", h.interfaces(), "--confdir", h.confdir(), "--run-dir", h.rundir()}, args...)
	full := []string{"netns", "exec", h.ns()}
	if wrap != "" {
		full = append(full, "sh", "-c", wrap+` && exec "$@"`, "sh")
	}
	cmd := exec.CommandContext(ctx, "ip", append(full, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

func execResult(cmd *exec.Cmd) result {
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	t0 := time.Now()
	err := cmd.Run()
	r := result{stdout: so.String(), stderr: se.String(), dur: time.Since(t0)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		r.code = -1
		r.stderr += err.Error()
	}
	return r
}

// linkagg runs the CLI (bounded by a minute: a hang is a failure, not a stuck test run).
func (h *hdHost) linkagg(args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return execResult(h.linkaggCmd(ctx, "", nil, args...))
}

func (h *hdHost) mustLinkagg(args ...string) result {
	h.t.Helper()
	r := h.linkagg(args...)
	if r.code != 0 {
		h.t.Fatalf("linkagg %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// snapshot is everything of the host's kernel state linkagg could touch, as text: rules and routes of
// both families in every table, links, addresses, the whole nft ruleset, MPTCP endpoints and the sysctls
// linkagg sets. Two equal snapshots mean nothing changed.
func (h *hdHost) snapshot() string { return kernelSnapshot(h.t, h.ns()) }

func kernelSnapshot(t *testing.T, ns string) string {
	t.Helper()
	var b strings.Builder
	in := func(args ...string) string {
		return run(t, "ip", append([]string{"netns", "exec", ns}, args...)...)
	}
	for _, c := range [][]string{
		{"ip", "-j", "-4", "rule", "show"}, {"ip", "-j", "-6", "rule", "show"},
		{"ip", "-j", "-4", "route", "show", "table", "all"}, {"ip", "-j", "-6", "route", "show", "table", "all"},
		{"ip", "-j", "link", "show"}, {"ip", "-j", "addr", "show"},
		{"nft", "list", "ruleset"}, {"ip", "mptcp", "endpoint", "show"},
	} {
		fmt.Fprintf(&b, "## %s\n%s\n", strings.Join(c, " "), in(c...))
	}
	// every interface's (and all/default) rp_filter, arp_ignore, arp_announce
	b.WriteString("## sysctls\n")
	b.WriteString(in("sh", "-c", `for f in /proc/sys/net/ipv4/conf/*/rp_filter /proc/sys/net/ipv4/conf/*/arp_ignore /proc/sys/net/ipv4/conf/*/arp_announce; do echo "$f=$(cat $f)"; done`))
	return b.String()
}

// sameKernel fails the test when two snapshots differ, showing the differing lines.
func sameKernel(t *testing.T, what, before, after string) {
	t.Helper()
	if before == after {
		return
	}
	bl, al := strings.Split(before, "\n"), strings.Split(after, "\n")
	var diff []string
	for i := 0; i < max(len(bl), len(al)); i++ {
		var x, y string
		if i < len(bl) {
			x = bl[i]
		}
		if i < len(al) {
			y = al[i]
		}
		if x != y {
			diff = append(diff, fmt.Sprintf("  - %s\n  + %s", x, y))
		}
	}
	t.Errorf("%s: the kernel changed:\n%s", what, strings.Join(diff, "\n"))
}

// hdBase is a valid 2-path group on the host's links; the corpus changes one line of it. Lines:
//
//	1 iface  2 address  3 netmask  4 fakenet  5 table  6 rspec (own)  7 rspec (peer .20)
func hdBase(h *hdHost) string {
	return fmt.Sprintf(`iface tun0 inet static
    address 10.96.255.10
    netmask 255.255.255.255
    fakenet 10.96.255.0/24
    table 31000 31001
    rspec 10.96.255.10:%s:%s
    rspec 10.96.255.20:%s:%s
`, h.own(0), h.own(1), h.gw(0, 20), h.gw(1, 20))
}

// withLines replaces line N (1-based) of text for each (N, line) pair; N past the end appends.
func withLines(text string, pairs ...any) string {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	for i := 0; i < len(pairs); i += 2 {
		n, s := pairs[i].(int), pairs[i+1].(string)
		if n > len(lines) {
			lines = append(lines, s)
		} else {
			lines[n-1] = s
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

type hdCase struct {
	name  string
	files func(h *hdHost) // writes the configuration (interfaces and/or TOML)
	setup string          // shell line run in the namespace before the snapshot: the foreign state
	wrap  string          // shell line run before linkagg in its own mount namespace (missing /dev/net/tun)
	code  int             // expected exit status
	line  string          // expected stderr line, as a regexp; DIR is the config dir
}

func ifacesCase(f func(h *hdHost) string) func(h *hdHost) {
	return func(h *hdHost) { h.writeIfaces(f(h)) }
}

func hdCases() []hdCase {
	line := func(n int, s string) func(h *hdHost) {
		return ifacesCase(func(h *hdHost) string { return withLines(hdBase(h), n, s) })
	}
	const tomlBase = "[tun0]\naddress = \"10.96.255.10\"\nfakenet = [\"10.96.255.0/24\"]\ntable = [31000, 31001]\nrspec = [\"10.96.255.10:10.95.0.10:10.95.1.10\"]\n"
	return []hdCase{
		// configuration errors: exit 1, named at file:line, before any kernel read or write
		{name: "malformed prefix", files: line(4, "    fakenet 10.96.255.0/33"), code: 1, line: `DIR/interfaces:4: .*bad prefix: expected IPv4 prefix`},
		{name: "malformed address", files: line(7, "    rspec 10.96.255.20:10.95.0.x:10.95.1.20"), code: 1, line: `DIR/interfaces:7: .*bad address "10\.95\.0\.x": expected IPv4 address`},
		{name: "VIP outside fakenet", files: line(4, "    fakenet 10.96.254.0/24"), code: 1, line: `DIR/interfaces:2: address 10\.96\.255\.10 is outside every fakenet`},
		{name: "more gateways than tables", files: line(7, "    rspec 10.96.255.20:10.95.0.20:10.95.1.20:10.95.2.20"), code: 1, line: `DIR/interfaces:7: .*has 3 gateways but table has 2 paths`},
		{name: "duplicate VIP", files: line(8, "    rspec 10.96.255.20:10.95.0.21:10.95.1.21"), code: 1, line: `DIR/interfaces:8: .*VIP 10\.96\.255\.20 already has an entry at DIR/interfaces:7`},
		{name: "own address missing from rspec", files: line(6, ""), code: 1, line: `DIR/interfaces:7: own address 10\.96\.255\.10 .*has no rspec entry`},
		{name: "reserved table 253", files: line(5, "    table 253 31001"), code: 1, line: `DIR/interfaces:5: table 253 is reserved \(default\)`},
		{name: "reserved table main", files: line(5, "    table 31000 254"), code: 1, line: `DIR/interfaces:5: table 254 is reserved \(main\)`},
		{name: "weight 0", files: line(8, "    weight 0 1"), code: 1, line: `DIR/interfaces:8: weight "0": expected a positive integer`},
		{name: "weight negative", files: line(8, "    weight 1 -3"), code: 1, line: `DIR/interfaces:8: weight "-3": expected a positive integer`},
		{name: "duplicate tables", files: line(5, "    table 31000 31000"), code: 1, line: `DIR/interfaces:5: table 31000 is listed twice`},
		{name: "MTU out of range", files: line(8, "    mtu 70000"), code: 1, line: `DIR/interfaces:8: mtu "70000": expected an integer 68\.\.65535`},
		{name: "IPv4 gateway in inet6", files: ifacesCase(func(h *hdHost) string {
			return "iface tun0 inet6 static\n    address fd96::10/128\n    fakenet fd96::/64\n    table 31000 31001\n    rspec [fd96::10]:[fd95:0::10]:[fd95:1::10]\n    rspec [fd96::20]:[fd95:0::20]:10.95.1.20\n"
		}), code: 1, line: `DIR/interfaces:6: .*bad address "10\.95\.1\.20": expected IPv6 address`},
		{name: "unknown TOML option", files: func(h *hdHost) { h.write("linkagg/a.toml", tomlBase+"weigth = [1, 1]\n", 0o644) }, code: 1, line: `DIR/linkagg/a\.toml:6 \(tun0\.weigth\): unknown key "weigth"`},
		{name: "two groups claim one table", files: ifacesCase(func(h *hdHost) string {
			return hdBase(h) + "iface tun1 inet static\n    address 10.94.255.10/32\n    fakenet 10.94.255.0/24\n    table 31002 31001\n    rspec 10.94.255.10:" + h.own(0) + ":" + h.own(1) + "\n"
		}), code: 1, line: `DIR/interfaces:11: table 31001 is also used by group tun0 at DIR/interfaces:5`},
		{name: "10 MB config file", files: ifacesCase(func(h *hdHost) string {
			return hdBase(h) + strings.Repeat("#"+strings.Repeat("x", 1023)+"\n", 10<<10)
		}), code: 1, line: `DIR/interfaces: file too large \(\d+ bytes\): expected at most 1048576`},
		{name: "non-UTF-8", files: line(8, "    mtu 15\xff00"), code: 1, line: `DIR/interfaces:8: .*invalid UTF-8`},
		{name: "world-writable file", files: func(h *hdHost) { h.write("interfaces", hdBase(h), 0o666) }, code: 1, line: `DIR/interfaces: file DIR/interfaces is writable by group/others \(mode 0666\): refusing`},
		{name: "world-writable drop-in dir", files: func(h *hdHost) {
			h.write("linkagg/a.toml", tomlBase, 0o644)
			os.Chmod(h.confdir(), 0o777)
		}, code: 1, line: `DIR/linkagg: directory DIR/linkagg is writable by group/others \(mode 0777\): refusing`},

		// the host's links make the group a black hole: exit 1 at the option's line, nothing written
		{name: "a NIC address inside the fakenet", files: line(1, "iface tun0 inet static"), setup: "ip addr add 10.96.255.77/32 dev lo",
			code: 1, line: `DIR/interfaces:4: fakenet 10\.96\.255\.0/24 overlaps 10\.96\.255\.77/32 of lo: its route via tun0 would take that subnet's traffic`},
		{name: "the VIP on another link", files: line(1, "iface tun0 inet static"), setup: "ip addr add 10.96.255.10/32 dev lo",
			code: 1, line: `DIR/interfaces:2: address 10\.96\.255\.10 \(the VIP of tun0\) is also an address of lo`},

		// conflicts with the kernel: exit 3, refused before the first write, named at the option's line
		{name: "table used by a foreign rule", files: line(1, "iface tun0 inet static"), setup: "ip rule add from 10.95.0.10 lookup 31001 pref 500",
			code: 3, line: `DIR/interfaces:5: tun0: apply tun0: table 31001 is used by a foreign ip rule \(pref 500 from 10\.95\.0\.10/32 lookup 31001, proto \d+\): expected`},
		{name: "mark overlap with a foreign nft rule", files: line(1, "iface tun0 inet static"),
			setup: `nft add table inet user && nft add chain inet user out '{ type filter hook output priority 0; }' && nft add rule inet user out meta mark set meta mark or 0x01000000`,
			code:  3, line: `DIR/interfaces:5: tun0: apply tun0: nft rule in table inet user chain out \(handle \d+\) writes packet mark bits 0x1000000 inside linkagg's fwmark-mask 0xff000000: expected`},
		{name: "mark overlap via explicit fwmark-mask", files: line(8, "    fwmark-mask 0x00ff0000"),
			setup: `nft add table ip user && nft add chain ip user pre '{ type filter hook prerouting priority 0; }' && nft add rule ip user pre meta mark set 0x00120000`,
			code:  3, line: `DIR/interfaces:8: tun0: apply tun0: nft rule in table ip user chain pre .*writes packet mark bits 0x120000 inside linkagg's fwmark-mask 0xff0000`},
		{name: "missing /dev/net/tun", files: line(1, "iface tun0 inet static"), wrap: "mount -t tmpfs none /dev/net",
			code: 3, line: `DIR/interfaces:1: tun0: apply tun0: tun: create tun device tun0: /dev/net/tun is missing .*\(all 0 writes undone\)`},
		{name: "TUN name taken by a veth", files: line(1, "iface tun0 inet static"), setup: "ip link add tun0 type veth peer name hdxv0",
			code: 3, line: `DIR/interfaces:1: tun0: apply tun0: tun: tun0 exists and is a veth, not a tun device \(all 0 writes undone\)`},
		{name: "foreign nft table with our name", files: line(1, "iface tun0 inet static"),
			setup: `nft add table ip linkagg_tun0 && nft add chain ip linkagg_tun0 route '{ type route hook output priority mangle; }' && nft add rule ip linkagg_tun0 route counter`,
			code:  3, line: `DIR/interfaces:1: tun0: apply tun0: nft table ip linkagg_tun0 exists and is not linkagg's .*: expected no table of that name`},
		{name: "empty foreign nft table with our name", files: line(1, "iface tun0 inet static"), setup: `nft add table ip linkagg_tun0`,
			code: 3, line: `DIR/interfaces:1: .*nft table ip linkagg_tun0 exists and is not linkagg's`},
		// found by the one read-only pass before the first write: no "(... undone)" at the end
		{name: "foreign route to a peer in our table", files: line(1, "iface tun0 inet static"), setup: "ip route add 10.96.255.20/32 via 10.95.1.20 table 31001",
			code: 3, line: `DIR/interfaces:6: tun0: apply tun0: route 10\.96\.255\.20/32 table 31001: a foreign route \(10\.96\.255\.20/32 via 10\.95\.1\.20 dev hdca1 table 31001, proto \d+\) has the same destination: expected none \(remove it, or change the configuration\)$`},
		{name: "foreign route to the fakenet", files: line(1, "iface tun0 inet static"), setup: "ip route add 10.96.255.0/24 via 10.95.0.1",
			code: 3, line: `DIR/interfaces:4: tun0: apply tun0: route 10\.96\.255\.0/24 table main: a foreign route .* has the same destination: expected none \(remove it, or change the configuration\)$`},
		{name: "foreign MPTCP endpoint on a path address", files: line(8, "    mode mptcp"), setup: "ip mptcp endpoint add 10.95.1.10 id 7 dev hdca1",
			code: 3, line: `DIR/interfaces:6: tun0: apply tun0: path 2: address 10\.95\.1\.10 already has an MPTCP endpoint of other software \(10\.95\.1\.10 id 7 .*\): expected none \(remove it, or give this path mptcp-flags off\)$`},

		// what would black-hole traffic is refused at validate, before any kernel read or write
		{name: "fakenet default route", files: line(4, "    fakenet 0.0.0.0/0"), code: 1, line: `DIR/interfaces:4: fakenet "0\.0\.0\.0/0": the default route: expected a prefix of /8 or longer`},
		{name: "fakenet in loopback", files: line(8, "    fakenet 127.1.0.0/16"), code: 1, line: `DIR/interfaces:8: fakenet "127\.1\.0\.0/16": overlaps the loopback range 127\.0\.0\.0/8`},
		{name: "gateway is our own address", files: line(7, "    rspec 10.96.255.20:10.95.0.20:10.95.0.10"), code: 1, line: `DIR/interfaces:7: rspec entry for 10\.96\.255\.20: gateway 10\.95\.0\.10 of path 2 is this host's own address on path 1`},
		{name: "gateway in the fakenet", files: line(7, "    rspec 10.96.255.20:10.96.255.1:10.95.1.20"), code: 1, line: `DIR/interfaces:7: rspec entry for 10\.96\.255\.20: gateway 10\.96\.255\.1 of path 1 is inside fakenet 10\.96\.255\.0/24`},
		{name: "gateway link-local", files: line(7, "    rspec 10.96.255.20:169.254.0.20:10.95.1.20"), code: 1, line: `DIR/interfaces:7: .*gateway 169\.254\.0\.20 of path 1 is link-local`},
		{name: "VIP is a path address", files: line(6, "    rspec 10.96.255.10:10.96.255.10:10.95.1.10"), code: 1, line: `DIR/interfaces:6: own address 10\.96\.255\.10 of path 1 is this group's VIP`},
		{name: "fakenets of two groups overlap", files: ifacesCase(func(h *hdHost) string {
			return hdBase(h) + "iface tun1 inet static\n    address 10.96.0.10/32\n    fakenet 10.96.0.0/16\n    table 31002 31003\n    rspec 10.96.0.10:" + h.own(0) + ":" + h.own(1) + "\n"
		}), code: 1, line: `DIR/interfaces:10: fakenet 10\.96\.0\.0/16 overlaps fakenet 10\.96\.255\.0/24 of group tun0 \(at DIR/interfaces:4\)`},
		{name: "VIP in two groups", files: ifacesCase(func(h *hdHost) string {
			return hdBase(h) + "iface tun1 inet static\n    address 10.96.255.20/32\n    fakenet 10.96.255.0/24\n    table 31002 31003\n    rspec 10.96.255.20:" + h.own(0) + "\n"
		}), code: 1, line: `DIR/interfaces:9: address 10\.96\.255\.20 is also the VIP of peer 10\.96\.255\.20 of group tun0 \(at DIR/interfaces:7\)`},
		{name: "rule-priority 1 in mode hybrid", files: line(8, "    mode hybrid\n    rule-priority 1"), code: 1, line: `DIR/interfaces:9: rule-priority 1: expected 2\.\.32764 in mode hybrid`},
		{name: "rule-priority 32764 in mode mptcp", files: line(8, "    mode mptcp\n    rule-priority 32764"), code: 1, line: `DIR/interfaces:9: rule-priority 32764: expected 1\.\.32763 in mode mptcp`},
		{name: "weights beyond one nftables transaction", files: line(8, "    weight 1000 999"), code: 1, line: `DIR/interfaces:8: weights reduce to a sequence of 1999 entries; at most 1024 fit in one nftables transaction \(1 fakenet, 2 paths, 1 peer\)`},
		{name: "TOML weights beyond one nftables transaction", files: func(h *hdHost) { h.write("linkagg/a.toml", tomlBase+"weight = [1000, 999]\n", 0o644) }, code: 1, line: `DIR/linkagg/a\.toml:6 \(tun0\.weight\): weights reduce to a sequence of 1999 entries`},

		// files root must not act on, and files that would hang a read
		{name: "config file of another user", files: func(h *hdHost) { h.write("interfaces", hdBase(h), 0o644); os.Chown(h.interfaces(), 4321, 4321) }, code: 1, line: `DIR/interfaces: file DIR/interfaces is owned by uid 4321: expected root: refusing`},
		{name: "symlink to a file of another user", files: func(h *hdHost) {
			h.write("elsewhere/interfaces", hdBase(h), 0o644)
			os.Chown(filepath.Join(h.dir, "elsewhere/interfaces"), 4321, 4321)
			os.Remove(h.interfaces())
			os.Symlink(filepath.Join(h.dir, "elsewhere/interfaces"), h.interfaces())
		}, code: 1, line: `DIR/interfaces: file DIR/interfaces \(symlink to DIR/elsewhere/interfaces\) is owned by uid 4321`},
		{name: "FIFO named .toml", files: func(h *hdHost) { syscall.Mkfifo(filepath.Join(h.confdir(), "a.toml"), 0o644) }, code: 1, line: `DIR/linkagg/a\.toml: file DIR/linkagg/a\.toml is a named pipe \(FIFO\): expected a regular file`},
		{name: "FIFO as the interfaces file", files: func(h *hdHost) { os.Remove(h.interfaces()); syscall.Mkfifo(h.interfaces(), 0o644) }, code: 1, line: `DIR/interfaces: file DIR/interfaces is a named pipe \(FIFO\): expected a regular file`},
	}
}

// TestHardeningBadInputCLI drives every case through the real `linkagg apply` in a fresh namespace with two
// addressed links: a non-zero exit, exactly one stderr line naming file:line and what was expected, and a
// kernel that reads back byte for byte as before.
func TestHardeningBadInputCLI(t *testing.T) {
	h := newHD(t, "hdc", 95, 2)
	for _, tc := range hdCases() {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			// each case starts from a clean config dir, run dir and namespace (the foreign state goes)
			os.RemoveAll(h.dir)
			for _, d := range []string{"linkagg", "run"} {
				os.MkdirAll(filepath.Join(h.dir, d), 0o755)
			}
			h.writeIfaces("") // TOML cases: an empty interfaces file
			tc.files(h)
			if tc.setup != "" {
				h.sh(tc.setup)
				t.Cleanup(func() {
					exec.Command("ip", "netns", "exec", h.ns(), "sh", "-c",
						"ip rule del pref 500 2>/dev/null; ip addr flush dev lo scope global; nft flush ruleset; ip link del tun0 2>/dev/null; ip mptcp endpoint flush; "+
							"ip route flush table 31001; ip route del 10.96.255.0/24 2>/dev/null; true").Run()
				})
			}
			before := h.snapshot()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r := execResult(h.linkaggCmd(ctx, tc.wrap, nil, "apply"))
			checkOneLine(t, r, tc.code, "linkagg: "+strings.ReplaceAll(tc.line, "DIR", regexp.QuoteMeta(h.dir)))
			if tc.code == 1 { // a configuration error: `linkagg validate` says the same
				checkOneLine(t, execResult(h.linkaggCmd(ctx, tc.wrap, nil, "validate")), 1, "linkagg: "+strings.ReplaceAll(tc.line, "DIR", regexp.QuoteMeta(h.dir)))
			}
			sameKernel(t, tc.name, before, h.snapshot())
		})
	}
	h.t = t
	// the private mount of the missing-tun case stayed private
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Errorf("/dev/net/tun of the host: %v", err)
	}
}

func checkOneLine(t *testing.T, r result, code int, pattern string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit %d, want %d\n%s", r.code, code, r)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) != 1 || r.stderr == "" {
		t.Errorf("want exactly one stderr line, got %d:\n%s", len(lines), r.stderr)
	}
	if !regexp.MustCompile("^" + pattern).MatchString(lines[0]) {
		t.Errorf("stderr %q\ndoes not match %q", lines[0], pattern)
	}
}

// TestHardeningOwnAddressNowhere: a path whose own address is on no local NIC is pending, not an error.
// At boot the TUN's stanza may come up before its member NICs have addresses (ifupdown runs in file order;
// `auto` lines do not wait for each other), so refusing would break boot order; the path joins on its NIC's
// if-up. `apply` succeeds with the other path, and `status` says which path waits and why.
func TestHardeningOwnAddressNowhere(t *testing.T) {
	h := newHD(t, "hdp", 93, 2)
	h.writeIfaces(withLines(hdBase(h), 6, fmt.Sprintf("    rspec 10.96.255.10:%s:10.93.7.10", h.own(0))))
	h.mustLinkagg("apply")
	st := h.linkagg("status")
	if st.code != 0 {
		t.Errorf("status after apply: %s", st)
	}
	if !strings.Contains(st.stdout, "pending") || !strings.Contains(st.stdout, "10.93.7.10 is on no link that is up") {
		t.Errorf("status does not show the pending path and its reason:\n%s", st.stdout)
	}
	if n := strings.Count(h.sh("ip rule show"), "lookup 31"); n != 1 {
		t.Errorf("%d rules of ours, want 1 (the pending path gets none)", n)
	}
	h.mustLinkagg("down")
}

// TestHardeningIfupdownBadInput: the hook refuses a bad group at ifup's pre-up, before ifupdown itself
// configures anything: one line of ours naming /etc/network/interfaces:LINE, and an unchanged kernel. The
// conflict with a foreign rule is caught at pre-up too (apply.Precheck), not half-way through ifup.
func TestHardeningIfupdownBadInput(t *testing.T) {
	l := NewLab(t, "hdi", 100, 100)
	l.In("A", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	nics := ""
	for i := range 2 {
		nics += fmt.Sprintf("auto %s\niface %s inet static\n    address 10.92.%d.10/24\n\n", l.Link("A", i), l.Link("A", i), i)
	}
	// tun0's stanza starts at line 9
	good := "iface tun0 inet static\n    address 10.91.255.10\n    netmask 255.255.255.255\n    fakenet 10.91.255.0/24\n    table 32001 32002\n    rspec 10.91.255.10:10.92.0.10:10.92.1.10\n    rspec 10.91.255.20:10.92.0.20:10.92.1.20\n"
	for _, tc := range []struct {
		name, stanza, setup, cleanup, line string
	}{
		{"weight 0", good + "    weight 0 1\n", "", "", `/etc/network/interfaces:16: weight "0": expected a positive integer`},
		{"VIP outside fakenet", strings.Replace(good, "fakenet 10.91.255.0/24", "fakenet 10.91.254.0/24", 1), "", "", `/etc/network/interfaces:10: address 10\.91\.255\.10 is outside every fakenet`},
		{"gateway in the fakenet", strings.Replace(good, "10.91.255.20:10.92.0.20", "10.91.255.20:10.91.255.1", 1), "", "", `/etc/network/interfaces:15: rspec entry for 10\.91\.255\.20: gateway 10\.91\.255\.1 of path 1 is inside fakenet`},
		{"table used by a foreign rule", good, "ip rule add to 192.0.2.0/24 lookup 32001 pref 600", "ip rule del pref 600",
			`/etc/network/interfaces:13: tun0: apply tun0: table 32001 is used by a foreign ip rule \(pref 600 to 192\.0\.2\.0/24 lookup 32001`},
		// Precheck, the one read-only pass, finds these at pre-up, before the first write
		{"foreign route to a peer in our table", good, "ip route add 10.91.255.20/32 via 10.92.1.20 table 32002", "ip route flush table 32002",
			`/etc/network/interfaces:14: tun0: apply tun0: route 10\.91\.255\.20/32 table 32002: a foreign route \(.* proto \d+\) has the same destination: expected none \(remove it, or change the configuration\)$`},
		{"foreign MPTCP endpoint on a path address", good + "    mode mptcp\n", "ip mptcp endpoint add 10.92.0.10 id 9 dev " + l.Link("A", 0), "ip mptcp endpoint flush",
			`/etc/network/interfaces:14: tun0: apply tun0: path 1: address 10\.92\.0\.10 already has an MPTCP endpoint of other software \(10\.92\.0\.10 id 9 .*\): expected none`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.t = t
			defer func() { l.t = t }()
			l.WriteInterfaces("A", nics+tc.stanza)
			l.MustIfupdown("A", "ifup", l.Link("A", 0), l.Link("A", 1))
			if tc.setup != "" {
				l.In("A", "sh", "-c", tc.setup)
				defer l.In("A", "sh", "-c", tc.cleanup)
			}
			before := kernelSnapshot(t, l.NS("A"))
			out, err := l.Ifupdown("A", "ifup", "tun0")
			if err == nil {
				l.Ifupdown("A", "ifdown", "tun0", l.Link("A", 0), l.Link("A", 1)) // the next case starts clean
				t.Fatalf("ifup tun0 succeeded:\n%s", out)
			}
			var ours []string
			for _, s := range strings.Split(out, "\n") {
				if strings.HasPrefix(s, "linkagg-ifupdown: ") {
					ours = append(ours, s)
				}
			}
			if len(ours) != 1 || !regexp.MustCompile(`^linkagg-ifupdown: tun0 inet pre-up: `+tc.line).MatchString(ours[0]) {
				t.Errorf("want one line of ours matching %q, got:\n%s", tc.line, out)
			}
			sameKernel(t, tc.name, before, kernelSnapshot(t, l.NS("A")))
			l.MustIfupdown("A", "ifdown", l.Link("A", 0), l.Link("A", 1))
		})
	}
}
