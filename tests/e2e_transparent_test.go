package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/apply"
)

// transparentProg is the name of mptcp-transparent's BPF program (apply/mptcpify.go).
const transparentProg = "linkagg_mptcp"

// nsCookie is the cookie of the named network namespace (SO_NETNS_COOKIE), which mptcp-transparent's
// program of that namespace carries as an immediate.
func nsCookie(t *testing.T, name string) uint64 {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // never hand a thread in another namespace back to the runtime
		}
	}()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, 71) // SO_NETNS_COOKIE
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kernelBPF lists the programs named linkagg_mptcp that the kernel holds for the namespace with this
// cookie, and the links that attach them: the kernel's own lists, not our pins.
func kernelBPF(t *testing.T, cookie uint64) (links []link.ID, progs []ebpf.ProgramID) {
	t.Helper()
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			break
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		info, err := p.Info()
		p.Close()
		if err != nil || info.Name != transparentProg {
			continue
		}
		insns, err := info.Instructions()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(insns, func(i asm.Instruction) bool { return i.OpCode.IsDWordLoad() && uint64(i.Constant) == cookie }) {
			progs = append(progs, id)
		}
	}
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		l := it.Take()
		info, err := l.Info()
		l.Close()
		if err == nil && slices.Contains(progs, info.Program) {
			links = append(links, info.ID)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return links, progs
}

// pinnedLinks are the links pinned in our folder of group in bpffs for the namespace with cookie (the link
// and a replacement a killed run may have left): what apply and down find.
func pinnedLinks(t *testing.T, bpffs string, cookie uint64, group string) []link.ID {
	t.Helper()
	var out []link.ID
	for _, n := range []string{"link", "link_new"} {
		l, err := link.LoadPinnedLink(filepath.Join(bpffs, "linkagg", fmt.Sprint(cookie), group, n), nil)
		if err != nil {
			continue
		}
		if info, err := l.Info(); err == nil {
			out = append(out, info.ID)
		}
		l.Close()
	}
	return out
}

// mountBPFFS mounts a private bpffs at dir until the test ends (unmounting it drops every pin in it).
func mountBPFFS(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mounting a bpffs at %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// EnableBPFFS gives both hosts a bpffs of their own that outlives each hook call, bound on /sys/fs/bpf by
// tests/lab/ifupdown-netns.sh (ETCDIR/bpffs) and named to the CLI by LINKAGG_BPFFS (linkaggEnv).
func (l *Lab) EnableBPFFS() {
	for _, h := range []string{"A", "B"} {
		mountBPFFS(l.t, l.bpffs(h))
	}
}

func (l *Lab) bpffs(h string) string { return filepath.Join(l.Etc(h), "bpffs") }

// linkaggEnv is the environment the CLI needs beside linkaggArgs: the host's bpffs when it has one.
func (l *Lab) linkaggEnv(h string) []string {
	if fi, err := os.Stat(l.bpffs(h)); err == nil && fi.IsDir() {
		return []string{"LINKAGG_BPFFS=" + l.bpffs(h)}
	}
	return nil
}

// linkaggRun runs the CLI in host h with its lab paths and bpffs.
func (l *Lab) linkaggRun(h string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append(append([]string{"netns", "exec", l.NS(h), filepath.Join(binDir, "linkagg")}, l.linkaggArgs(h)...), args...)...)
	cmd.Env = append(os.Environ(), l.linkaggEnv(h)...)
	return execResult(cmd)
}

// transparentStatus is mptcp_transparent of host h's group tun0 in `linkagg status --json`.
type transparentStatus struct {
	Scope    string `json:"scope"`
	Attached bool   `json:"attached"`
	Linked   bool   `json:"linked"`
	LinkID   uint32 `json:"link_id"`
}

