package apply

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/plan"
)

// The test binary doubles as the helper processes of these tests.
func init() {
	switch os.Getenv("LINKAGG_TEST_HELPER") {
	case "sockproto": // print the protocol socket(AF_INET, SOCK_STREAM, 0) got
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
		fmt.Println(p, err)
		os.Exit(0)
	case "attachloop": // attach and detach until killed
		bpffs := os.Getenv("LINKAGG_TEST_BPFFS")
		for i := 0; ; i++ {
			s := plan.Transparent{All: true}
			if i%3 == 1 {
				s = plan.Transparent{Units: []string{"lgtest-x.service"}}
			}
			if _, err := AttachTransparent(bpffs, "tun0", s); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			os.Stdout.Write([]byte{'.'}) // the test kills at random moments after the first one
			if i%2 == 0 {
				if _, err := DetachTransparent(bpffs, "tun0"); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
			}
		}
	}
}

// newBPFFS mounts a private BPF file system for one test (the machine's /sys/fs/bpf is never used).
func newBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mounting a bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// needTransparent fails (not skips) when the kernel lacks what mptcp-transparent needs: TestTransparent
// runs these tests only on a kernel that has it.
func needTransparent(t *testing.T, bpffs string) {
	t.Helper()
	if err := TransparentMissing(bpffs); err != nil {
		t.Fatalf("kernel support: %v", err)
	}
}

// TestTransparent runs the kernel tests of mptcp-transparent on this kernel when it can load the program.
// When it cannot (a kernel before 6.6, or one that refuses BPF trampolines, as the Firecracker kernel of
// our lab does), it checks that the refusal is one line naming what is missing, and runs the same tests
// in a VM with Debian's 6.12 kernel (tests/vm/run.sh) by running this test binary there.
func TestTransparent(t *testing.T) {
	requireRoot(t)
	fs := newBPFFS(t)
	tests := []struct {
		name string
		f    func(*testing.T)
	}{
		{"All", transparentAll}, {"Units", transparentUnits}, {"PinRemovedByHand", transparentPinRemovedByHand},
		{"TwoNamespaces", transparentTwoNamespaces}, {"Killed", transparentKilled},
		{"ApplyDown", transparentApplyDown}, {"DownLost", transparentDownLost}, {"Rollback", transparentRollback},
	}
	err := TransparentMissing(fs)
	if err == nil {
		for _, c := range tests {
			t.Run(c.name, c.f)
		}
		return
	}
	if os.Getenv("LINKAGG_IN_VM") != "" {
		t.Fatalf("the test VM's kernel lacks what mptcp-transparent needs: %v", err)
	}
	if !strings.HasPrefix(err.Error(), "mptcp-transparent: ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("refusal is not one line: %q", err)
	}
	t.Logf("this kernel: %v; running the tests in a VM", err)
	runInVM(t, "^TestTransparent$")
}

// runInVM runs this test binary with -test.run pattern in the test VM and fails with its output if it fails.
func runInVM(t *testing.T, pattern string) {
	t.Helper()
	work := os.Getenv("LGVM_WORK")
	if work == "" {
		work = "/var/tmp/linkagg-vm"
	}
	e := os.MkdirAll(work, 0o755)
	if e != nil {
		t.Fatal(e)
	}
	dir, err := os.MkdirTemp(work, "run-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/apply.test", bin, 0o755); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	script := fmt.Sprintf("cd %s && LINKAGG_IN_VM=1 CI=true %s/apply.test -test.run '%s' -test.v -test.count=1\n", wd, dir, pattern)
	if err := os.WriteFile(dir+"/run.sh", []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("../tests/vm/run.sh", dir+"/run.sh")
	cmd.Env = append(os.Environ(), "LGVM_WORK="+work)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "\nPASS") {
		t.Fatalf("in the VM: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "--- ") || strings.Contains(l, "mptcpify_test.go") || strings.Contains(l, "transparent_test.go") {
			t.Log("vm: " + strings.TrimSpace(l))
		}
	}
}

