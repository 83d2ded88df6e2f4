package apply

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// renumbered is d with its tables and marks moved to base+i (an admin editing `table` while up).
func renumbered(d plan.Desired, base int) plan.Desired {
	d.Paths = append([]plan.Path(nil), d.Paths...)
	d.Routes = append([]plan.Route(nil), d.Routes...)
	d.Rules = append([]plan.Rule(nil), d.Rules...)
	old := map[int]int{}
	oldMark := map[uint32]uint32{}
	for i := range d.Paths {
		old[d.Paths[i].Table] = base + i
		m := uint32(0x30+i) << 24
		oldMark[d.Paths[i].Mark] = m
		d.Paths[i].Table, d.Paths[i].Mark = base+i, m
	}
	for i := range d.Routes {
		if t, ok := old[d.Routes[i].Table]; ok {
			d.Routes[i].Table = t
		}
	}
	for i := range d.Rules {
		d.Rules[i].Table, d.Rules[i].Mark = old[d.Rules[i].Table], oldMark[d.Rules[i].Mark]
	}
	if d.Nft != nil {
		n := *d.Nft
		n.Sequence = nil
		for _, m := range d.Nft.Sequence {
			n.Sequence = append(n.Sequence, oldMark[m])
		}
		d.Nft = &n
	}
	return d
}

// Tables renumbered in the stanza while up: the next apply removes the old tables' rules and routes (the
// footprint still names them), status first reports them as drift, and down leaves nothing.
func TestFootprintRenumberedTables(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	pre := e.snapshot()
	d := group("a", 0, 1)
	_, err := Apply(d, e.opts())
	e.must(err)
	moved := renumbered(d, 20000)

	s, err := OpenReadOnly(e.opts())
	e.must(err)
	st, err := s.Status(moved)
	s.Close()
	e.must(err)
	if st.Converged {
		t.Fatalf("status of the renumbered plan says converged while the old tables' rules are there:\n%s", st)
	}
	if !strings.Contains(strings.Join(st.Drift, "\n"), "lookup 10000") {
		t.Errorf("drift does not name the old table 10000:\n%s", st)
	}

	_, err = Apply(moved, e.opts())
	e.must(err)
	routes, rules := ownedObjects(t)
	for _, x := range append(routes, rules...) {
		if strings.Contains(x, "table 10000") || strings.Contains(x, "table 10001") || strings.Contains(x, "lookup 1000") {
			t.Errorf("left in an old table: %s", x)
		}
	}
	if len(rules) != 2 {
		t.Errorf("want the 2 rules of the new tables, got %q", rules)
	}
	// down with a plan that no longer names the new tables either (the stanza edited again, not applied)
	_, err = Down(renumbered(d, 30000), DownOptions{Options: e.opts()})
	e.must(err)
	if post := e.snapshot(); post != pre {
		t.Fatalf("residue after down:\n%s", diffLines(pre, post))
	}
}

// A group removed from the configuration while up is taken down from its footprint alone (the plan names
// only the group and its TUN); with the footprint lost too, the kernel's tags still find everything but
// the sysctls (whose originals only the run dir knows).
func TestDownUnconfigured(t *testing.T) {
	for _, lost := range []bool{false, true} {
		name := "footprint"
		if lost {
			name = "kernel tags"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			defer e.close()
			e.veths(2)
			pre := e.snapshot()
			_, err := Apply(group("a", 0, 1), e.opts())
			e.must(err)
			if lost {
				ents, _ := os.ReadDir(e.run)
				for _, en := range ents {
					e.must(os.Remove(filepath.Join(e.run, en.Name())))
				}
			}
			res, err := Down(plan.Desired{Group: "tun0", Family: parser.Inet, TUN: plan.TUN{Name: "tun0"}}, DownOptions{Options: e.opts()})
			e.must(err)
			t.Logf("%d writes: %q", res.Writes, res.Ops)
			routes, rules := ownedObjects(t)
			if len(routes)+len(rules) > 0 {
				t.Errorf("left: %q %q", routes, rules)
			}
			post := e.snapshot()
			if lost { // the sysctls stay as we set them: nothing knows their originals
				for _, dev := range []string{"la0", "la1"} {
					e.must(writeSysctl("net/ipv4/conf/"+dev+"/rp_filter", "0"))
				}
				post = e.snapshot()
			}
			if post != pre {
				t.Fatalf("residue:\n%s", diffLines(pre, post))
			}
		})
	}
}

// A member NIC renamed while up: its rp_filter is restored under its new name (claims are by ifindex).
func TestSysctlClaimFollowsRename(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	e.must(writeSysctl("net/ipv4/conf/la1/rp_filter", "1"))
	d := group("a", 0, 1)
	_, err := Apply(d, e.opts())
	e.must(err)
	l, err := netlink.LinkByName("la1")
	e.must(err)
	e.must(netlink.LinkSetDown(l))
	e.must(netlink.LinkSetName(l, "lx1"))
	e.must(netlink.LinkSetUp(l))
	if v, _ := readSysctl("net/ipv4/conf/lx1/rp_filter"); v != "2" {
		t.Fatalf("lx1 rp_filter %q before down", v)
	}
	_, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
	if v, _ := readSysctl("net/ipv4/conf/lx1/rp_filter"); v != "1" {
		t.Errorf("renamed NIC lx1: rp_filter %q after down, want its original 1", v)
	}
}

