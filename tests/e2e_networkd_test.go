package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/linkagg/linkagg-hooks/parser"
)

// ndStates are the networkd-dispatcher folders the package installs the hook into.
var ndStates = []string{"routable", "degraded", "carrier", "no-carrier", "off"}

// needNetworkd skips (fails under CI) without the real systemd-networkd, networkd-dispatcher and dbus.
func needNetworkd(t *testing.T) {
	t.Helper()
	for _, f := range []string{"/lib/systemd/systemd-networkd", "/usr/bin/networkd-dispatcher", "/usr/bin/dbus-daemon", "/usr/bin/networkctl"} {
		if _, err := os.Stat(f); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing (make deps installs systemd, networkd-dispatcher, dbus)", f)
			}
			t.Skipf("%s is missing (make deps installs systemd, networkd-dispatcher, dbus)", f)
		}
	}
}

// NdHost is one lab host run by the real systemd-networkd + networkd-dispatcher (tests/lab/networkd-netns.sh):
// CONFDIR/network holds a .network per member NIC, CONFDIR/linkagg is bound over /etc/linkagg (the TOML
// drop-ins, the only configuration on such a host), CONFDIR/dispatcher/STATE.d/50-linkagg is our hook.
type NdHost struct {
	l    *Lab
	H    string
	Conf string
}

// ndGroup is the TOML of a two-path group on 10.NET.{0,1}.0/24 for host 10 or 20, weights 3:2.
func ndGroup(net, host int) string {
	return fmt.Sprintf(`[tun0]
address = "10.%[1]d.255.%[2]d"
fakenet = ["10.%[1]d.255.0/24"]
table = [3%[1]d00, 3%[1]d01]
weight = [3, 2]
rspec = ["10.%[1]d.255.10:10.%[1]d.0.10:10.%[1]d.1.10", "10.%[1]d.255.20:10.%[1]d.0.20:10.%[1]d.1.20"]
`, net, host)
}

// StartNetworkd writes host h's networkd configuration (member NICs 10.NET.i.HOST/24), our TOML and, with
// dropin, packaging/networkd/linkagg.conf; then starts networkd and the dispatcher. They are stopped
// before the lab's namespaces go.
func (l *Lab) StartNetworkd(h string, net, host int, toml string, dropin bool) *NdHost {
	l.t.Helper()
	needNetworkd(l.t)
	n := &NdHost{l: l, H: h, Conf: filepath.Join(l.dir, "networkd-"+h)}
	for _, d := range []string{"network", "networkd.conf.d", "linkagg"} {
		must(l.t, os.MkdirAll(filepath.Join(n.Conf, d), 0o755))
	}
	for i := range l.Rates {
		must(l.t, os.WriteFile(filepath.Join(n.Conf, "network", l.Link(h, i)+".network"), fmt.Appendf(nil,
			"[Match]\nName=%s\n\n[Network]\nAddress=10.%d.%d.%d/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n", l.Link(h, i), net, i, host), 0o644))
	}
	if dropin {
		b, err := os.ReadFile(filepath.Join(repoRoot, "packaging/networkd/linkagg.conf"))
		must(l.t, err)
		must(l.t, os.WriteFile(filepath.Join(n.Conf, "networkd.conf.d", "linkagg.conf"), b, 0o644))
	}
	must(l.t, os.WriteFile(filepath.Join(n.Conf, "linkagg", "tun0.toml"), []byte(toml), 0o644))
	n.InstallHook()
	ns := l.NS(h)
	// the daemons it starts inherit its stdout: a pipe would never reach EOF, so the output goes to a file
	logf, err := os.Create(filepath.Join(l.dir, "networkd-start-"+h+".log"))
	must(l.t, err)
	defer logf.Close()
	start := n.lab("start", ns, n.Conf)
	start.Stdout, start.Stderr = logf, logf
	err = start.Run()
	l.t.Cleanup(func() {
		if l.t.Failed() {
			b, _ := os.ReadFile(filepath.Join(n.state(), ns, "dispatcher.log"))
			l.t.Logf("dispatcher log of %s (last 3000 bytes):\n%s", ns, tail(string(b), 3000))
			l.t.Logf("dispatcher process of %s: %s", ns, n.daemonState("dispatcher"))
			b, _ = os.ReadFile(filepath.Join(n.state(), ns, "networkd.log"))
			l.t.Logf("networkd log of %s (last 2000 bytes):\n%s", ns, tail(string(b), 2000))
			if out, err := n.lab("exec", ns, "networkctl", "list", "--no-pager").CombinedOutput(); err == nil {
				l.t.Logf("networkctl list in %s now:\n%s", ns, out)
			}
		}
		n.lab("stop", ns).Run()
	})
	if err != nil {
		out, _ := os.ReadFile(logf.Name())
		l.t.Fatalf("starting networkd in %s: %v\n%s", ns, err, out)
	}
	return n
}

