package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHardeningConcurrentLockDeleted: ten runs that all converge to "both groups up" (the CLI and the
// ifupdown hook), while another process deletes the lock file every few milliseconds. Right after them,
// with no apply in between, the kernel is the plan (status exit 0, a further apply makes no write); ten
// runs that all take the groups down, under the same deletions, leave the kernel as it was, sysctls too.
func TestHardeningConcurrentLockDeleted(t *testing.T) {
	h := newHD(t, "hqd", 78, 2)
	h.writeIfaces(bigGroup(h, "tun0", 77, 36200, 20) + bigGroup(h, "tun1", 76, 36300, 20))
	h.sh("for i in 0 1; do sysctl -qw net.ipv4.conf." + h.link(0) + ".rp_filter=1 net.ipv4.conf." + h.link(1) + ".rp_filter=1; done")
	before := h.snapshot()
	hook := func(env ...string) []string {
		return append([]string{"LINKAGG_INTERFACES=" + h.interfaces(), "LINKAGG_CONFDIR=" + h.confdir(),
			"LINKAGG_RUNDIR=" + h.rundir(), "ADDRFAM=inet"}, env...)
	}
	type job struct {
		args []string // linkagg arguments; nil = the hook
		env  []string
	}
	runAll := func(what string, jobs []job) {
		t.Helper()
		stop := make(chan struct{})
		var deleted atomic.Int64
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
					if os.Remove(filepath.Join(h.rundir(), "lock")) == nil {
						deleted.Add(1)
					}
				}
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		results := make([]result, len(jobs))
		var wg sync.WaitGroup
		for i, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := h.linkaggCmd(ctx, "", nil, j.args...)
				if j.args == nil {
					c = h.linkaggCmd(ctx, "", j.env)
					c.Args = []string{"ip", "netns", "exec", h.ns(), filepath.Join(binDir, "linkagg-ifupdown")}
				}
				results[i] = execResult(c)
			}()
		}
		wg.Wait()
		close(stop)
		if ctx.Err() != nil {
			t.Fatalf("%s: the concurrent runs did not end within 90 s", what)
		}
		t.Logf("%s: the lock file was deleted %d times during the runs", what, deleted.Load())
		if deleted.Load() == 0 {
			t.Fatalf("%s: the lock file was never deleted: the test proves nothing", what)
		}
		for i, r := range results {
			if r.code != 0 {
				t.Errorf("%s: job %d (%v %v) failed: %s", what, i, jobs[i].args, jobs[i].env, r)
			}
		}
	}

	runAll("up", []job{
		{args: []string{"apply"}}, {args: []string{"apply", "tun0"}}, {args: []string{"apply", "tun1"}},
		{args: []string{"apply"}}, {args: []string{"apply", "tun0", "tun1"}},
		{env: hook("IFACE="+h.link(0), "PHASE=post-up")}, {env: hook("IFACE="+h.link(1), "PHASE=post-up")},
		{env: hook("IFACE=tun0", "PHASE=post-up", "IF_TABLE=36200 36201")},
		{env: hook("IFACE=tun1", "PHASE=post-up", "IF_TABLE=36300 36301")},
		{args: []string{"apply"}},
	})
	if st := h.linkagg("status"); st.code != 0 || !strings.Contains(st.stdout, "state: converged") {
		t.Fatalf("right after the concurrent runs the kernel is not the plan: %s", st)
	}
	again := h.mustLinkagg("-v", "apply")
	for _, g := range []string{"tun0", "tun1"} {
		if !strings.Contains(again.stderr, g+": up, 2 of 2 paths active, 0 kernel writes") {
			t.Errorf("%s: an apply after the concurrent runs still wrote:\n%s", g, again.stderr)
		}
	}

	runAll("down", []job{
		{args: []string{"down"}}, {args: []string{"down", "tun0"}}, {args: []string{"down", "tun1"}},
		{args: []string{"down"}}, {args: []string{"down", "tun0", "tun1"}},
		{env: hook("IFACE=tun0", "PHASE=post-down", "IF_TABLE=36200 36201")},
		{env: hook("IFACE=tun1", "PHASE=post-down", "IF_TABLE=36300 36301")},
		{env: hook("IFACE=tun0", "PHASE=pre-down", "IF_TABLE=36200 36201")},
		{args: []string{"down"}}, {args: []string{"down"}},
	})
	sameKernel(t, "after the concurrent downs", before, h.snapshot())
}

