package tests

// The boot test: the package as an admin meets it. A minimal Debian 12 root (debootstrap, cached under
// /var/tmp/linkagg-boot by tests/boot/base.sh) gets the package with `apt install ./linkagg-hooks_*.deb`,
// and two hosts A and B, each an overlay of that root with its own /etc/network/interfaces, boot with
// `systemd-nspawn -b` inside the network namespaces lbA and lbB of tests/lab/twohost.sh (two veth links
// shaped with htb, 300 and 200 Mbit/s). With no manual step: networking.service brings the aggregate up at
// boot, `linkagg status` says converged, the VIPs ping each other, one iperf3 flow uses both links; an
// upgrade from 0.1.0-1 (tests/boot/, the package as it was) restarts an enabled watcher, which then works
// under its sandbox; a warm reboot (exit 133, booted again as systemd-nspawn@.service would) and a cold boot
// rebuild everything, after a shutdown whose `ifdown -a` left nothing of ours in the kernel; remove stops
// the watcher and purge leaves no file.
//
// Containers never touch the host: everything nspawn writes under /run goes to a tmpfs of a private mount
// namespace (held by one `unshare ... sleep` process, like package_test.go's), the roots are overlays mounted
// only there, each container runs in a cgroup of its own (tests/boot/nspawn.sh), and the only host objects
// are the namespaces lbA/lbB with their links, removed at the end.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	bootPrefix = "lb" // namespaces lbA, lbB; links lba0, lba1 / lbb0, lbb1; machines lb-a, lb-b
	bootNet    = 61   // addresses 10.61.x.y
	bootCache  = "/var/tmp/linkagg-boot"
	bootOldDeb = "tests/boot/linkagg-hooks_0.1.0-1_amd64.deb"
)

var bootRates = []int{300, 200}

// bootInterfaces is host h's (A: 10, B: 20) /etc/network/interfaces: two member NICs and the group.
func bootInterfaces(host int) string {
	return fmt.Sprintf(`# boot test host %[2]d
auto lo
iface lo inet loopback

auto %[3]s0
iface %[3]s0 inet static
    address 10.%[1]d.0.%[2]d/24

auto %[3]s1
iface %[3]s1 inet static
    address 10.%[1]d.1.%[2]d/24

auto tun0
iface tun0 inet static
    address 10.%[1]d.255.%[2]d
    netmask 255.255.255.255
    fakenet 10.%[1]d.255.0/24
    table 28610 28611
    weight 3 2
    rspec 10.%[1]d.255.10:10.%[1]d.0.10:10.%[1]d.1.10 10.%[1]d.255.20:10.%[1]d.0.20:10.%[1]d.1.20
`, bootNet, host, bootPrefix+map[int]string{10: "a", 20: "b"}[host])
}

func bootVIP(h string) string {
	return fmt.Sprintf("10.%d.255.%s", bootNet, map[string]string{"A": "10", "B": "20"}[h])
}

type bootLab struct {
	t      *testing.T
	dir    string
	base   string
	holder *exec.Cmd
	scope  bool // the host runs systemd: each container gets a scope from systemd-run
	hosts  map[string]*bootHost
}

type bootHost struct {
	lab     *bootLab
	name    string // A or B
	machine string // lb-a
	dir     string // upper/, work/, root/ (the overlay, mounted in the holder's namespace only)
	nspawn  *exec.Cmd
	exited  chan struct{}
	exit    int
	leader  int // the container's PID 1, as seen from here
	boots   int
	log     string // the console log of the current boot
}

func (h *bootHost) root() string { return filepath.Join(h.dir, "root") }
func (h *bootHost) ns() string   { return bootPrefix + h.name }

func needBoot(t *testing.T) {
	t.Helper()
	needPackaging(t)
	var missing []string
	for _, tool := range []string{"debootstrap", "systemd-nspawn", "nsenter", "unshare", "flock", "ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the boot test needs %v (make deps installs debootstrap and systemd-container)", missing)
		}
		t.Skipf("the boot test needs %v (make deps installs debootstrap and systemd-container)", missing)
	}
	if arch := strings.TrimSpace(run(t, "dpkg", "--print-architecture")); arch != "amd64" {
		t.Fatalf("the boot test upgrades from %s, an amd64 package; this machine is %s", bootOldDeb, arch)
	}
}

// cmdOut runs a command with a timeout and returns its combined output.
func cmdOut(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s (%v)", timeout, err)
	}
	return b.String(), err
}