// sockProto opens a socket in the calling thread's namespace and returns the protocol the kernel gave it.
func sockProto(t *testing.T, family, typ, proto int) int {
	t.Helper()
	fd, err := unix.Socket(family, typ, proto)
	if err != nil {
		t.Fatalf("socket(%d, %#x, %d): %v", family, typ, proto, err)
	}
	defer unix.Close(fd)
	p, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tcpProto is what socket(AF_INET, SOCK_STREAM, 0) gives in the calling thread's namespace.
func tcpProto(t *testing.T) int {
	t.Helper()
	return sockProto(t, unix.AF_INET, unix.SOCK_STREAM, 0)
}

// kernelLinks lists the IDs of every attached link in the kernel whose program is ours and was made for
// the namespace with this cookie (the cookie is an immediate of the program's instructions). It reads the
// kernel's own lists, not our pins.
func kernelLinks(t *testing.T, cookie uint64) []link.ID {
	t.Helper()
	var out []link.ID
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		l := it.Take()
		info, err := l.Info()
		l.Close() // an open link fd would keep a detached link alive
		if err != nil {
			continue
		}
		p, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			continue
		}
		pi, err := p.Info()
		p.Close()
		if err != nil || pi.Name != progName {
			continue
		}
		insns, err := pi.Instructions()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(insns, func(i asm.Instruction) bool {
			return i.OpCode.IsDWordLoad() && uint64(i.Constant) == cookie
		}) {
			out = append(out, info.ID)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func cookieOf(t *testing.T) uint64 {
	t.Helper()
	c, err := netnsCookie()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTransparentAll: `all` turns every TCP socket of the namespace into MPTCP — protocol 0 or
// IPPROTO_TCP, IPv4 and IPv6, with SOCK_NONBLOCK|SOCK_CLOEXEC in the type as Go and most runtimes pass it —
// and nothing else: UDP, an explicit MPTCP socket, and TCP sockets of another namespace and of the machine's
// own namespace stay as they were. Detach removes every pin and folder and the kernel's link.
func transparentAll(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	fs := newBPFFS(t)
	needTransparent(t, fs)
	e.must(writeSysctl("net/ipv6/conf/all/disable_ipv6", "0"))
	cookie := cookieOf(t)
	if p := tcpProto(t); p != unix.IPPROTO_TCP {
		t.Fatalf("before attaching: protocol %d", p)
	}
	changed, err := AttachTransparent(fs, "tun0", plan.Transparent{All: true})
	e.must(err)
	if !changed {
		t.Error("first attach reported no change")
	}
	links := kernelLinks(t, cookie)
	if len(links) != 1 {
		t.Fatalf("kernel links of our program for this namespace: %v, want 1", links)
	}
	for _, c := range []struct {
		fam, typ, proto, want int
	}{
		{unix.AF_INET, unix.SOCK_STREAM, 0, ipprotoMPTCP},
		{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP, ipprotoMPTCP},
		{unix.AF_INET, unix.SOCK_STREAM | unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC, 0, ipprotoMPTCP},
		{unix.AF_INET6, unix.SOCK_STREAM, 0, ipprotoMPTCP},
		{unix.AF_INET, unix.SOCK_DGRAM, 0, unix.IPPROTO_UDP},
		{unix.AF_INET6, unix.SOCK_DGRAM, 0, unix.IPPROTO_UDP},
		{unix.AF_INET, unix.SOCK_STREAM, ipprotoMPTCP, ipprotoMPTCP},
	} {
		if got := sockProto(t, c.fam, c.typ, c.proto); got != c.want {
			t.Errorf("socket(%d, %#x, %d) got protocol %d, want %d", c.fam, c.typ, c.proto, got, c.want)
		}
	}
	e.inB(func() {
		if p := tcpProto(t); p != unix.IPPROTO_TCP {
			t.Errorf("a TCP socket of another namespace became protocol %d", p)
		}
	})
	// the machine's own namespace: only read (a socket is opened and closed)
	e.must(netns.Set(e.orig))
	p := tcpProto(t)
	e.must(netns.Set(e.a))
	if p != unix.IPPROTO_TCP {
		t.Errorf("a TCP socket of the machine's own namespace became protocol %d", p)
	}

	// found from the pins alone, and a second attach writes nothing
	found, err := FindTransparent(fs, "tun0")
	e.must(err)
	if found == nil || !found.Linked || !found.Current || !found.Scope.All || found.LinkID != links[0] {
		t.Errorf("found %+v, want the linked current program %d with scope all", found, links[0])
	}
	if changed, err := AttachTransparent(fs, "tun0", plan.Transparent{All: true}); err != nil || changed {
		t.Errorf("second attach: changed %v, %v", changed, err)
	}
	if got := kernelLinks(t, cookie); !slices.Equal(got, links) {
		t.Errorf("links after a second attach: %v, want the same %v", got, links)
	}

	if had, err := DetachTransparent(fs, "tun0"); err != nil || !had {
		t.Fatalf("detach: %v %v", had, err)
	}
	if got := kernelLinks(t, cookie); len(got) != 0 {
		t.Errorf("links after detach: %v", got)
	}
	if p := tcpProto(t); p != unix.IPPROTO_TCP {
		t.Errorf("after detach: protocol %d", p)
	}
	if ents, _ := os.ReadDir(fs); len(ents) != 0 {
		t.Errorf("bpffs after detach holds %v", ents)
	}
	if had, err := DetachTransparent(fs, "tun0"); err != nil || had {
		t.Errorf("second detach: %v %v", had, err)
	}
}

// cgroup2 is the mount point of the cgroup v2 hierarchy.
func cgroup2(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPER
		l := strings.Fields(s.Text())
		if i := slices.Index(l, "-"); i > 0 && i+1 < len(l) && l[i+1] == "cgroup2" {
			return l[4]
		}
	}
	t.Fatal("no cgroup2 mount")
	return ""
}

// cgroupProto runs the helper process in the cgroup dir (created if missing) and returns the protocol of its
// TCP socket. The process is started from the locked thread, so it lives in namespace A.
func cgroupProto(t *testing.T, dir string) int {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "LINKAGG_TEST_HELPER=sockproto")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper in %s: %v\n%s", dir, err, out)
	}
	var p int
	fmt.Sscan(string(out), &p)
	return p
}