func (l *Lab) transparentStatus(h string) (*transparentStatus, string) {
	l.t.Helper()
	r := l.linkaggRun(h, "status", "--json")
	var doc struct {
		Groups []struct {
			Group       string             `json:"group"`
			Converged   bool               `json:"converged"`
			Transparent *transparentStatus `json:"mptcp_transparent"`
		} `json:"groups"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || len(doc.Groups) == 0 {
		l.t.Fatalf("status --json in %s: %v\n%s", l.NS(h), err, r)
	}
	if !doc.Groups[0].Converged || r.code != 0 {
		l.t.Errorf("status in %s: not converged (exit %d):\n%s", l.NS(h), r.code, r.stdout)
	}
	return doc.Groups[0].Transparent, r.stdout
}

// cgroup2Mount is where the cgroup v2 hierarchy is mounted.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i := slices.Index(f, "-"); i > 0 && i+1 < len(f) && f[i+1] == "cgroup2" {
			return f[4]
		}
	}
	t.Fatal("no cgroup2 mount")
	return ""
}

// unitCgroup makes a cgroup named like a systemd unit under a slice (as systemd would: the program matches
// names) and removes it when the test ends.
func unitCgroup(t *testing.T, slice, unit string) string {
	t.Helper()
	dir := filepath.Join(cgroup2Mount(t), slice, unit)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(dir)
		os.Remove(filepath.Dir(dir))
	})
	return dir
}

// plainIperf runs one plain iperf3 flow (no mptcpize) A -> dst for secs seconds; the client runs in cgroup
// dir when it is not empty; during runs a second into the flow. It returns the received Mbit/s.
func plainIperf(l *Lab, dst string, secs int, cgroup string, during func(port string)) (float64, error) {
	l.t.Helper()
	port := fmt.Sprint(5201 + time.Now().Nanosecond()%500)
	srv := exec.Command("ip", "netns", "exec", l.NS("B"), "iperf3", "-s", "-1", "-p", port)
	if err := srv.Start(); err != nil {
		l.t.Fatal(err)
	}
	defer func() {
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			srv.Process.Kill()
			<-done
		}
	}()
	for i := 0; i < 100 && !strings.Contains(l.In("B", "ss", "-ltn"), ":"+port); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	cli := exec.Command("ip", "netns", "exec", l.NS("A"), "timeout", fmt.Sprint(secs+30), "iperf3", "-c", dst, "-p", port, "-t", fmt.Sprint(secs), "-J")
	if cgroup != "" {
		cg, err := os.Open(cgroup)
		if err != nil {
			l.t.Fatal(err)
		}
		defer cg.Close()
		cli.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	}
	var out strings.Builder
	cli.Stdout = &out
	if err := cli.Start(); err != nil {
		l.t.Fatal(err)
	}
	if during != nil {
		time.Sleep(time.Second)
		during(port)
	}
	err := cli.Wait()
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if jerr := json.Unmarshal([]byte(out.String()), &res); jerr != nil && err == nil {
		err = fmt.Errorf("iperf3 output: %v: %s", jerr, out.String())
	}
	return res.End.SumReceived.BitsPerSecond / 1e6, err
}

// sampleConns waits (up to 3 s) until host A has an established TCP connection to dst and returns the
// MPTCP subflows by connection then; with mptcp it waits for a connection with one subflow per path (the
// paths' subflows join a moment after the first).
// sampleConns samples the MPTCP connections to dst (ADDR:PORT: only this flow's, not those of an earlier
// flow still closing).
func sampleConns(l *Lab, dst string, mptcp bool) map[string][]string {
	var conns map[string][]string
	for i := 0; i < 15; i++ {
		time.Sleep(200 * time.Millisecond)
		if !strings.Contains(l.In("A", "ss", "-tnH", "state", "established", "dst", dst), dst) {
			continue
		}
		conns = subflowsByConn(l, dst)
		if !mptcp || slices.ContainsFunc(mapValues(conns), func(s []string) bool { return len(s) == len(l.Rates) }) {
			break
		}
	}
	return conns
}

func mapValues(m map[string][]string) [][]string {
	var out [][]string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// mptcpCounter reads one MPTcpExt counter of host h (/proc/net/netstat).
func mptcpCounter(l *Lab, h, name string) int64 {
	l.t.Helper()
	lines := strings.Split(l.In(h, "cat", "/proc/net/netstat"), "\n")
	for i := 0; i+1 < len(lines); i++ {
		keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(keys) > 0 && keys[0] == "MPTcpExt:" && len(vals) == len(keys) && vals[0] == "MPTcpExt:" {
			if j := slices.Index(keys, name); j > 0 {
				var v int64
				fmt.Sscan(vals[j], &v)
				return v
			}
		}
	}
	l.t.Fatalf("no MPTcpExt %s in /proc/net/netstat of %s", name, l.NS(h))
	return 0
}

// TestE2ETransparent (one VM boot for both parts): Flows, then Killed.
//
// Flows: `mode mptcp` + `mptcp-transparent` through the real ifupdown, two hosts, 4 links, on a
// kernel that runs the program (in the test VM here: hereOrInVM). With `all` on both hosts a plain iperf3
// VIP -> VIP (no mptcpize) is one MPTCP connection with one subflow per path and bytes on every link, and
// status shows the program; ping and UDP to the peer VIP work. Scoped to a unit (lgtest.slice, a cgroup
// made like systemd's), a client in the unit gets subflows, one outside stays plain TCP on one link. A peer
// that does not speak MPTCP (net.mptcp.enabled=0, mode packet) still gets a working TCP connection (the
// client falls back). ifdown -a leaves no program, link or pin in the kernel's own lists.
func TestE2ETransparent(t *testing.T) {
	if !hereOrInVM(t, "TestE2ETransparent") {
		return
	}
	t.Run("Flows", e2eTransparentFlows)
	t.Run("Killed", e2eTransparentKilled)
}

func e2eTransparentFlows(t *testing.T) {
	t0 := time.Now()
	rates := []int{30, 30, 30, 30}
	l := NewLab(t, "lt", rates...)
	l.EnableBPFFS()
	frates := []float64{30, 30, 30, 30}
	stanza := func(h string, host int, extra string) string { return mptcpStanzas(l, h, host, 4, extra) }
	l.WriteInterfaces("A", stanza("A", 10, "    mptcp-transparent all\n"))
	l.WriteInterfaces("B", stanza("B", 20, "    mptcp-transparent all\n"))
	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifup", "-a")
	}
	cA, cB := nsCookie(t, l.NS("A")), nsCookie(t, l.NS("B"))
	linksA, progsA := kernelBPF(t, cA)
	linksB, _ := kernelBPF(t, cB)
	if len(linksA) != 1 || len(progsA) != 1 || len(linksB) != 1 {
		t.Fatalf("after ifup -a: kernel links of our program for A %v (programs %v), for B %v; want one each", linksA, progsA, linksB)
	}
	if p := pinnedLinks(t, l.bpffs("A"), cA, "tun0"); !slices.Equal(p, linksA) {
		t.Errorf("A's pinned link %v is not the kernel's %v", p, linksA)
	}
	st, raw := l.transparentStatus("A")
	if st == nil || !st.Attached || st.Scope != "all" || st.LinkID != uint32(linksA[0]) {
		t.Errorf("status of A: mptcp_transparent %+v, want attached, scope all, link %d:\n%s", st, linksA[0], raw)
	}
	if txt := l.linkaggRun("A", "status"); !strings.Contains(txt.stdout, fmt.Sprintf("mptcp-transparent all: program linkagg_mptcp id %d, link id %d", progsA[0], linksA[0])) {
		t.Errorf("status text of A lacks the program:\n%s", txt)
	}
	t.Logf("ifup -a and checks: %.1fs", time.Since(t0).Seconds())

	// a plain iperf3: one subflow per path, bytes on every link
	// MPCapableSYNTX counts MP_CAPABLE SYNs a client sent, MPCapableSYNRX those a listener received: both
	// ends' sockets were MPTCP (ss -M of iproute2 6.1 lists no socket on Debian's 6.12 kernel)
	syn0, synB0 := mptcpCounter(l, "A", "MPCapableSYNTX"), mptcpCounter(l, "B", "MPCapableSYNRX")
	tx0 := l.TxBytes("A")
	var conns map[string][]string
	mbit, err := plainIperf(l, "10.97.255.20", 4, "", func(port string) { conns = sampleConns(l, "10.97.255.20:"+port, true) })
	if err != nil {
		t.Fatalf("plain iperf3: %v", err)
	}
	tx1 := l.TxBytes("A")
	syn, synB := mptcpCounter(l, "A", "MPCapableSYNTX")-syn0, mptcpCounter(l, "B", "MPCapableSYNRX")-synB0
	t.Logf("plain iperf3 over 4x%d Mbit/s with mptcp-transparent all: %.1f Mbit/s, tx %v; subflows by connection %v; MP_CAPABLE SYNs sent by A %d, received by B %d", rates[0], mbit, sub(tx1, tx0), conns, syn, synB)
	checkSubflowPerPath(t, conns, 4)
	checkMPTCPShares(t, tx0, tx1, frates)
	if syn < 2 || synB < 2 { // iperf3's control and data connections
		t.Errorf("MP_CAPABLE SYNs: %d sent by A, %d received by B; want both connections MPTCP", syn, synB)
	}

	// ping and UDP to the peer's VIP
	if out, err := exec.Command("ip", "netns", "exec", l.NS("A"), "ping", "-c", "2", "-W", "3", "10.97.255.20").CombinedOutput(); err != nil {
		t.Errorf("ping to B's VIP: %v\n%s", err, out)
	}
	if atB, atA := udpEcho(l, "10.97.255.20", 7797); atB != "10.97.255.10" || atA != "10.97.255.20" {
		t.Errorf("UDP to B's VIP: B saw %q, A's reply came from %q; want the VIPs", atB, atA)
	}
	t.Logf("phase all: %.1fs", time.Since(t0).Seconds())

	// scoped to a slice: `linkagg apply` changes the map, the link stays
	unit := unitCgroup(t, "lgtest.slice", "lgtest-iperf.service")
	l.WriteInterfaces("A", stanza("A", 10, "    mptcp-transparent lgtest.slice\n"))
	if r := l.linkaggRun("A", "-v", "apply"); r.code != 0 || !strings.Contains(r.stderr, "set mptcp-transparent scope lgtest.slice (was all)") {
		t.Fatalf("apply of the new scope: %s", r)
	}
	if links, _ := kernelBPF(t, cA); !slices.Equal(links, linksA) {
		t.Errorf("a scope change made a new link: %v, was %v", links, linksA)
	}
	if st, raw := l.transparentStatus("A"); st == nil || !st.Attached || st.Scope != "lgtest.slice" {
		t.Errorf("status after the scope change: %+v\n%s", st, raw)
	}
	mbit, err = plainIperf(l, "10.97.255.20", 4, unit, func(port string) { conns = sampleConns(l, "10.97.255.20:"+port, true) })
	if err != nil {
		t.Fatalf("iperf3 in lgtest.slice: %v", err)
	}
	t.Logf("iperf3 in lgtest.slice/lgtest-iperf.service: %.1f Mbit/s, subflows %v", mbit, conns)
	checkSubflowPerPath(t, conns, 4)
	tx0 = l.TxBytes("A")
	syn0 = mptcpCounter(l, "A", "MPCapableSYNTX")
	var plain string
	mbit, err = plainIperf(l, "10.97.255.20", 4, "", func(port string) {
		conns = sampleConns(l, "10.97.255.20:"+port, false)
		plain = l.In("A", "ss", "-tniH", "state", "established", "dst", "10.97.255.20:"+port)
	})
	tx1 = l.TxBytes("A")
	if err != nil {
		t.Fatalf("iperf3 outside the unit: %v", err)
	}
	d := sub(tx1, tx0)
	syn = mptcpCounter(l, "A", "MPCapableSYNTX") - syn0
	t.Logf("iperf3 outside the unit: %.1f Mbit/s, tx %v, MP_CAPABLE SYNs sent %d", mbit, d, syn)
	if len(conns) != 0 || syn != 0 || strings.Contains(plain, "token") || !strings.Contains(plain, "10.97.255.10") {
		t.Errorf("a process outside the unit did not stay TCP: subflows %v, MP_CAPABLE SYNs %d, connections:\n%s", conns, syn, plain)
	}
	var total uint64
	for _, v := range d {
		total += v
	}
	if total == 0 || float64(slices.Max(d)) < 0.9*float64(total) {
		t.Errorf("a plain TCP flow should ride one link (the primary path): tx %v", d)
	}
	t.Logf("phase units: %.1fs", time.Since(t0).Seconds())

	// a peer without MPTCP: B in mode packet with net.mptcp.enabled=0; A's MPTCP socket falls back
	l.MustIfupdown("B", "ifdown", "tun0")
	l.WriteInterfaces("B", strings.Replace(stanza("B", 20, ""), "mode mptcp", "mode packet", 1))
	l.In("B", "sysctl", "-qw", "net.mptcp.enabled=0")
	l.MustIfupdown("B", "ifup", "tun0")
	if links, _ := kernelBPF(t, cB); len(links) != 0 {
		t.Errorf("B in mode packet still has our program: %v", links)
	}
	fb0 := mptcpCounter(l, "A", "MPCapableFallbackSYNACK")
	mbit, err = plainIperf(l, "10.97.255.20", 3, unit, nil)
	fb1 := mptcpCounter(l, "A", "MPCapableFallbackSYNACK")
	t.Logf("MPTCP client -> a peer without MPTCP: %.1f Mbit/s, %d fallbacks to TCP", mbit, fb1-fb0)
	if err != nil || mbit <= 0 {
		t.Errorf("no working TCP connection to a peer with net.mptcp.enabled=0: %.1f Mbit/s, %v", mbit, err)
	}
	if fb1-fb0 < 1 {
		t.Errorf("MPCapableFallbackSYNACK did not grow (%d -> %d): the client was not MPTCP, or did not fall back", fb0, fb1)
	}

	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifdown", "-a")
	}
	for h, c := range map[string]uint64{"A": cA, "B": cB} {
		if links, progs := kernelBPF(t, c); len(links) != 0 || len(progs) != 0 {
			t.Errorf("%s after ifdown -a: kernel links %v, programs %v of ours", h, links, progs)
		}
		if ents, _ := os.ReadDir(l.bpffs(h)); len(ents) != 0 {
			t.Errorf("%s's bpffs after ifdown -a holds %v", h, ents)
		}
		if rules, routes := l.Kernel(h).Ours(); len(rules) != 0 || len(routes) != 0 {
			t.Errorf("%s residue after ifdown -a: rules %v routes %v", h, rules, routes)
		}
	}
	if v := l.Sysctl("A", "net/mptcp/enabled"); v != "1" {
		// the namespace started with MPTCP on (the kernel's default): restored to that
		t.Errorf("net.mptcp.enabled of A after ifdown -a: %s", v)
	}
	t.Logf("whole test: %.1fs", time.Since(t0).Seconds())
}

// ltMPTCPGroup is a mode mptcp group with `mptcp-transparent all` on hdHost h's links, peer .20.
func ltMPTCPGroup(h *hdHost) string {
	var own, peer, tables []string
	for i := range h.links {
		own, peer, tables = append(own, h.own(i)), append(peer, h.gw(i, 20)), append(tables, fmt.Sprint(36000+i))
	}
	return fmt.Sprintf("iface tun0 inet static\n    address 10.86.255.10/32\n    fakenet 10.86.255.0/24\n    table %s\n    mode mptcp\n    mptcp-transparent all\n    rspec 10.86.255.10:%s\n    rspec 10.86.255.20:%s\n",
		strings.Join(tables, " "), strings.Join(own, ":"), strings.Join(peer, ":"))
}

// Killed (TestE2ETransparent): `linkagg apply` (and now and then `down`) of a mode mptcp group with
// mptcp-transparent all, SIGKILLed at random points 16 times. After each kill every link of our program that
// the kernel holds for the namespace is pinned in the group's folder, where apply and down look (none is
// attached unfindably). One apply afterwards converges (status exit 0, a second apply writes nothing), and
// down leaves the kernel as before the loop: no program, no link, no pin, net.mptcp.enabled restored.
func e2eTransparentKilled(t *testing.T) {
	t0 := time.Now()
	h := newHD(t, "ltk", 71, 4)
	h.writeIfaces(ltMPTCPGroup(h))
	fs := filepath.Join(h.dir, "bpffs")
	mountBPFFS(t, fs)
	env := []string{"LINKAGG_BPFFS=" + fs}
	run := func(args ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return execResult(h.linkaggCmd(ctx, "", env, args...))
	}
	h.sh("sysctl -qw net.mptcp.enabled=0")
	before := h.snapshot()
	cookie := nsCookie(t, h.ns())
	// how long one apply takes here (the VM is slow; the second, warm one): kills land anywhere in it
	var span time.Duration
	for range 2 {
		t1 := time.Now()
		if r := run("apply"); r.code != 0 {
			t.Fatalf("apply: %s", r)
		}
		span = time.Since(t1)
		if r := run("down"); r.code != 0 {
			t.Fatalf("down: %s", r)
		}
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 15))
	t.Logf("seed %d; one apply takes %v", seed, span)
	killed, finished, pinned := 0, 0, 0
	for i := range 16 {
		cmd := "apply"
		if i%4 == 3 {
			cmd = "down"
		}
		c := h.linkaggCmd(context.Background(), "", env, cmd)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		// every other kill in the second half of a run, where the program is attached and pinned
		if i%2 == 0 {
			time.Sleep(time.Duration(rng.Int64N(int64(span))))
		} else {
			time.Sleep(span/2 + time.Duration(rng.Int64N(int64(span)*7/10)))
		}
		c.Process.Signal(syscall.SIGKILL)
		err := c.Wait()
		if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			killed++
		} else if err == nil {
			finished++
		} else {
			t.Errorf("iteration %d (%s) failed by itself: %v", i, cmd, err)
		}
		links, _ := kernelBPF(t, cookie)
		pins := pinnedLinks(t, fs, cookie, "tun0")
		for _, id := range links {
			if !slices.Contains(pins, id) {
				t.Fatalf("iteration %d (%s): the kernel holds link %d of our program, pinned where apply/down look: %v", i, cmd, id, pins)
			}
		}
		if len(links) > 0 {
			pinned++
		}
	}
	t.Logf("16 runs: %d killed, %d finished before the kill, %d left a link attached (all pinned in the group's folder)", killed, finished, pinned)
	if killed == 0 {
		t.Error("no run was killed: the loop tested nothing")
	}
	if r := run("apply"); r.code != 0 {
		t.Fatalf("the recovering apply: %s", r)
	}
	if r := run("status"); r.code != 0 || !strings.Contains(r.stdout, "mptcp-transparent all: program linkagg_mptcp") {
		t.Errorf("status after the recovering apply: %s", r)
	}
	if r := run("-v", "apply"); r.code != 0 || !strings.Contains(r.stderr, "4 of 4 paths active, 0 kernel writes") {
		t.Errorf("second apply after the kills was not a no-op:\n%s", r)
	}
	if links, _ := kernelBPF(t, cookie); len(links) != 1 {
		t.Errorf("after the recovering apply: links %v, want one", links)
	}
	if r := run("down"); r.code != 0 {
		t.Fatalf("down: %s", r)
	}
	sameKernel(t, "down after the kill loop", before, h.snapshot())
	if links, progs := kernelBPF(t, cookie); len(links) != 0 || len(progs) != 0 {
		t.Errorf("after down: links %v programs %v", links, progs)
	}
	if ents, _ := os.ReadDir(fs); len(ents) != 0 {
		t.Errorf("bpffs after down holds %v", ents)
	}
	if v := strings.TrimSpace(h.sh("cat /proc/sys/net/mptcp/enabled")); v != "0" {
		t.Errorf("net.mptcp.enabled after down: %s, want the old 0", v)
	}
	h.noStateLeft()
	t.Logf("whole test: %.1fs", time.Since(t0).Seconds())
}

// TestHardeningTransparentRefused runs on this machine's own kernel, through the real binaries: where
// mptcp-transparent cannot work — no bpffs, no BTF, or a kernel without the hook or refusing the program (as
// this lab's kernel refuses BPF trampolines) — `linkagg apply` exits 3 with one line naming the option's
// file:line and what is missing, and the kernel and run dir are as before (the rest of the group is not
// applied half-way); ifup fails at pre-up with the same line before anything of the group exists. `linkagg
// validate` accepts the configuration: it checks the configuration, not the kernel it may not run on.
func TestHardeningTransparentRefused(t *testing.T) {
	h := newHD(t, "ltr", 72, 2)
	h.writeIfaces(ltMPTCPGroup(h))
	kernel := transparentKernel(t)
	notBPF := t.TempDir()
	noBPFFS := apply.TransparentMissing(notBPF)
	if noBPFFS == nil {
		t.Fatalf("TransparentMissing(%s): nothing missing", notBPF)
	}
	cases := []struct {
		name, wrap string
		want       error
	}{
		{"no bpffs", "", fmt.Errorf("%s", strings.ReplaceAll(noBPFFS.Error(), notBPF, "/sys/fs/bpf"))},
		{"no BTF", "mount -t bpf bpf /sys/fs/bpf && mount -t tmpfs none /sys/kernel/btf",
			fmt.Errorf("mptcp-transparent: this kernel has no BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF=y is needed)")},
		{"this kernel", "mount -t bpf bpf /sys/fs/bpf", kernel},
	}
	if r := h.linkagg("validate"); r.code != 0 {
		t.Errorf("validate: %s", r)
	}
	h.sh("sysctl -qw net.mptcp.enabled=0")
	before := h.snapshot()
	for _, c := range cases {
		if c.want == nil {
			t.Logf("%s: this kernel runs the program (TestE2ETransparent attaches it); nothing refused", c.name)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		r := execResult(h.linkaggCmd(ctx, c.wrap, nil, "apply"))
		cancel()
		line := fmt.Sprintf("linkagg: %s:6: tun0: apply tun0: %s\n", h.interfaces(), strings.ReplaceAll(c.want.Error(), "BPFFS", "/sys/fs/bpf"))
		if r.code != 3 || r.stderr != line {
			t.Errorf("%s: got %s\nwant exit 3 and the one line\n%s", c.name, r, line)
		}
		t.Logf("%s: %s", c.name, strings.TrimSpace(r.stderr))
		sameKernel(t, c.name, before, h.snapshot())
		if ents, _ := os.ReadDir(h.rundir()); slices.ContainsFunc(ents, func(e os.DirEntry) bool { return strings.HasPrefix(e.Name(), "footprint") }) {
			t.Errorf("%s: a footprint was written: %v", c.name, ents)
		}
	}

	// pre-up of the real ifup: the TUN's stanza fails before ifupdown or we configure anything of it
	l := NewLab(t, "ltp", 100, 100)
	l.WriteInterfaces("A", mptcpStanzas(l, "A", 10, 2, "    mptcp-transparent all\n"))
	l.In("A", "sysctl", "-qw", "net.mptcp.enabled=0")
	out, err := l.Ifupdown("A", "ifup", "-a")
	want := regexp.QuoteMeta(strings.ReplaceAll(noBPFFS.Error(), notBPF, "/sys/fs/bpf"))
	if err == nil || !regexp.MustCompile(`interfaces:\d+: tun0: apply tun0: `+want).MatchString(out) {
		t.Errorf("ifup -a with mptcp-transparent and no bpffs: %v\n%s\nwant the line ...: %s", err, out, want)
	}
	t.Logf("ifup -a: %s", strings.TrimSpace(out))
	k := l.Kernel("A")
	if rules, routes := k.Ours(); len(rules) != 0 || len(routes) != 0 || k.HasLink("tun0") || strings.Contains(k.Nft, "linkagg") {
		t.Errorf("pre-up refused, yet: rules %v routes %v tun0 %v nft:\n%s", rules, routes, k.HasLink("tun0"), k.Nft)
	}
	if eps := mpEndpoints(l, "A"); len(eps) != 0 || l.Sysctl("A", "net/mptcp/enabled") != "0" {
		t.Errorf("pre-up refused, yet: endpoints %v, net.mptcp.enabled %s", eps, l.Sysctl("A", "net/mptcp/enabled"))
	}
}