func (l *bootLab) must(timeout time.Duration, name string, args ...string) string {
	l.t.Helper()
	out, err := cmdOut(timeout, name, args...)
	if err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// inHolder runs a shell script in the holder's mount namespace (where the overlays are mounted).
func (l *bootLab) inHolder(timeout time.Duration, script string) string {
	l.t.Helper()
	return l.must(timeout, "nsenter", "-t", strconv.Itoa(l.holder.Process.Pid), "-m", "--", "sh", "-ec", script)
}

func newBootLab(t *testing.T) *bootLab {
	t.Helper()
	l := &bootLab{t: t, dir: t.TempDir(), hosts: map[string]*bootHost{}}
	_, err := os.Stat("/run/systemd/system")
	l.scope = err == nil

	start := time.Now()
	base, err := cmdOut(10*time.Minute, filepath.Join(repoRoot, "tests/boot/base.sh"), bootCache)
	if err != nil {
		t.Fatalf("tests/boot/base.sh: %v\n%s", err, base)
	}
	lines := strings.Split(strings.TrimSpace(base), "\n")
	l.base = lines[len(lines)-1]
	stamp, _ := os.ReadFile(filepath.Join(l.base, ".complete"))
	t.Logf("base root %s (%s) ready in %s: %s", l.base, strings.TrimSpace(string(stamp)), time.Since(start).Round(time.Second),
		strings.Join(lines[:len(lines)-1], "; "))

	// the two hosts' namespaces and links (unaddressed and down: ifupdown in each container sets them up)
	rates := fmt.Sprint(bootRates[0], " ", bootRates[1])
	cmd := exec.Command(filepath.Join(repoRoot, "tests/lab/twohost.sh"), "up", bootPrefix, rates)
	cmd.Env = append(os.Environ(), "ADDR=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("twohost up: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(filepath.Join(repoRoot, "tests/lab/twohost.sh"), "down", bootPrefix).Run() })

	l.holder = exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "infinity")
	l.holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := l.holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// the namespace, and with it every overlay and tmpfs below, goes with its last process
		l.holder.Process.Signal(syscall.SIGKILL)
		l.holder.Wait()
	})
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for i := 0; ; i++ {
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", l.holder.Process.Pid))
		if ns != "" && ns != self {
			break
		}
		if i == 100 {
			t.Fatal("unshare did not enter a new mount namespace")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var script strings.Builder
	for _, name := range []string{"A", "B"} {
		h := &bootHost{lab: l, name: name, machine: bootPrefix + "-" + strings.ToLower(name), dir: filepath.Join(l.dir, name)}
		l.hosts[name] = h
		for _, d := range []string{"upper", "work", "root"} {
			if err := os.MkdirAll(filepath.Join(h.dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		nsFile := filepath.Join(l.dir, "netns-"+h.ns())
		if err := os.WriteFile(nsFile, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&script, "mount -t overlay overlay -o lowerdir=%s,upperdir=%s/upper,workdir=%s/work %s\n", l.base, h.dir, h.dir, h.root())
		// nspawn gets the namespace through a bind mount made before /run/systemd is covered
		fmt.Fprintf(&script, "mount --bind /run/netns/%s %s\n", h.ns(), nsFile)
	}
	// nspawn writes /run/systemd/nspawn/{locks,propagate}: into a tmpfs of this namespace, not the host's /run
	script.WriteString("if [ -d /run/systemd ]; then mount -t tmpfs -o mode=0755 tmpfs /run/systemd; else mount -t tmpfs -o mode=0755 tmpfs /run; fi\n")
	l.inHolder(30*time.Second, script.String())
	return l
}

// writeFile writes a file through the overlay (in the holder's namespace, where it is mounted).
func (l *bootLab) writeFile(path string, data []byte) {
	l.t.Helper()
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(l.holder.Process.Pid), "-m", "--", "sh", "-ec", `mkdir -p "$(dirname "$1")"; cat > "$1"`, "sh", path)
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		l.t.Fatalf("writing %s: %v\n%s", path, err, out)
	}
}

// nspawnCmd is systemd-nspawn ARGS for host h, in a cgroup of its own, in the holder's mount namespace.
func (h *bootHost) nspawnCmd(cgroup string, args ...string) *exec.Cmd {
	l := h.lab
	argv := []string{"nsenter", "-t", strconv.Itoa(l.holder.Process.Pid), "-m", "--",
		"sh", filepath.Join(repoRoot, "tests/boot/nspawn.sh"), cgroup, "-q", "-D", h.root(), "-M", h.machine}
	argv = append(argv, args...)
	if l.scope {
		argv = append([]string{"systemd-run", "--quiet", "--scope", "-p", "Delegate=yes", "--unit=linkagg-boot-" + cgroup + "-" + strconv.Itoa(os.Getpid())}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = os.Environ()
	if l.scope {
		cmd.Env = append(cmd.Env, "LB_SCOPE=1")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (h *bootHost) cleanupCgroup(cgroup string) {
	if h.lab.scope {
		return
	}
	out, err := cmdOut(20*time.Second, "sh", filepath.Join(repoRoot, "tests/boot/nspawn.sh"), "--cleanup", cgroup)
	if err != nil {
		h.lab.t.Errorf("cgroup of %s: %v\n%s", cgroup, err, out)
	}
}

// offline runs a command in host h's root with systemd-nspawn, not booted, with no network.
func (h *bootHost) offline(timeout time.Duration, script string) string {
	t := h.lab.t
	t.Helper()
	cg := h.machine + "-setup"
	cmd := h.nspawnCmd(cg, "--private-network", "--console=pipe", "--setenv=DEBIAN_FRONTEND=noninteractive", "--", "/bin/sh", "-ec", script)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		err = fmt.Errorf("timed out after %s (%v)", timeout, <-done)
	}
	h.cleanupCgroup(cg)
	if err != nil {
		t.Fatalf("in %s (not booted): %s: %v\n%s", h.machine, script, err, b.String())
	}
	return b.String()
}

// boot starts host h's container with `systemd-nspawn -b` and waits until systemd says running.
func (h *bootHost) boot() {
	t := h.lab.t
	t.Helper()
	h.boots++
	h.log = filepath.Join(h.dir, fmt.Sprintf("console-%d.log", h.boots))
	f, err := os.Create(h.log)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// nspawn drops CAP_NET_ADMIN with a network namespace path and keeps /proc/sys read-only unless told:
	// the hooks need both, /dev/net/tun, and the watcher's probes CAP_NET_RAW
	h.nspawn = h.nspawnCmd(h.machine, "-b", "--network-namespace-path="+filepath.Join(h.lab.dir, "netns-"+h.ns()),
		"--capability=CAP_NET_ADMIN,CAP_NET_RAW", "--bind=/dev/net/tun", "--console=read-only")
	h.nspawn.Stdout, h.nspawn.Stderr = f, f
	if err := h.nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	h.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}, f *os.File) {
		cmd.Wait()
		f.Close()
		h.exit = cmd.ProcessState.ExitCode()
		close(exited)
	}(h.nspawn, h.exited, f)

	// the container's PID 1: nspawn's child in a PID namespace of its own
	h.leader = 0
	deadline := time.Now().Add(30 * time.Second)
	for h.leader == 0 {
		select {
		case <-h.exited:
			t.Fatalf("%s: systemd-nspawn exited with %d at boot %d:\n%s", h.machine, h.exit, h.boots, h.consoleTail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no container init after 30s:\n%s", h.machine, h.consoleTail(40))
		}
		h.leader = containerInit(h.nspawn.Process.Pid)
		if h.leader == 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	var state string
	for deadline = time.Now().Add(90 * time.Second); ; {
		out, _ := h.try(10*time.Second, "systemctl is-system-running")
		state = strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not booted after 90s (systemctl is-system-running: %q):\n%s", h.machine, state, h.consoleTail(40))
		}
		select {
		case <-h.exited:
			t.Fatalf("%s: systemd-nspawn exited with %d while booting:\n%s", h.machine, h.exit, h.consoleTail(40))
		case <-time.After(250 * time.Millisecond):
		}
	}
	if state != "running" {
		failed, _ := h.try(10*time.Second, "systemctl --failed --no-legend --no-pager; journalctl -b --no-pager -p warning | tail -n 30")
		t.Fatalf("%s: boot %d ended %s:\n%s", h.machine, h.boots, state, failed)
	}
	t.Logf("%s: boot %d: running after %s (container init pid %d)", h.machine, h.boots, time.Since(start).Round(100*time.Millisecond), h.leader)
}

// containerInit finds the child of pid that is PID 1 of its own PID namespace.
func containerInit(pid int) int {
	var walk func(p, depth int) int
	walk = func(p, depth int) int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p, p))
		if err != nil || depth > 3 {
			return 0
		}
		for _, c := range strings.Fields(string(b)) {
			cp, _ := strconv.Atoi(c)
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cp))
			if m := regexp.MustCompile(`(?m)^NSpid:\s+(.*)$`).FindSubmatch(st); m != nil {
				if f := strings.Fields(string(m[1])); len(f) > 1 && f[len(f)-1] == "1" {
					return cp
				}
			}
			if r := walk(cp, depth+1); r != 0 {
				return r
			}
		}
		return 0
	}
	return walk(pid, 0)
}

