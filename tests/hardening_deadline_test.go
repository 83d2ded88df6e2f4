package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hookCmd is one of the hook binaries (linkagg-ifupdown, linkagg-networkd) run directly in the host's
// namespace with this host's paths and the given event environment, as ifupdown or the dispatcher runs it.
func (h *hdHost) hookCmd(ctx context.Context, bin string, env ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.ns(), filepath.Join(binDir, bin))
	cmd.Env = append(os.Environ(), append([]string{"LINKAGG_INTERFACES=" + h.interfaces(), "LINKAGG_CONFDIR=" + h.confdir(),
		"LINKAGG_RUNDIR=" + h.rundir()}, env...)...)
	return cmd
}

// holdLock takes the run dir's lock from outside as an admin would (`flock /run/linkagg/lock CMD`) until
// the test ends.
func holdLock(t *testing.T, ns, lockFile string) {
	t.Helper()
	holder := exec.Command("ip", "netns", "exec", ns, "flock", lockFile, "sleep", "300")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-holder.Process.Pid, syscall.SIGKILL)
		holder.Wait()
	})
	for i := 0; ; i++ {
		if exec.Command("flock", "-n", lockFile, "true").Run() != nil {
			return // held
		}
		if i == 100 {
			t.Fatal("flock never took the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHardeningDeadline: no lock, config or kernel call may hang `ifup -a` at boot. With the lock held by
// another process and LINKAGG_LOCK_TIMEOUT (60s) beyond LINKAGG_TIMEOUT (2s), every hook and CLI write
// command ends at the deadline with one line saying what it was waiting for: exit 1 for the event of the
// group's own stanza (its ifup fails), 0 for another interface's events (its ifup goes on), 3 for the CLI.
// Nothing of the kernel changed.
func TestHardeningDeadline(t *testing.T) {
	h := newHD(t, "lhd", 61, 2)
	h.writeIfaces(hdBase(h))
	before := h.snapshot()
	if err := os.Chmod(h.rundir(), 0o700); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(h.rundir(), "lock")
	holdLock(t, h.ns(), lock)
	short := []string{"LINKAGG_TIMEOUT=2s", "LINKAGG_LOCK_TIMEOUT=60s"}
	waiting := `gave up after 2s \(LINKAGG_TIMEOUT\) while waiting for the lock ` + regexp.QuoteMeta(lock) + ` \(held by a process that did not say who it is`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cases := []struct {
		name string
		cmd  *exec.Cmd
		code int
		line string
	}{
		{"ifupdown hook, own stanza", h.hookCmd(ctx, "linkagg-ifupdown", append(short, "IFACE=tun0", "ADDRFAM=inet", "PHASE=pre-up", "MODE=start",
			"IF_FAKENET=10.96.255.0/24", "IF_TABLE=31000 31001")...), 1, `linkagg-ifupdown: tun0 inet pre-up: ` + waiting},
		{"ifupdown hook, member NIC", h.hookCmd(ctx, "linkagg-ifupdown", append(short, "IFACE="+h.link(0), "ADDRFAM=inet", "PHASE=post-up", "MODE=start")...),
			0, `linkagg-ifupdown: ` + h.link(0) + ` inet post-up: ` + waiting},
		{"networkd hook, member NIC", h.hookCmd(ctx, "linkagg-networkd", append(short, "IFACE="+h.link(1), "STATE=routable")...),
			0, `linkagg-networkd: ` + h.link(1) + ` routable: ` + waiting},
		{"linkagg apply", h.linkaggCmd(ctx, "", short, "apply"), 3, `linkagg: ` + waiting},
		{"linkagg down", h.linkaggCmd(ctx, "", short, "down"), 3, `linkagg: ` + waiting},
	}
	// all at once, as parallel hooks at boot: each ends at its own deadline
	results := make([]result, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = execResult(tc.cmd) }()
	}
	wg.Wait()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := results[i]
			checkOneLine(t, r, tc.code, tc.line)
			if r.dur < 2*time.Second || r.dur > 8*time.Second {
				t.Errorf("ended after %s, want the 2s deadline", r.dur.Round(time.Millisecond))
			}
		})
	}
	sameKernel(t, "runs that gave up", before, h.snapshot())
}