// removeCgroups removes a tree of empty cgroups, deepest first.
func removeCgroups(root string) {
	var dirs []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i])
	}
}

// TestTransparentUnits: with unit names, a process becomes MPTCP when its own cgroup or an ancestor has one
// of the names (a slice covers what runs below it), and stays TCP otherwise — the test process itself, and
// a sibling unit. A unit's cgroup that is removed and made again (a service restart: a new cgroup id) is
// still matched, and changing the scope updates the map without a new link.
func transparentUnits(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	fs := newBPFFS(t)
	needTransparent(t, fs)
	root := filepath.Join(cgroup2(t), fmt.Sprintf("linkagg-test-%d", os.Getpid()))
	t.Cleanup(func() { removeCgroups(root) })
	svc := filepath.Join(root, "lgtest.slice", "lgtest-web.slice", "lgtest-ssh.service")
	other := filepath.Join(root, "lgtest.slice", "lgtest-other.service")

	_, err := AttachTransparent(fs, "tun0", plan.Transparent{Units: []string{"lgtest-ssh.service"}})
	e.must(err)
	links := kernelLinks(t, cookieOf(t))
	if got := cgroupProto(t, svc); got != ipprotoMPTCP {
		t.Errorf("process in lgtest-ssh.service: protocol %d, want MPTCP", got)
	}
	if got := cgroupProto(t, other); got != unix.IPPROTO_TCP {
		t.Errorf("process in a sibling unit: protocol %d, want TCP", got)
	}
	if got := tcpProto(t); got != unix.IPPROTO_TCP {
		t.Errorf("the test process (outside the units): protocol %d, want TCP", got)
	}
	// a restart: the unit's cgroup goes and comes back with another id
	var st1, st2 unix.Stat_t
	e.must(unix.Stat(svc, &st1))
	e.must(os.Remove(svc))
	if got := cgroupProto(t, svc); got != ipprotoMPTCP {
		t.Errorf("after the unit's cgroup was made again: protocol %d, want MPTCP", got)
	}
	e.must(unix.Stat(svc, &st2))
	if st1.Ino == st2.Ino {
		t.Logf("the kernel reused the cgroup id %d (the check still holds)", st1.Ino)
	}

	// a slice covers everything below it; the scope changes in the map, the link stays
	changed, err := AttachTransparent(fs, "tun0", plan.Transparent{Units: []string{"lgtest.slice"}})
	e.must(err)
	if !changed {
		t.Error("a scope change reported no change")
	}
	if got := kernelLinks(t, cookieOf(t)); !slices.Equal(got, links) {
		t.Errorf("a scope change made a new link: %v, was %v", got, links)
	}
	for _, d := range []string{svc, other} {
		if got := cgroupProto(t, d); got != ipprotoMPTCP {
			t.Errorf("process in %s under lgtest.slice: protocol %d, want MPTCP", d, got)
		}
	}
	if got := tcpProto(t); got != unix.IPPROTO_TCP {
		t.Errorf("the test process: protocol %d, want TCP", got)
	}
	found, err := FindTransparent(fs, "tun0")
	e.must(err)
	if found == nil || !slices.Equal(found.Scope.Units, []string{"lgtest.slice"}) || found.Scope.All {
		t.Errorf("found scope %+v, want lgtest.slice", found)
	}
	_, err = DetachTransparent(fs, "tun0")
	e.must(err)
	if got := cgroupProto(t, svc); got != unix.IPPROTO_TCP {
		t.Errorf("after detach: protocol %d", got)
	}
}