func (h *bootHost) consoleTail(n int) string {
	b, _ := os.ReadFile(h.log)
	lines := strings.Split(string(b), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// try runs a shell script in the booted container (all its namespaces, a clean environment).
func (h *bootHost) try(timeout time.Duration, script string) (string, error) {
	return cmdOut(timeout, "nsenter", "-t", strconv.Itoa(h.leader), "-a", "--", "/usr/bin/env", "-i",
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "TERM=dumb",
		"/bin/sh", "-c", script)
}

func (h *bootHost) sh(timeout time.Duration, script string) string {
	h.lab.t.Helper()
	out, err := h.try(timeout, script)
	if err != nil {
		h.lab.t.Fatalf("in %s: %s: %v\n%s", h.machine, script, err, out)
	}
	return out
}

// shutdown runs `systemctl ACTION` in the container and waits for nspawn to exit with want.
func (h *bootHost) shutdown(action string, want int) {
	t := h.lab.t
	t.Helper()
	start := time.Now()
	h.try(10*time.Second, "systemctl --no-block "+action)
	select {
	case <-h.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: still running 60s after systemctl %s:\n%s", h.machine, action, h.consoleTail(40))
	}
	h.cleanupCgroup(h.machine)
	if h.exit != want {
		t.Fatalf("%s: systemctl %s: nspawn exited with %d, want %d:\n%s", h.machine, action, h.exit, want, h.consoleTail(40))
	}
	// systemd marks a unit that failed to stop (networking.service: ifdown -a) FAILED on the console
	if b, _ := os.ReadFile(h.log); regexp.MustCompile(`FAILED|ifdown: .*(error|failed)`).Match(b) {
		t.Errorf("%s: the shutdown reported a failure:\n%s", h.machine, h.consoleTail(60))
	}
	t.Logf("%s: systemctl %s: down after %s (nspawn exit %d)", h.machine, action, time.Since(start).Round(100*time.Millisecond), h.exit)
}

// stop ends a container at cleanup, politely first.
func (h *bootHost) stop() {
	if h.nspawn == nil {
		return
	}
	select {
	case <-h.exited:
		return
	default:
	}
	h.try(5*time.Second, "systemctl --no-block poweroff")
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second):
		h.nspawn.Process.Kill()
		<-h.exited
	}
	h.cleanupCgroup(h.machine)
}