// TestHardeningStanzaRemoved: a group whose stanza is removed (or renamed) while up is listed by status
// as linkagg's but unconfigured (exit 4), `linkagg down tun0` still takes it down, and `linkagg apply`
// removes what is left of any unconfigured group; the kernel ends as it was.
func TestHardeningStanzaRemoved(t *testing.T) {
	h := newHD(t, "hsr", 75, 2)
	h.sh("sysctl -qw net.ipv4.conf." + h.link(0) + ".rp_filter=1")
	before := h.snapshot()
	group := func(tun string, table int) string {
		g := strings.ReplaceAll(strings.ReplaceAll(hdBase(h), "tun0", tun), "31000 31001", strconv.Itoa(table)+" "+strconv.Itoa(table+1))
		if tun == "tun7" { // beside tun0: a fakenet and VIPs of its own (two groups may not share them)
			g = strings.ReplaceAll(g, "10.96.255.", "10.94.255.")
		}
		return g
	}
	h.writeIfaces(group("tun0", 36400) + "\n" + group("tun7", 36500))
	h.mustLinkagg("apply", "tun0")
	h.writeIfaces(group("tun7", 36500)) // tun0's stanza removed while up
	st := h.linkagg("status", "tun7")
	if st.code != 0 {
		t.Errorf("status of the configured group alone: %s", st)
	}
	st = h.linkagg("status")
	if st.code != 4 || !regexp.MustCompile(`(?m)^  group tun0: footprint in `).MatchString(st.stdout) {
		t.Errorf("status does not list the unconfigured group with exit 4: %s", st)
	}
	if r := h.linkagg("down", "tun0"); r.code != 0 {
		t.Errorf("down of the unconfigured tun0: %s", r)
	}
	sameKernel(t, "down of an unconfigured group", before, h.snapshot())
	if r := h.linkagg("down", "tun9"); r.code != 1 || !strings.Contains(r.stderr, `no group "tun9" in the configuration, and nothing of it`) {
		t.Errorf("down of a group nobody knows: %s", r)
	}

	// renamed: the stanza tun0 becomes tun8 (same tables) while up; `apply` brings tun8 up and removes tun0
	h.writeIfaces(group("tun0", 36400))
	h.mustLinkagg("apply")
	h.writeIfaces(group("tun8", 36400))
	if r := h.linkagg("apply"); r.code != 0 {
		t.Fatalf("apply after the rename: %s", r)
	}
	if h.sh("ip link show tun0 2>/dev/null || true") != "" {
		t.Errorf("tun0 still exists after the rename to tun8")
	}
	if st := h.linkagg("status"); st.code != 0 {
		t.Errorf("status after the rename: %s", st)
	}
	h.mustLinkagg("down")
	sameKernel(t, "after the rename and down", before, h.snapshot())
}

// TestHardeningForeignRuleInOurTable: a rule added by hand inside our nft table does not make `down` exit 0
// while leaving our table: the table goes whole.
func TestHardeningForeignRuleInOurTable(t *testing.T) {
	h := newHD(t, "hfr", 74, 2)
	before := h.snapshot()
	h.writeIfaces(hdBase(h))
	h.mustLinkagg("apply")
	h.sh("nft add rule ip linkagg_tun0 route meta l4proto udp counter")
	if r := h.linkagg("down"); r.code != 0 {
		t.Fatalf("down: %s", r)
	}
	if out := h.sh("nft list tables"); strings.Contains(out, "linkagg_tun0") {
		t.Errorf("our table is still there after down:\n%s", out)
	}
	sameKernel(t, "down with a foreign rule in our table", before, h.snapshot())
}