// MPTCP: a path address changed in the configuration while up: the endpoint on the old address goes (the
// footprint records it), the new one comes.
func TestFootprintMPTCPAddressChanged(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	d := mptcpDesired(0, 1)
	_, err := Apply(d, e.opts())
	e.must(err)
	e.must(netlink.AddrAdd(mustLink(t, "la1"), mustAddr("10.99.1.11/24")))
	moved := mptcpDesired(0, 1)
	for i := range moved.MPTCP.Endpoints {
		if moved.MPTCP.Endpoints[i].Path == 1 {
			moved.MPTCP.Endpoints[i].Addr = mustParse("10.99.1.11")
		}
	}
	moved.Paths[1].Own = mustParse("10.99.1.11")
	for i := range moved.Rules {
		if moved.Rules[i].Src.Addr().String() == "10.99.1.10" {
			moved.Rules[i].Src = mustPrefix("10.99.1.11/32")
		}
	}
	_, err = Apply(moved, e.opts())
	e.must(err)
	eps, err := listEndpoints()
	e.must(err)
	for _, ep := range eps {
		if ep.Addr.String() == "10.99.1.10" {
			t.Errorf("stale endpoint on the old address: %+v", ep)
		}
	}
	if !hasEndpoint(eps, "10.99.1.11") {
		t.Errorf("no endpoint on the new address: %+v", eps)
	}
	_, err = Down(moved, DownOptions{Options: e.opts()})
	e.must(err)
	if eps, _ := listEndpoints(); len(eps) != 0 {
		t.Errorf("endpoints left: %+v", eps)
	}
}

// A saved state is checked before it is acted on: claims on sysctls we do not manage are ignored, bad
// footprint fields are dropped (a pin folder that is not this namespace's folder of the group among them), and on a TUN that is not ours a footprint alone never removes an address
// or changes the MTU.
func TestSavedStateNotTrusted(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	e.must(writeSysctl("net/ipv4/ip_forward", "1"))
	redirects, err := readSysctl("net/ipv4/conf/la0/accept_redirects")
	e.must(err)
	host, err := os.ReadFile("/proc/sys/kernel/hostname")
	e.must(err)
	e.must(os.WriteFile(filepath.Join(e.run, "sysctl.json"), []byte(`{"claims": [
  {"key": "net/ipv4/ip_forward", "orig": "0", "groups": ["tun0"]},
  {"key": "kernel/hostname", "orig": "`+strings.TrimSpace(string(host))+`", "groups": ["tun0"]},
  {"key": "net/ipv4/conf/la0/accept_redirects", "ifindex": 2, "orig": "7", "groups": ["tun0"]}
]}`), 0o600))
	// the user's TUN (no alias) with an address and an MTU of its own; a footprint that lies about them
	e.must(netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tun0", MTU: 1400}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI}))
	tun := mustLink(t, "tun0")
	e.must(netlink.LinkSetMTU(tun, 1400))
	e.must(netlink.AddrAdd(tun, mustAddr("10.99.255.10/32")))
	e.must(netlink.AddrAdd(tun, mustAddr("192.168.77.1/24")))
	e.must(os.WriteFile(filepath.Join(e.run, "footprint.tun0.json"), []byte(`{"group": "tun0", "tun": "tun0",
  "added_vip": "10.99.255.10/32", "orig_mtu": 1280, "set_mtu": 1400, "tables": [254, 0, 10001],
  "nft": {"Table": "filter", "Family": 4, "Sequence": [1]}, "endpoints": [{"id": 5, "addr": "10.77.0.1"}],
  "transparent": "/sys/fs/bpf/linkagg/1/tun0"}`), 0o600))
	var logs []string
	o := e.opts()
	o.Logf = func(f string, a ...any) { logs = append(logs, strings.TrimSpace(fmt.Sprintf(f, a...))) }
	d := group("a", 0, 1)
	d.TUN.MTU = 0 // the user's MTU is left alone by the configuration
	_, err = Apply(d, o)
	e.must(err)
	_, err = Down(d, DownOptions{Options: o})
	e.must(err)
	if v, _ := readSysctl("net/ipv4/ip_forward"); v != "1" {
		t.Errorf("ip_forward %q: a saved claim on it was acted on", v)
	}
	if v, _ := readSysctl("net/ipv4/conf/la0/accept_redirects"); v != redirects {
		t.Errorf("la0 accept_redirects %q, was %q: a saved claim on it was acted on", v, redirects)
	}
	if now, _ := os.ReadFile("/proc/sys/kernel/hostname"); string(now) != string(host) {
		t.Fatalf("hostname changed to %q", now)
	}
	tun = mustLink(t, "tun0")
	if tun.Attrs().MTU != 1400 {
		t.Errorf("the user's tun0 MTU %d, want 1400", tun.Attrs().MTU)
	}
	for _, a := range []string{"10.99.255.10/32", "192.168.77.1/24"} {
		if ok, _ := hasAddr(tun, a); !ok {
			t.Errorf("the user's address %s was removed", a)
		}
	}
	all := strings.Join(logs, "\n")
	// a pin folder of another namespace (cookie 1) is not this group's to remove
	for _, w := range []string{`"net/ipv4/ip_forward"`, `"kernel/hostname"`, "table 254", "nft table filter", "mptcp-transparent pins /sys/fs/bpf/linkagg/1/tun0"} {
		if !strings.Contains(all, w) {
			t.Errorf("no warning about %s in:\n%s", w, all)
		}
	}
}

// Symlinks planted in the run dir (as a state file, as a temporary, as the lock) are never written
// through; a FIFO as a state file fails the run at once instead of hanging it.
func TestRunDirPlants(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	victim := filepath.Join(t.TempDir(), "victim")
	e.must(os.WriteFile(victim, []byte("precious\n"), 0o644))
	for _, n := range []string{"footprint.tun0.json", "sysctl.json", "lock", ".footprint.tun0.json.tmp", "tun0.creating"} {
		e.must(os.Symlink(victim, filepath.Join(e.run, n)))
	}
	d := group("a", 0, 1)
	_, err := Apply(d, e.opts())
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("apply with a symlinked state file: %v", err)
	}
	for _, n := range []string{"footprint.tun0.json", "sysctl.json", "lock"} {
		e.must(os.Remove(filepath.Join(e.run, n)))
	}
	_, err = Apply(d, e.opts())
	e.must(err)
	_, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Fatalf("written through a symlink: %q", b)
	}

	e.must(unixMkfifo(filepath.Join(e.run, "sysctl.json")))
	done := make(chan error, 1)
	go func() { _, err := Apply(d, e.opts()); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("apply with a FIFO as sysctl.json: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("apply hangs on a FIFO in the run dir")
	}
}