type bootStatus struct {
	Watcher struct {
		Running bool `json:"running"`
	} `json:"watcher"`
	Groups []struct {
		Group     string `json:"group"`
		Running   bool   `json:"running"`
		Converged bool   `json:"converged"`
		Paths     []struct {
			Path  int    `json:"path"`
			Link  string `json:"link"`
			State string `json:"state"`
		} `json:"paths"`
	} `json:"groups"`
}

func (h *bootHost) status() (bootStatus, string) {
	h.lab.t.Helper()
	out, err := h.try(20*time.Second, "linkagg status --json")
	var s bootStatus
	if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 4) {
		h.lab.t.Fatalf("%s: linkagg status --json: %v\n%s", h.machine, err, out)
	}
	if jerr := json.Unmarshal([]byte(out), &s); jerr != nil {
		h.lab.t.Fatalf("%s: linkagg status --json: %v\n%s", h.machine, jerr, out)
	}
	return s, out
}

// pathStates is "converged up up" or what differs, for one group with two paths.
func (s bootStatus) summary() string {
	if len(s.Groups) != 1 {
		return fmt.Sprintf("%d groups", len(s.Groups))
	}
	g := s.Groups[0]
	out := fmt.Sprintf("running=%v converged=%v", g.Running, g.Converged)
	for _, p := range g.Paths {
		out += fmt.Sprintf(" %d:%s=%s", p.Path, p.Link, p.State)
	}
	return out
}