// TestHardeningDeadlineIfup: the same through the real `ifup` at boot, where ifupdown hands its hooks no
// environment of ours: LINKAGG_TIMEOUT comes from /etc/default/linkagg. `ifup tun0` fails at the deadline,
// `ifup` of a member NIC still succeeds, each bounded by the deadline per hook call.
func TestHardeningDeadlineIfup(t *testing.T) {
	l := NewLab(t, "lhw", 100, 100)
	l.In("A", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	nics := ""
	for i := range 2 {
		nics += fmt.Sprintf("iface %s inet static\n    address 10.89.%d.10/24\n\n", l.Link("A", i), i)
	}
	l.WriteInterfaces("A", nics+"iface tun0 inet static\n    address 10.88.255.10\n    netmask 255.255.255.255\n    fakenet 10.88.255.0/24\n"+
		"    table 32101 32102\n    rspec 10.88.255.10:10.89.0.10:10.89.1.10\n    rspec 10.88.255.20:10.89.0.20:10.89.1.20\n")
	l.MustIfupdown("A", "ifup", l.Link("A", 0)) // also makes the private run dir
	ifup := func(args ...string) (string, error, time.Duration) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", l.NS("A"), "sh", "-c",
			`mount -t tmpfs -o mode=0755 tmpfs /etc/default && printf 'LINKAGG_TIMEOUT=2s\nLINKAGG_LOCK_TIMEOUT=60s\n' >/etc/default/linkagg && exec "$@"`,
			"sh", filepath.Join(repoRoot, "tests/lab/ifupdown-netns.sh"), l.NS("A"), l.Etc("A")}, args...)...)
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		return string(out), err, time.Since(t0)
	}
	holdLock(t, l.NS("A"), filepath.Join(l.Etc("A"), "run-linkagg", "lock"))
	before := kernelSnapshot(t, l.NS("A"))

	out, err, dur := ifup("ifup", "tun0")
	if err == nil {
		t.Errorf("ifup tun0 succeeded with the lock held:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^linkagg-ifupdown: tun0 inet pre-up: gave up after 2s \(LINKAGG_TIMEOUT\) while waiting for the lock /run/linkagg/lock`).MatchString(out) {
		t.Errorf("ifup tun0 does not say it gave up waiting for the lock:\n%s", out)
	}
	if dur > 10*time.Second {
		t.Errorf("ifup tun0 took %s", dur.Round(time.Millisecond))
	}
	sameKernel(t, "ifup tun0 that gave up", before, kernelSnapshot(t, l.NS("A")))

	// a member NIC: its hooks give up too (pre-up and post-up, 2s each), and the NIC comes up
	out, err, dur = ifup("ifup", l.Link("A", 1))
	if err != nil {
		t.Errorf("ifup %s failed with the lock held: %v\n%s", l.Link("A", 1), err, out)
	}
	if n := strings.Count(out, "gave up after 2s"); n != 2 || dur > 15*time.Second {
		t.Errorf("ifup %s: %d hooks gave up in %s, want 2 within the deadlines:\n%s", l.Link("A", 1), n, dur.Round(time.Millisecond), out)
	}
	if a := l.In("A", "ip", "-4", "-o", "addr", "show", "dev", l.Link("A", 1)); !strings.Contains(a, "10.89.1.10/24") {
		t.Errorf("%s has no address after its ifup: %s", l.Link("A", 1), a)
	}
	t.Logf("ifup %s with the lock held: %s", l.Link("A", 1), dur.Round(time.Millisecond))
}

// TestHardeningFIFOConfig: a FIFO named *.toml in the drop-in dir fails the hook of the group's own stanza
// at once (exit 1, one line naming it) and never an unrelated interface's event; before, os.Open of it
// blocked every hook forever.
func TestHardeningFIFOConfig(t *testing.T) {
	h := newHD(t, "lhf", 62, 2)
	h.writeIfaces(hdBase(h))
	fifo := filepath.Join(h.confdir(), "zz.toml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	before := h.snapshot()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	named := regexp.QuoteMeta(fifo + ": file " + fifo + " is a named pipe (FIFO): expected a regular file")
	for _, tc := range []struct {
		name string
		cmd  *exec.Cmd
		code int
		line string
	}{
		{"own stanza", h.hookCmd(ctx, "linkagg-ifupdown", "IFACE=tun0", "ADDRFAM=inet", "PHASE=pre-up", "IF_FAKENET=10.96.255.0/24"), 1, `linkagg-ifupdown: tun0 inet pre-up: ` + named},
		{"member NIC", h.hookCmd(ctx, "linkagg-ifupdown", "IFACE="+h.link(0), "ADDRFAM=inet", "PHASE=post-up"), 0, `linkagg-ifupdown: ignoring ifupdown post-up of ` + h.link(0) + `: ` + named},
		{"validate", h.linkaggCmd(ctx, "", nil, "validate"), 1, `linkagg: ` + named},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := execResult(tc.cmd)
			checkOneLine(t, r, tc.code, tc.line)
			if r.dur > 3*time.Second {
				t.Errorf("took %s: a FIFO must fail at once", r.dur.Round(time.Millisecond))
			}
		})
	}
	sameKernel(t, "a FIFO in the drop-in dir", before, h.snapshot())
}