// TestTransparentPinRemovedByHand: removing the link's pin by hand detaches the program (nothing else
// holds it); Find reports it as not attached, and the next attach puts a new link in.
func transparentPinRemovedByHand(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	fs := newBPFFS(t)
	needTransparent(t, fs)
	_, err := AttachTransparent(fs, "tun0/inet6", plan.Transparent{All: true})
	e.must(err)
	found, err := FindTransparent(fs, "tun0/inet6")
	e.must(err)
	e.must(os.Remove(filepath.Join(found.Dir, pinLink)))
	if got := kernelLinks(t, cookieOf(t)); len(got) != 0 {
		t.Errorf("links after the pin was removed: %v", got)
	}
	// the kernel detaches an unpinned link from a workqueue: a moment later
	e.must(waitGone([]ebpf.ProgramID{found.ProgID}))
	if p := tcpProto(t); p != unix.IPPROTO_TCP {
		t.Errorf("protocol %d after the pin was removed", p)
	}
	found, err = FindTransparent(fs, "tun0/inet6")
	e.must(err)
	if found == nil || found.Linked || !found.Scope.All {
		t.Errorf("found %+v, want the units map without a link", found)
	}
	if changed, err := AttachTransparent(fs, "tun0/inet6", plan.Transparent{All: true}); err != nil || !changed {
		t.Fatalf("re-attach: %v %v", changed, err)
	}
	if p := tcpProto(t); p != ipprotoMPTCP {
		t.Errorf("protocol %d after re-attach", p)
	}
	_, err = DetachTransparent(fs, "tun0/inet6")
	e.must(err)
}

// TestTransparentTwoNamespaces: two namespaces attach at the same moment into one shared bpffs (their
// folders are apart by namespace cookie); each gets MPTCP, a third does not, and detaching one leaves the
// other attached.
func transparentTwoNamespaces(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	fs := newBPFFS(t)
	needTransparent(t, fs)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	cookies := make([]uint64, 2)
	for i, ns := range []netns.NsHandle{e.a, e.b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // the thread is left in ns and never given back: it dies with the goroutine
			if errs[i] = netns.Set(ns); errs[i] != nil {
				return
			}
			if cookies[i], errs[i] = netnsCookie(); errs[i] != nil {
				return
			}
			_, errs[i] = AttachTransparent(fs, "tun0", plan.Transparent{All: true})
		}()
	}
	wg.Wait()
	e.must(errors.Join(errs...))
	if cookies[0] == cookies[1] {
		t.Fatal("two namespaces with one cookie")
	}
	if p := tcpProto(t); p != ipprotoMPTCP {
		t.Errorf("namespace A: protocol %d", p)
	}
	e.inB(func() {
		if p := tcpProto(t); p != ipprotoMPTCP {
			t.Errorf("namespace B: protocol %d", p)
		}
		_, err := DetachTransparent(fs, "tun0")
		e.must(err)
		if p := tcpProto(t); p != unix.IPPROTO_TCP {
			t.Errorf("namespace B after its detach: protocol %d", p)
		}
	})
	if p := tcpProto(t); p != ipprotoMPTCP {
		t.Errorf("namespace A after B's detach: protocol %d", p)
	}
	c, err := netns.New() // a third namespace, made and left on this thread
	e.must(err)
	p := tcpProto(t)
	e.must(netns.Set(e.a))
	c.Close()
	if p != unix.IPPROTO_TCP {
		t.Errorf("a third namespace: protocol %d", p)
	}
	_, err = DetachTransparent(fs, "tun0")
	e.must(err)
}