// eventually polls cond every 200ms for at most d.
func (l *bootLab) eventually(d time.Duration, what string, cond func() (bool, string)) {
	l.t.Helper()
	start := time.Now()
	var last string
	for {
		ok, s := cond()
		last = s
		if ok {
			l.t.Logf("%s after %s (%s)", what, time.Since(start).Round(100*time.Millisecond), s)
			return
		}
		if time.Since(start) > d {
			l.t.Fatalf("%s: not within %s; last: %s", what, d, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

const wantConverged = "running=true converged=true 1:%[1]s0=up 2:%[1]s1=up"

// checkAggregate: networking.service active, the group converged with both paths up, VIP pings VIP.
func (l *bootLab) checkAggregate(when string) {
	l.t.Helper()
	for _, name := range []string{"A", "B"} {
		h := l.hosts[name]
		if st := strings.TrimSpace(h.sh(10*time.Second, "systemctl is-active networking.service || true")); st != "active" {
			out, _ := h.try(10*time.Second, "systemctl status --no-pager networking.service; journalctl -b --no-pager -u networking | tail -n 30")
			l.t.Fatalf("%s %s: networking.service is %q\n%s", h.machine, when, st, out)
		}
		want := fmt.Sprintf(wantConverged, bootPrefix+strings.ToLower(name))
		l.eventually(15*time.Second, fmt.Sprintf("%s %s: linkagg status converged", h.machine, when), func() (bool, string) {
			s, _ := h.status()
			return s.summary() == want, s.summary()
		})
	}
	for _, pair := range [][2]string{{"A", "B"}, {"B", "A"}} {
		h := l.hosts[pair[0]]
		out := h.sh(20*time.Second, fmt.Sprintf("ping -n -c 3 -i 0.2 -W 2 -I %s %s", bootVIP(pair[0]), bootVIP(pair[1])))
		if !strings.Contains(out, " 0% packet loss") {
			l.t.Fatalf("%s %s: ping %s -> %s:\n%s", h.machine, when, bootVIP(pair[0]), bootVIP(pair[1]), out)
		}
	}
	l.t.Logf("%s: networking.service active, both groups converged, VIP <-> VIP ping without loss", when)
}

// kernelLeftovers lists what of linkagg's is in host h's network namespace (seen from outside).
func (l *bootLab) kernelLeftovers(h *bootHost) []string {
	var left []string
	rules, _ := cmdOut(10*time.Second, "ip", "-n", h.ns(), "rule", "show")
	routes, _ := cmdOut(10*time.Second, "ip", "-n", h.ns(), "route", "show", "table", "all")
	for _, line := range strings.Split(rules+routes, "\n") {
		if strings.Contains(line, "proto linkagg") || strings.Contains(line, "proto 76") {
			left = append(left, line)
		}
	}
	if out, err := cmdOut(10*time.Second, "ip", "-n", h.ns(), "link", "show", "tun0"); err == nil {
		left = append(left, "link "+strings.TrimSpace(out))
	}
	if out, _ := cmdOut(10*time.Second, "ip", "netns", "exec", h.ns(), "nft", "list", "tables"); strings.Contains(out, "linkagg_") {
		left = append(left, strings.TrimSpace(out))
	}
	return left
}

// linkBytes reads the tx or rx byte counters of host h's two links from outside.
func (l *bootLab) linkBytes(h *bootHost, dir string) [2]uint64 {
	l.t.Helper()
	var v [2]uint64
	for i := range v {
		out := l.must(10*time.Second, "ip", "netns", "exec", h.ns(), "cat",
			fmt.Sprintf("/sys/class/net/%s%s%d/statistics/%s_bytes", bootPrefix, strings.ToLower(h.name), i, dir))
		v[i], _ = strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	}
	return v
}

// watcherPID is linkagg-watch.service's main pid in host h and whether the unit is active.
func (h *bootHost) watcher() (pid int, active string) {
	h.lab.t.Helper()
	out := h.sh(10*time.Second, "systemctl show -p MainPID -p ActiveState linkagg-watch.service")
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "MainPID="); ok {
			pid, _ = strconv.Atoi(v)
		}
		if v, ok := strings.CutPrefix(l, "ActiveState="); ok {
			active = v
		}
	}
	return pid, active
}

func TestBootPackage(t *testing.T) {
	needBoot(t)
	started := time.Now()
	newDeb := buildDeb(t)
	oldDeb := filepath.Join(repoRoot, bootOldDeb)
	if _, err := os.Stat(oldDeb); err != nil {
		t.Fatalf("the 0.1.0-1 package to upgrade from: %v", err)
	}
	l := newBootLab(t)
	A, B := l.hosts["A"], l.hosts["B"]
	for _, h := range []*bootHost{A, B} {
		t.Cleanup(h.stop) // before the holder goes (cleanups run last-registered first)
	}

	// install 0.1.0-1 with apt, as an admin would have, and write each host's interfaces file
	for _, h := range []*bootHost{A, B} {
		for _, d := range []string{oldDeb, newDeb} {
			b, err := os.ReadFile(d)
			if err != nil {
				t.Fatal(err)
			}
			l.writeFile(filepath.Join(h.root(), "root/debs", filepath.Base(d)), b)
		}
		host := map[string]int{"A": 10, "B": 20}[h.name]
		l.writeFile(filepath.Join(h.root(), "etc/network/interfaces"), []byte(bootInterfaces(host)))
		out := h.offline(2*time.Minute, "cd /root/debs && apt-get install -y ./"+filepath.Base(oldDeb)+" && dpkg-query -W linkagg-hooks")
		if !strings.Contains(out, "linkagg-hooks\t0.1.0-1") {
			t.Fatalf("%s: apt-get install of 0.1.0-1:\n%s", h.machine, out)
		}
	}
	oldFiles := strings.Fields(A.offline(time.Minute, "dpkg -L linkagg-hooks"))
	t.Logf("0.1.0-1 installed in both roots with apt (%d paths)", len(oldFiles))

	// boot with 0.1.0-1 and enable the watcher the way README.Debian says
	for _, h := range []*bootHost{A, B} {
		h.boot()
	}
	l.checkAggregate("with 0.1.0-1")
	oldPID := map[string]int{}
	for _, h := range []*bootHost{A, B} {
		h.sh(30*time.Second, "systemctl enable --now linkagg-watch.service")
		pid, active := h.watcher()
		if active != "active" || pid == 0 {
			t.Fatalf("%s: linkagg-watch after enable --now: %s pid %d", h.machine, active, pid)
		}
		oldPID[h.name] = pid
	}

	// the upgrade, in the running hosts: the enabled watcher is restarted (a new pid) by the new postinst
	for _, h := range []*bootHost{A, B} {
		out := h.sh(2*time.Minute, "cd /root/debs && apt install -y ./"+filepath.Base(newDeb)+" 2>&1")
		pid, active := h.watcher()
		if active != "active" || pid == 0 || pid == oldPID[h.name] {
			j, _ := h.try(10*time.Second, "journalctl -b --no-pager -u linkagg-watch | tail -n 20")
			t.Fatalf("%s: after the upgrade linkagg-watch is %s with pid %d (before: %d); want active with a new pid\n%s\n%s", h.machine, active, pid, oldPID[h.name], out, j)
		}
		if enabled := strings.TrimSpace(h.sh(10*time.Second, "systemctl is-enabled linkagg-watch.service || true")); enabled != "enabled" {
			t.Errorf("%s: after the upgrade linkagg-watch is %s", h.machine, enabled)
		}
		if unit := h.sh(10*time.Second, "systemctl cat linkagg-watch.service"); !strings.Contains(unit, "ProtectSystem=strict") {
			t.Errorf("%s: the running unit is not the new one:\n%s", h.machine, unit)
		}
		t.Logf("%s: upgraded to %s: watcher restarted, pid %d -> %d, active", h.machine, strings.TrimSpace(h.sh(10*time.Second, "dpkg-query -W -f '${Version}' linkagg-hooks")), oldPID[h.name], pid)
	}
	// the old vendor files under /etc are gone, the new ones in place, nothing left behind by dpkg
	for _, p := range []string{"/etc/systemd/networkd.conf.d/linkagg.conf", "/etc/linkagg/README", "/etc/networkd-dispatcher/routable.d/50-linkagg",
		"/etc/networkd-dispatcher/off.d/50-linkagg"} {
		if out, err := A.try(10*time.Second, "test ! -e "+p+" && test ! -L "+p); err != nil {
			t.Errorf("after the upgrade %s is still there %s", p, out)
		}
	}
	A.sh(10*time.Second, "test -d /etc/linkagg && test -f /lib/systemd/networkd.conf.d/linkagg.conf && "+
		"test \"$(readlink -f /usr/lib/networkd-dispatcher/routable.d/50-linkagg)\" = /usr/lib/linkagg/linkagg-networkd")
	if out := A.sh(10*time.Second, "find / -xdev -name '*linkagg*.dpkg-*'; dpkg --verify linkagg-hooks"); out != "" {
		t.Errorf("after the upgrade: dpkg leftovers or dpkg --verify:\n%s", out)
	}
	if out := A.sh(10*time.Second, "dpkg-query -W -f '${Conffiles}' linkagg-hooks"); len(strings.Fields(out)) != 2 || strings.Fields(out)[0] != "/etc/iproute2/rt_protos.d/linkagg.conf" {
		t.Errorf("after the upgrade the conffiles are %q, want the rt_protos name only", out)
	}
	// networkd reads the drop-in from its new place
	if out := A.sh(10*time.Second, "systemd-analyze cat-config systemd/networkd.conf"); !strings.Contains(out, "/lib/systemd/networkd.conf.d/linkagg.conf") || !strings.Contains(out, "ManageForeignRoutes=no") {
		t.Errorf("systemd-analyze cat-config systemd/networkd.conf does not show the drop-in:\n%s", out)
	}
	l.checkAggregate("after the upgrade")

	// the watcher's sandbox, as systemd-analyze rates it
	sec := A.sh(20*time.Second, "systemd-analyze security --no-pager linkagg-watch.service")
	m := regexp.MustCompile(`Overall exposure level for linkagg-watch.service: ([0-9.]+)`).FindStringSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security:\n%s", sec)
	}
	exposure, _ := strconv.ParseFloat(m[1], 64)
	t.Logf("systemd-analyze security linkagg-watch.service: %s", strings.TrimSpace(sec[strings.LastIndex(sec, "→")+len("→"):]))
	if os.Getenv("LINKAGG_BOOT_VERBOSE") != "" {
		t.Logf("systemd-analyze security linkagg-watch.service:\n%s", sec)
	}
	if exposure > 3.5 {
		t.Errorf("exposure %.1f, want at most 3.5:\n%s", exposure, sec)
	}
	for _, want := range []string{"NoNewPrivileges=", "RestrictAddressFamilies=~AF_PACKET", "SystemCallFilter=~@mount", "ProtectSystem=",
		"ProtectHome=", "PrivateTmp=", "ProtectKernelModules=", "ProtectKernelTunables=", "RestrictNamespaces=~user", "MemoryDenyWriteExecute="} {
		if !regexp.MustCompile(`(?m)^✓ ` + regexp.QuoteMeta(want)).MatchString(sec) {
			t.Errorf("systemd-analyze security: %s is not ✓:\n%s", want, sec)
		}
	}

	// one flow over both links, counted at both ends
	txA, rxB := l.linkBytes(A, "tx"), l.linkBytes(B, "rx")
	srv := exec.Command("nsenter", "-t", strconv.Itoa(B.leader), "-a", "--", "/usr/bin/env", "-i", "PATH=/usr/bin:/bin",
		"iperf3", "-s", "-1", "-p", "5261")
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Wait() }()
	l.eventually(5*time.Second, "iperf3 server in lb-b listening", func() (bool, string) {
		out, _ := B.try(5*time.Second, "ss -ltn 'sport = :5261'")
		return strings.Contains(out, "LISTEN"), ""
	})
	out := A.sh(40*time.Second, "iperf3 -c "+bootVIP("B")+" -p 5261 -t 4 -O 1 -J")
	select {
	case <-srvDone:
	case <-time.After(10 * time.Second):
		srv.Process.Kill()
		<-srvDone
	}
	var res struct {
		End struct {
			SumReceived struct {
				Bits float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("iperf3: %v\n%s", err, out)
	}
	txA2, rxB2 := l.linkBytes(A, "tx"), l.linkBytes(B, "rx")
	var tx, rx [2]float64
	for i := range tx {
		tx[i], rx[i] = float64(txA2[i]-txA[i]), float64(rxB2[i]-rxB[i])
	}
	t.Logf("one iperf3 flow A -> B: %.1f Mbit/s; A sent %.1f / %.1f MB on lba0 / lba1 (share %.2f), B received %.1f / %.1f MB on lbb0 / lbb1 (share %.2f)",
		res.End.SumReceived.Bits/1e6, tx[0]/1e6, tx[1]/1e6, tx[0]/(tx[0]+tx[1]), rx[0]/1e6, rx[1]/1e6, rx[0]/(rx[0]+rx[1]))
	for i := range tx {
		// weights 3:2: each link carries its share of the one flow (0.6 / 0.4), at both ends
		want := []float64{0.6, 0.4}[i]
		if s := tx[i] / (tx[0] + tx[1]); s < want-0.15 || s > want+0.15 {
			t.Errorf("A's link %d carried %.2f of the flow, want about %.1f", i, s, want)
		}
		if s := rx[i] / (rx[0] + rx[1]); s < want-0.15 || s > want+0.15 {
			t.Errorf("B's link %d received %.2f of the flow, want about %.1f", i, s, want)
		}
	}
	// more than the faster link alone could carry
	if mbit := res.End.SumReceived.Bits / 1e6; mbit < 0.7*float64(bootRates[0]+bootRates[1]) {
		t.Errorf("one flow got %.1f Mbit/s, want at least 0.7 of %d", mbit, bootRates[0]+bootRates[1])
	}

	// the watcher works in its sandbox: link 1's far end goes down, both watchers take path 2 out, back up
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range []*bootHost{A, B} {
				if h.leader != 0 {
					out, _ := h.try(20*time.Second, "linkagg status; journalctl -b --no-pager -u linkagg-watch.service | tail -n 40")
					t.Logf("%s at the failure:\n%s", h.machine, out)
				}
			}
		}
	})
	l.must(10*time.Second, "ip", "-n", B.ns(), "link", "set", bootPrefix+"b1", "down")
	// A's lba1 lost carrier; on B, whose own lbb1 is down, path 2 is pending (its address is on no link that
	// is up). Both watchers took the path out of their sequence.
	for h, want := range map[*bootHost]string{A: "2:" + bootPrefix + "a1=no-carrier", B: "2:" + bootPrefix + "b1=pending"} {
		l.eventually(10*time.Second, h.machine+": path 2 out after lbb1 went down", func() (bool, string) {
			s, _ := h.status()
			return strings.HasSuffix(s.summary(), want) && strings.Contains(s.summary(), "converged=true") && s.Watcher.Running, s.summary()
		})
	}
	if out := A.sh(20*time.Second, fmt.Sprintf("ping -n -c 5 -i 0.2 -W 2 -I %s %s", bootVIP("A"), bootVIP("B"))); !strings.Contains(out, " 0% packet loss") {
		t.Errorf("ping over the one link left:\n%s", out)
	}
	l.must(10*time.Second, "ip", "-n", B.ns(), "link", "set", bootPrefix+"b1", "up")
	for _, h := range []*bootHost{A, B} {
		want := fmt.Sprintf(wantConverged, bootPrefix+strings.ToLower(h.name))
		l.eventually(15*time.Second, h.machine+": path 2 back", func() (bool, string) {
			s, _ := h.status()
			return s.summary() == want, s.summary()
		})
	}
	for _, h := range []*bootHost{A, B} {
		// the new watcher's lines only (0.1.0-1's unit lacked CAP_SYS_ADMIN, so its setns(2) failed)
		pid, _ := h.watcher()
		j := h.sh(10*time.Second, fmt.Sprintf("journalctl -b --no-pager _PID=%d", pid))
		// it wrote the kernel (rule, nft table, rp_filter in /proc/sys/net) when path 2 left and came back
		if !regexp.MustCompile(`tun0: up, 1 of 2 paths active, [1-9]\d* kernel writes`).MatchString(j) ||
			!regexp.MustCompile(`tun0: up, 2 of 2 paths active, [1-9]\d* kernel writes`).MatchString(j) {
			t.Errorf("%s: the watcher did not log its writes when path 2 left and came back:\n%s", h.machine, j)
		}
		if regexp.MustCompile(`(?i)read-only file system|permission denied|operation not permitted|bad system call`).MatchString(j) {
			t.Errorf("%s: the watcher hit its sandbox:\n%s", h.machine, j)
		}
	}

	// reboots: A warm (systemctl reboot: nspawn exits 133 and is started again, as systemd-nspawn@.service
	// does), B cold (poweroff, then boot). Each shutdown's ifdown -a takes the aggregate down.
	A.shutdown("reboot", 133)
	B.shutdown("poweroff", 0)
	for _, h := range []*bootHost{A, B} {
		if left := l.kernelLeftovers(h); len(left) > 0 {
			t.Errorf("%s: after the shutdown linkagg state is left in %s:\n%s", h.machine, h.ns(), strings.Join(left, "\n"))
		}
		h.boot()
	}
	l.checkAggregate("after reboot")
	for _, h := range []*bootHost{A, B} {
		if pid, active := h.watcher(); active != "active" || pid == 0 {
			t.Errorf("%s: after reboot linkagg-watch is %s (pid %d)", h.machine, active, pid)
		}
		if s, _ := h.status(); !s.Watcher.Running {
			t.Errorf("%s: after reboot linkagg status says no watcher runs", h.machine)
		}
	}

	// remove stops the watcher and keeps the conffile; purge leaves no file of the package
	newFiles := strings.Fields(A.sh(10*time.Second, "dpkg -L linkagg-hooks"))
	A.sh(2*time.Minute, "apt-get remove -y linkagg-hooks")
	if pid, active := A.watcher(); active == "active" || pid != 0 {
		t.Errorf("after apt-get remove linkagg-watch is %s with pid %d", active, pid)
	}
	if out, err := A.try(10*time.Second, "pgrep -a -f 'linkagg watch' || ps -eo pid,args | grep '[l]inkagg watch'"); err == nil && strings.TrimSpace(out) != "" {
		t.Errorf("after apt-get remove a watcher still runs: %s", out)
	}
	A.sh(10*time.Second, "test -f /etc/iproute2/rt_protos.d/linkagg.conf && test ! -e /usr/sbin/linkagg")
	A.sh(2*time.Minute, "apt-get purge -y linkagg-hooks")
	if out, _ := A.try(10*time.Second, "dpkg-query -W -f '${db:Status-Abbrev}' linkagg-hooks"); strings.TrimSpace(out) != "" && !strings.Contains(out, "no packages found") {
		t.Errorf("after purge dpkg still knows linkagg-hooks: %q", out)
	}
	var left []string
	for _, p := range append(append(oldFiles, newFiles...), "/run/linkagg", "/etc/systemd/system/multi-user.target.wants/linkagg-watch.service") {
		if p == "/." {
			continue
		}
		// a folder another package owns stays, and so does one it still holds files in
		script := fmt.Sprintf("p=%q; if [ -d \"$p\" ]; then dpkg -S \"$p\" >/dev/null 2>&1 && exit 0; [ -L \"$p\" ] && exit 0; [ -n \"$(ls -A \"$p\")\" ] && exit 0; fi; "+
			"if [ -e \"$p\" ] || [ -L \"$p\" ]; then echo \"$p\"; fi", p)
		if out := strings.TrimSpace(A.sh(10*time.Second, script)); out != "" {
			left = append(left, out)
		}
	}
	// and everything written into A's root since the base root was made, by name
	filepath.Walk(filepath.Join(A.dir, "upper"), func(p string, fi os.FileInfo, err error) error {
		rel := strings.TrimPrefix(p, filepath.Join(A.dir, "upper"))
		if err == nil && strings.Contains(filepath.Base(p), "linkagg") && !strings.HasPrefix(rel, "/root/debs") {
			left = append(left, rel+" (in the overlay)")
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("after apt-get purge these are left:\n%s", strings.Join(left, "\n"))
	}
	t.Logf("remove stopped the watcher; purge left none of the %d + %d paths of 0.1.0-1 and 0.1.0-2", len(oldFiles), len(newFiles))
	t.Logf("boot test done in %s", time.Since(started).Round(time.Second))
}