// TestHardeningRunDirFull: with /run full, apply fails with one line, exit 3, and changes nothing.
func TestHardeningRunDirFull(t *testing.T) {
	h := newHD(t, "hrf", 73, 2)
	h.writeIfaces(hdBase(h))
	before := h.snapshot()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fill := "mount -t tmpfs -o size=64k,mode=0700 tmpfs " + h.rundir() + " && (dd if=/dev/zero of=" + h.rundir() + "/fill bs=4k 2>/dev/null; true)"
	r := execResult(h.linkaggCmd(ctx, fill, nil, "apply"))
	checkOneLine(t, r, 3, `^linkagg: \S+/interfaces:1: tun0: apply tun0: saving the footprint: .*no space left on device \(nothing was written\)$`)
	sameKernel(t, "apply with /run full", before, h.snapshot())
}

// TestHardeningSaveFails: "exit 3 = undone" holds when saving the state fails, with a real full file
// system, not an injected error: the run dir is a tmpfs with room for N files (nr_inodes), N from 1 up
// until the apply succeeds, so that each state write of the run in turn finds the file system full: the
// footprint written ahead, the marker of the TUN being created, the sysctl claims written ahead of the
// first sysctl write (after the TUN, VIP and link writes), the footprint after the last one. Each failing
// run: exit 3, one line naming the file and saying what was undone, and the kernel as it was. (A full
// file system after the last kernel write, on the footprint, is TestSaveFailureUndoes in apply.)
func TestHardeningSaveFails(t *testing.T) {
	h := newHD(t, "lhs", 72, 2)
	h.writeIfaces(hdBase(h))
	before := ""
	line := regexp.MustCompile(`^linkagg: \S+/interfaces:1: tun0: apply tun0: (.*?): (?:writing|open) \S+: .*no space left on device \((nothing was written|all (\d+) writes undone)\)$`)
	sysctls := "sysctl -qw net.ipv4.conf." + h.link(0) + ".rp_filter=1 net.ipv4.conf." + h.link(1) + ".rp_filter=0"
	for i := range 2 {
		sysctls += fmt.Sprintf(" net.ipv4.conf.%[1]s.arp_ignore=0 net.ipv4.conf.%[1]s.arp_announce=0", h.link(i))
	}
	h.sh(sysctls)
	before = h.snapshot()
	failed := map[string]bool{} // the steps whose state write failed after kernel writes
	for n := 1; ; n++ {
		if n > 12 {
			t.Fatalf("%d inodes: apply never succeeded", n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		full := fmt.Sprintf("mount -t tmpfs -o size=1m,nr_inodes=%d,mode=0700 tmpfs %s", n, h.rundir())
		r := execResult(h.linkaggCmd(ctx, full, nil, "apply"))
		cancel()
		if r.code == 0 {
			t.Logf("%d inodes: apply succeeded", n)
			// its state was in the tmpfs, gone with the mount namespace: down finds the rest by the kernel's
			// tags, but the sysctls' old values were only in the state (README: they stay as we set them)
			h.mustLinkagg("down")
			h.sh(sysctls)
			sameKernel(t, "down after a run whose state is gone", before, h.snapshot())
			break
		}
		if strings.Contains(r.stderr, "opening lock") {
			continue // not even the lock fits: nothing was tried
		}
		m := line.FindStringSubmatch(strings.TrimSpace(r.stderr))
		if r.code != 3 || m == nil || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%d inodes: want exit 3 and one line saying what was undone, got %s", n, r)
			continue
		}
		t.Logf("%d inodes: %s: %s", n, m[1], m[2])
		if m[3] != "" && m[3] != "0" {
			failed[m[1]] = true
		}
		sameKernel(t, fmt.Sprintf("%d inodes: %s", n, m[1]), before, h.snapshot())
	}
	// a read-only run dir: nothing is tried
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := execResult(h.linkaggCmd(ctx, "mount -t tmpfs -o ro,mode=0700 tmpfs "+h.rundir(), nil, "apply"))
	checkOneLine(t, r, 3, `linkagg: opening lock: open \S+/lock: read-only file system$`)
	sameKernel(t, "apply with a read-only run dir", before, h.snapshot())
	if len(failed) == 0 {
		t.Errorf("no run failed to save its state after kernel writes: the test proves nothing")
	}
	sameKernel(t, "apply and down with room", before, h.snapshot())
}