// The run dir itself must be ours and closed to others; a looser 0755 dir of ours is tightened.
func TestRunDirRefused(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	cases := []struct {
		name, want string
		setup      func(p string) error
	}{
		{"other owner", "is owned by uid 1000", func(p string) error {
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			return os.Chown(p, 1000, 1000)
		}},
		{"world writable", "writable by group/others (mode 0777)", func(p string) error {
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			return os.Chmod(p, 0o777)
		}},
		{"symlink", "not a directory (a symlink?)", func(p string) error { return os.Symlink(base, p) }},
	}
	for _, c := range cases {
		p := filepath.Join(base, strings.ReplaceAll(c.name, " ", "-"))
		if err := c.setup(p); err != nil {
			t.Fatal(err)
		}
		_, err := Open(Options{RunDir: p, LockTimeout: time.Second})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	p := filepath.Join(base, "loose")
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(Options{RunDir: p})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o700 {
		t.Errorf("run dir mode %o, want 0700", fi.Mode().Perm())
	}
}

// The lock holds when its file is deleted while held (the abstract socket layer), and a run that times out
// names the holder.
func TestLockSurvivesDeletion(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	s1, err := Open(e.opts())
	e.must(err)
	e.must(os.Remove(filepath.Join(e.run, "lock")))
	o := e.opts()
	o.LockTimeout = 300 * time.Millisecond
	start := time.Now()
	_, err = Open(o)
	if err == nil || !strings.Contains(err.Error(), "another linkagg run holds") {
		t.Fatalf("second session while the first holds the lock (file deleted): %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the wait took %s", d)
	}
	s1.Close()
	s2, err := Open(e.opts())
	e.must(err)
	s2.Close()
}

// Saving the footprint or the sysctl claims fails (a full /run): the run is undone and says so.
func TestSaveFailureUndoes(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	pre := e.snapshot()
	d := group("a", 0, 1)
	s, err := Open(e.opts())
	e.must(err)
	defer s.Close()
	s.failSave = errors.New("no space left on device")
	res, err := s.Apply(d)
	if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "writes undone") {
		t.Fatalf("apply with a failing save: %v", err)
	}
	if res.Writes == 0 {
		t.Fatalf("the injected save failure came before any write")
	}
	if post := e.snapshot(); post != pre {
		t.Fatalf("not undone:\n%s", diffLines(pre, post))
	}
}

func mustLink(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustParse(s string) netip.Addr    { return netip.MustParseAddr(s) }
func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func hasEndpoint(eps []mpEndpoint, addr string) bool {
	for _, e := range eps {
		if e.Addr.String() == addr {
			return true
		}
	}
	return false
}

func unixMkfifo(p string) error { return unix.Mkfifo(p, 0o600) }