// TestTransparentKilled: a process attaching and detaching in a loop is SIGKILLed at random moments; each
// time, every link of our program for this namespace that the kernel holds is the one pinned where Find
// looks (none is attached unfindably), and Detach leaves none.
func transparentKilled(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	fs := newBPFFS(t)
	needTransparent(t, fs)
	cookie := cookieOf(t)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	pinned := 0
	for i := 0; i < 25; i++ {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "LINKAGG_TEST_HELPER=attachloop", "LINKAGG_TEST_BPFFS="+fs)
		var out strings.Builder
		cmd.Stderr = &out
		stdout, err := cmd.StdoutPipe()
		e.must(err)
		e.must(cmd.Start())
		one := make([]byte, 1)
		if _, err := stdout.Read(one); err != nil { // the first attach is done
			cmd.Wait()
			t.Fatalf("helper: %v %s", err, out.String())
		}
		go io.Copy(io.Discard, stdout)
		time.Sleep(time.Duration(rng.Intn(60)) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		if out.Len() > 0 {
			t.Fatalf("helper failed: %s", out.String())
		}
		links := kernelLinks(t, cookie)
		found, err := FindTransparent(fs, "tun0")
		e.must(err)
		var want []link.ID
		if found != nil && found.Linked {
			want = []link.ID{found.LinkID}
			pinned++
		}
		if !slices.Equal(links, want) {
			t.Fatalf("kill %d: kernel links %v, pinned %v (%+v)", i, links, want, found)
		}
		// the next run converges from whatever was left
		if i%2 == 0 {
			_, err = AttachTransparent(fs, "tun0", plan.Transparent{All: true})
			e.must(err)
			if p := tcpProto(t); p != ipprotoMPTCP {
				t.Fatalf("kill %d: attach after the kill: protocol %d", i, p)
			}
		}
		_, err = DetachTransparent(fs, "tun0")
		e.must(err)
		if links := kernelLinks(t, cookie); len(links) != 0 {
			t.Fatalf("kill %d: links after detach: %v", i, links)
		}
	}
	t.Logf("25 kills, %d of them left a pinned link (found and removed)", pinned)
	if ents, _ := os.ReadDir(fs); len(ents) != 0 {
		t.Errorf("bpffs holds %v", ents)
	}
}

// TestTransparentMissing: a path that is no bpffs is named in one line.
func TestTransparentMissing(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	err := TransparentMissing(dir)
	if err == nil || !strings.Contains(err.Error(), "no BPF file system mounted at "+dir) || strings.Contains(err.Error(), "\n") {
		t.Errorf("TransparentMissing(%s) = %v", dir, err)
	}
	if _, err := AttachTransparent(dir, "tun0", plan.Transparent{All: true}); err == nil {
		t.Error("attach without a bpffs succeeded")
	}
	if had, err := DetachTransparent(dir, "tun0"); had || err != nil {
		t.Errorf("detach without a bpffs: %v %v", had, err)
	}
}

func TestEscapeGroup(t *testing.T) {
	for _, g := range []string{"tun0", "tun0/inet6", "eth0.100", "a%b", "x-y_z"} {
		e := escapeGroup(g)
		if strings.ContainsAny(e, "./") || unescapeGroup(e) != g {
			t.Errorf("%q -> %q -> %q", g, e, unescapeGroup(e))
		}
	}
}