// daemonState says whether the lab's daemon (dispatcher, networkd) is alive, where it waits and which
// children it has (a hook or a networkctl it waits for): what a test that saw no event needs to know.
func (n *NdHost) daemonState(name string) string {
	b, err := os.ReadFile(filepath.Join(n.state(), n.l.NS(n.H), name+".pid"))
	if err != nil {
		return "no pid file: " + err.Error()
	}
	pid := strings.TrimSpace(string(b))
	wchan, err := os.ReadFile("/proc/" + pid + "/wchan")
	if err != nil {
		return "pid " + pid + " is gone"
	}
	out := fmt.Sprintf("pid %s alive, waiting in %q", pid, wchan)
	kids, _ := os.ReadFile("/proc/" + pid + "/task/" + pid + "/children")
	for _, k := range strings.Fields(string(kids)) {
		cmd, _ := os.ReadFile("/proc/" + k + "/cmdline")
		out += fmt.Sprintf("; child %s: %s", k, strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " "))
	}
	return out
}

// state is where tests/lab/networkd-netns.sh keeps this lab's pids and daemon logs: the lab's own folder.
func (n *NdHost) state() string { return filepath.Join(n.l.dir, "networkd-state") }

// lab is tests/lab/networkd-netns.sh with ARGS, keeping its state in n.state().
func (n *NdHost) lab(args ...string) *exec.Cmd {
	c := exec.Command(filepath.Join(repoRoot, "tests/lab/networkd-netns.sh"), args...)
	c.Env = append(os.Environ(), "NETWORKD_NETNS_STATE="+n.state())
	return c
}

// InstallHook links the hook into every state folder, as the package does; RemoveHook takes it out, so a
// test can see what networkd alone does to our state.
func (n *NdHost) InstallHook() {
	for _, s := range ndStates {
		d := filepath.Join(n.Conf, "dispatcher", s+".d")
		must(n.l.t, os.MkdirAll(d, 0o755))
		os.Remove(filepath.Join(d, "50-linkagg"))
		must(n.l.t, os.Symlink(filepath.Join(binDir, "linkagg-networkd"), filepath.Join(d, "50-linkagg")))
	}
}

func (n *NdHost) RemoveHook() {
	for _, s := range ndStates {
		must(n.l.t, os.Remove(filepath.Join(n.Conf, "dispatcher", s+".d", "50-linkagg")))
	}
}

// Networkctl runs networkctl against this host's networkd.
func (n *NdHost) Networkctl(args ...string) string {
	n.l.t.Helper()
	return runCmd(n.l.t, n.lab(append([]string{"exec", n.l.NS(n.H), "networkctl"}, args...)...))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Eventually polls cond every 50 ms up to d and returns how long it took, or fails with what.
func (l *Lab) Eventually(d time.Duration, what string, cond func() bool) time.Duration {
	l.t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.t.Fatalf("after %s: %s", d, what)
	return 0
}

// ourCounts reads the number of our rules and routes in host h and whether our nft table is there.
func (l *Lab) ourCounts(h string) (rules, routes int, nft bool) {
	k := l.Kernel(h)
	ru, ro := k.Ours()
	return len(ru), len(ro), strings.Contains(k.Nft, "table ip linkagg_tun0")
}

const seq32 = "numgen inc mod 5 vmap { 0 : goto mark_"

// TestE2ENetworkd: two hosts whose member NICs are managed by the real systemd-networkd, with the
// package's networkd.conf.d drop-in; the aggregate comes up from /etc/linkagg/tun0.toml through
// dispatcher events alone, one flow puts bytes on both links 3:2, `networkctl reload` and `reconfigure`
// do not remove our rules (reconfigure removes the link's routes, and the hook puts them back on the
// next routable event), and taking the TUN down leaves nothing of ours.
func TestE2ENetworkd(t *testing.T) {
	l := NewLab(t, "nd", 300, 200)
	var hosts []*NdHost
	for _, h := range []struct {
		name string
		host int
	}{{"A", 10}, {"B", 20}} {
		hosts = append(hosts, l.StartNetworkd(h.name, 96, h.host, ndGroup(96, h.host), true))
	}
	a := hosts[0]
	rp := "net/ipv4/conf/" + l.Link("A", 0) + "/rp_filter"
	for _, h := range []string{"A", "B"} {
		l.Eventually(15*time.Second, "the aggregate did not come up from the TOML drop-in in "+l.NS(h), func() bool {
			ru, ro, _ := l.ourCounts(h)
			// 2 rules; routes: fakenet in main + one peer route per table
			return ru == 2 && ro == 3 && strings.Contains(l.Kernel(h).Nft, seq32)
		})
	}
	if !strings.Contains(l.In("A", "ip", "-d", "link", "show", "tun0"), "alias linkagg") {
		t.Error("tun0 should have been created by the hook (alias linkagg)")
	}

	tx0 := l.TxBytes("A")
	mbit := l.Iperf("10.96.255.20", 4)
	tx1 := l.TxBytes("A")
	checkShares(t, tx0, tx1, []float64{3, 2})
	t.Logf("one flow over 300+200 Mbit/s (networkd host): %.1f Mbit/s", mbit)

	// networkd alone, without our hook re-applying anything: the drop-in keeps rules and routes on reload,
	// and the rules on reconfigure
	a.RemoveHook()
	a.Networkctl("reload")
	time.Sleep(2 * time.Second)
	if ru, ro, nft := l.ourCounts("A"); ru != 2 || ro != 3 || !nft {
		t.Errorf("with the drop-in, networkctl reload changed our state: %d rules (want 2), %d routes (want 3), nft %v", ru, ro, nft)
	}
	a.Networkctl("reconfigure", l.Link("A", 0), l.Link("A", 1))
	l.Eventually(10*time.Second, "reconfigure did not finish", func() bool {
		return strings.Count(a.Networkctl("list"), "configured") >= 2
	})
	time.Sleep(time.Second)
	ru, ro, _ := l.ourCounts("A")
	if ru != 2 {
		t.Errorf("with the drop-in, networkctl reconfigure removed our rules: %d left, want 2", ru)
	}
	t.Logf("without the hook, reconfigure left %d of our 3 routes (networkd removes routes through the link it reconfigures)", ro)
	// with the hook: the next routable event puts the routes back
	a.InstallHook()
	a.Networkctl("reconfigure", l.Link("A", 0), l.Link("A", 1))
	l.Eventually(10*time.Second, "the hook did not restore our routes after reconfigure", func() bool {
		ru, ro, nft := l.ourCounts("A")
		return ru == 2 && ro == 3 && nft
	})

	// stopping: the TUN goes down (networkctl down, ip link set down); its off event tears the group down
	for _, h := range []string{"A", "B"} {
		l.In(h, "ip", "link", "set", "tun0", "down")
	}
	for _, h := range []string{"A", "B"} {
		var left string
		l.t.Cleanup(func() {
			if t.Failed() && left != "" {
				t.Logf("%s when the test gave up waiting for its teardown: %s", l.NS(h), left)
			}
		})
		l.Eventually(10*time.Second, "residue after tun0 went down in "+l.NS(h), func() bool {
			ru, ro, nft := l.ourCounts(h)
			tun := l.Kernel(h).HasLink("tun0")
			left = fmt.Sprintf("%d rules, %d routes of ours, nft table %v, tun0 %v", ru, ro, nft, tun)
			return ru == 0 && ro == 0 && !nft && !tun
		})
		// the link was made with the namespace's default value; teardown restores it
		if v, want := l.Sysctl(h, strings.Replace(rp, l.Link("A", 0), l.Link(h, 0), 1)), l.Sysctl(h, "net/ipv4/conf/default/rp_filter"); v != want {
			t.Errorf("%s rp_filter of %s = %s after teardown, want the original %s", l.NS(h), l.Link(h, 0), v, want)
		}
	}
}

// TestE2ENetworkdNoDropin proves why the drop-in is shipped: without it, networkd deletes our fwmark rules
// (and routes) on reload/reconfigure. The hook is taken out first, so nothing of ours re-applies them.
func TestE2ENetworkdNoDropin(t *testing.T) {
	l := NewLab(t, "ndn", 100, 100)
	for i := range l.Rates {
		l.In("B", "ip", "link", "set", l.Link("B", i), "up") // carrier for A's links; B runs nothing else
	}
	a := l.StartNetworkd("A", 95, 10, ndGroup(95, 10), false)
	l.Eventually(15*time.Second, "the aggregate did not come up", func() bool {
		ru, ro, nft := l.ourCounts("A")
		return ru == 2 && ro == 3 && nft // B runs nothing, but its gateways are on A's subnets, so routes exist
	})
	a.RemoveHook()
	a.Networkctl("reload")
	a.Networkctl("reconfigure", l.Link("A", 0), l.Link("A", 1))
	l.Eventually(10*time.Second, "without the drop-in networkd kept our rules; the drop-in would be unnecessary", func() bool {
		ru, _, _ := l.ourCounts("A")
		return ru == 0
	})
}

// TestNetworkdExamples: the example configurations shipped for networkd hosts are valid, each folder on
// its own (IPv4 and IPv6 group on one TUN), with the paths and peers their comments describe.
func TestNetworkdExamples(t *testing.T) {
	for dir, want := range map[string][2]int{"two-nic": {2, 2}, "four-nic": {4, 4}} {
		cfg, err := parser.Load(parser.LoadOptions{ConfDir: filepath.Join(repoRoot, "packaging/examples/networkd", dir)})
		if err != nil {
			t.Errorf("%s: %v", dir, err)
			continue
		}
		if len(cfg.Groups) != 2 {
			t.Errorf("%s: %d groups, want an inet and an inet6 one", dir, len(cfg.Groups))
		}
		for _, g := range cfg.Groups {
			if len(g.Tables) != want[0] {
				t.Errorf("%s: group %s has %d paths, want %d", dir, g.ID(), len(g.Tables), want[0])
			}
		}
		nets, _ := filepath.Glob(filepath.Join(repoRoot, "packaging/examples/networkd", dir, "*.network"))
		if len(nets) != want[1] {
			t.Errorf("%s: %d .network files, want one per NIC (%d)", dir, len(nets), want[1])
		}
	}
}

// The networkd lab keeps pids and logs where root writes: a folder that is a symlink or that others can
// write is refused before anything is written there (a fixed name under a shared /tmp could be planted).
func TestNetworkdLabStateRefused(t *testing.T) {
	script := filepath.Join(repoRoot, "tests/lab/networkd-netns.sh")
	tmp := t.TempDir()
	victim := filepath.Join(tmp, "victim")
	must(t, os.Mkdir(victim, 0o700))
	open := filepath.Join(tmp, "open")
	must(t, os.Mkdir(open, 0o700))
	must(t, os.Chmod(open, 0o777))
	planted := filepath.Join(tmp, "planted")
	must(t, os.Symlink(victim, planted))
	// the default folder, planted as a symlink to the victim
	must(t, os.Symlink(victim, filepath.Join(tmp, fmt.Sprintf("linkagg-networkd-netns.%d", os.Getuid()))))
	for _, env := range [][]string{
		{"NETWORKD_NETNS_STATE=" + open},
		{"NETWORKD_NETNS_STATE=" + planted},
		{"NETWORKD_NETNS_STATE=", "TMPDIR=" + tmp},
	} {
		cmd := exec.Command(script, "start", "lgnone", tmp)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "is not a directory of ours that only we can write") {
			t.Errorf("%v: %v\n%s", env, err, out)
		}
		if ents, _ := os.ReadDir(victim); len(ents) != 0 {
			t.Errorf("%v: written through the symlink: %v", env, ents)
		}
	}
}
