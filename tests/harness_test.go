// Package tests holds the end-to-end tests: two hosts in network namespaces joined by shaped veth links,
// each configured only through its own /etc/network/interfaces and the real ifup/ifdown running our hooks.
package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

var (
	repoRoot string
	binDir   string // built binaries: linkagg, linkagg-ifupdown
)

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repoRoot = filepath.Dir(filepath.Dir(file))
	if dir := os.Getenv("LINKAGG_TEST_BINDIR"); dir != "" && os.Geteuid() == 0 {
		// the test VM (vm_test.go): the binaries built outside, copied in with this test binary
		binDir = dir
		os.Exit(m.Run())
	}
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "linkagg-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", dir+"/", "./cmd/...")
		cmd.Dir, cmd.Env = repoRoot, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building the binaries: %v\n%s", err, out)
			os.Exit(1)
		}
		binDir = dir
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// needRoot skips without root, except under CI where a skipped end-to-end test is a failure.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("end-to-end tests need root, and CI=true forbids skipping them")
		}
		t.Skip("needs root (network namespaces)")
	}
	for _, tool := range []string{"ip", "nft", "iperf3", "ifup", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (make deps installs it)", tool)
			}
			t.Skipf("%s is not installed (make deps installs it)", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return runCmd(t, exec.Command(name, args...))
}

// runCmd runs c (for a command that needs its own environment) and returns its combined output; on
// failure the test stops with the command line and the output.
func runCmd(t *testing.T, c *exec.Cmd) string {
	t.Helper()
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(c.Args, " "), err, out)
	}
	return string(out)
}

// Lab is a set of hosts (namespaces PREFIX+"A", PREFIX+"B", …): two hosts joined by point-to-point links
// (NewLab), or several hosts whose NICs all plug into one switch (NewSwitchLab).
type Lab struct {
	t      *testing.T
	Prefix string
	Rates  []int // per NIC index, Mbit/s
	Hosts  []string
	dir    string
	nic    func(h string, i int) string // host h's NIC number i
}

// NewLab starts the two hosts with unaddressed, down links; ifupdown configures them from each host's
// interfaces file.
func NewLab(t *testing.T, prefix string, rates ...int) *Lab {
	t.Helper()
	return NewLabWithHook(t, filepath.Join(binDir, "linkagg-ifupdown"), prefix, rates...)
}

// NewLabWithHook is NewLab with the ifupdown hooks pointing at hook (e.g. the binary of the built package).
func NewLabWithHook(t *testing.T, hook, prefix string, rates ...int) *Lab {
	t.Helper()
	needRoot(t)
	l := &Lab{t: t, Prefix: prefix, Rates: rates, Hosts: []string{"A", "B"}, dir: t.TempDir(),
		nic: func(h string, i int) string { return fmt.Sprintf("%s%s%d", prefix, strings.ToLower(h), i) }}
	var rs []string
	for _, r := range rates {
		rs = append(rs, fmt.Sprint(r))
	}
	cmd := exec.Command(filepath.Join(repoRoot, "tests/lab/twohost.sh"), "up", prefix, strings.Join(rs, " "))
	cmd.Env = append(os.Environ(), "ADDR=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("twohost up: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(filepath.Join(repoRoot, "tests/lab/twohost.sh"), "down", prefix).Run() })
	l.installHooks(hook)
	return l
}

// NewSwitchLab starts hosts (e.g. "A B C") with nics NICs each, eth0…, every one plugged into one switch: a
// Linux bridge in namespace PREFIX+"sw", one broadcast domain, each NIC and the switch port toward it shaped
// to rate Mbit/s (tests/lab/switch.sh). The NICs are down and unaddressed, for ifupdown to configure.
func NewSwitchLab(t *testing.T, prefix string, hosts []string, nics, rate int) *Lab {
	t.Helper()
	needRoot(t)
	l := &Lab{t: t, Prefix: prefix, Hosts: hosts, dir: t.TempDir(),
		nic: func(_ string, i int) string { return fmt.Sprintf("eth%d", i) }}
	for range nics {
		l.Rates = append(l.Rates, rate)
	}
	script := filepath.Join(repoRoot, "tests/lab/switch.sh")
	hs := strings.Join(hosts, " ")
	t.Cleanup(func() { exec.Command(script, "down", prefix, hs, fmt.Sprint(nics)).Run() })
	if out, err := exec.Command(script, "up", prefix, hs, fmt.Sprint(nics), fmt.Sprint(rate), "none").CombinedOutput(); err != nil {
		t.Fatalf("switch up: %v\n%s", err, out)
	}
	l.installHooks(filepath.Join(binDir, "linkagg-ifupdown"))
	return l
}

// installHooks lays out each host's /etc/network hook folders as the package does: a symlink to the one
// hook binary in each.
func (l *Lab) installHooks(hook string) {
	for _, h := range l.Hosts {
		etc := l.Etc(h)
		for _, d := range []string{"if-pre-up.d", "if-up.d", "if-down.d", "if-post-down.d"} {
			if err := os.MkdirAll(filepath.Join(etc, d), 0o755); err != nil {
				l.t.Fatal(err)
			}
			if err := os.Symlink(hook, filepath.Join(etc, d, "linkagg")); err != nil {
				l.t.Fatal(err)
			}
		}
	}
}

func (l *Lab) NS(h string) string  { return l.Prefix + h }
func (l *Lab) Etc(h string) string { return filepath.Join(l.dir, "etc-"+h) }

// Link is host h's NIC i: its end of link i, or its i-th NIC on the switch.
func (l *Lab) Link(h string, i int) string { return l.nic(h, i) }

func (l *Lab) WriteInterfaces(h, text string) {
	l.t.Helper()
	if err := os.MkdirAll(l.Etc(h), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.Etc(h), "interfaces"), []byte(text), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// Ifupdown runs the real ifup/ifdown in host h; it returns the output and the error.
func (l *Lab) Ifupdown(h string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(repoRoot, "tests/lab/ifupdown-netns.sh"), append([]string{l.NS(h), l.Etc(h)}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (l *Lab) MustIfupdown(h string, args ...string) string {
	l.t.Helper()
	out, err := l.Ifupdown(h, args...)
	if err != nil {
		l.t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), l.NS(h), err, out)
	}
	return out
}

func (l *Lab) In(h string, args ...string) string {
	l.t.Helper()
	return run(l.t, "ip", append([]string{"netns", "exec", l.NS(h)}, args...)...)
}

// Kernel is what the tests read back from a host.
type Kernel struct {
	Rules  []map[string]any
	Routes []map[string]any // all tables
	Nft    string           // `nft list ruleset`
	Links  []map[string]any
}

func (l *Lab) Kernel(h string) Kernel {
	l.t.Helper()
	var k Kernel
	jsonInto(l.t, l.In(h, "ip", "-j", "rule", "show"), &k.Rules)
	jsonInto(l.t, l.In(h, "ip", "-j", "route", "show", "table", "all"), &k.Routes)
	jsonInto(l.t, l.In(h, "ip", "-j", "link", "show"), &k.Links)
	k.Nft = l.In(h, "nft", "list", "ruleset")
	return k
}

func jsonInto(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("parsing %q: %v", s, err)
	}
}

// Ours returns the rules and routes that carry our protocol (76, "linkagg" where rt_protos names it).
func (k Kernel) Ours() (rules, routes []map[string]any) {
	for _, r := range k.Rules {
		if p := fmt.Sprint(r["protocol"]); p == "76" || p == "linkagg" {
			rules = append(rules, r)
		}
	}
	for _, r := range k.Routes {
		if p := fmt.Sprint(r["protocol"]); p == "76" || p == "linkagg" {
			routes = append(routes, r)
		}
	}
	return
}

func (k Kernel) HasLink(name string) bool {
	for _, l := range k.Links {
		if l["ifname"] == name {
			return true
		}
	}
	return false
}

// TxBytes reads the transmit byte counters of host h's links.
func (l *Lab) TxBytes(h string) []uint64 { return l.nicCounters(h, "tx_bytes") }

// RxBytes reads the receive byte counters of host h's links.
func (l *Lab) RxBytes(h string) []uint64 { return l.nicCounters(h, "rx_bytes") }

func (l *Lab) nicCounters(h, counter string) []uint64 {
	l.t.Helper()
	var out []uint64
	for i := range l.Rates {
		s := strings.TrimSpace(l.In(h, "cat", "/sys/class/net/"+l.Link(h, i)+"/statistics/"+counter))
		var v uint64
		fmt.Sscan(s, &v)
		out = append(out, v)
	}
	return out
}

// Iperf runs one TCP flow from A to dst for secs seconds and returns the received Mbit/s.
func (l *Lab) Iperf(dst string, secs int) float64 {
	l.t.Helper()
	mbit, err := l.iperf(dst, secs, nil, nil)
	if err != nil {
		l.t.Fatalf("iperf3 to %s: %v", dst, err)
	}
	return mbit
}

// iperf runs one iperf3 flow A -> dst (a host of B) for secs seconds, both ends started through wrap (e.g.
// mptcpize run), calls during (if any) one second into the flow, and returns the received Mbit/s and the
// client's error.
func (l *Lab) iperf(dst string, secs int, wrap []string, during func()) (float64, error) {
	l.t.Helper()
	return l.Flow(IperfFlow{From: "A", To: "B", Dst: dst, Secs: secs, Wrap: wrap, During: during})
}

// IperfFlow is one iperf3 TCP flow between two hosts of the lab.
type IperfFlow struct {
	From, To string // hosts: the client sends, the server (on To) receives
	Dst      string // the address the client connects to
	Secs     int
	Omit     int      // seconds at the start not counted (iperf3 -O): slow start
	CC       string   // the sender's congestion control (iperf3 -C): cubic, bbr; "" = the namespace's default
	Wrap     []string // command both ends run under, e.g. mptcpize run
	During   func()   // called one second into the flow
}

// Flow runs f and returns the received Mbit/s and the client's error.
func (l *Lab) Flow(f IperfFlow) (float64, error) {
	l.t.Helper()
	port := fmt.Sprint(5201 + time.Now().Nanosecond()%500)
	srvArgs := append(append([]string{"netns", "exec", l.NS(f.To)}, f.Wrap...), "iperf3", "-s", "-1", "-p", port)
	srv := exec.Command("ip", srvArgs...)
	if err := srv.Start(); err != nil {
		l.t.Fatal(err)
	}
	defer func() {
		// the server exits after one test; if the client failed, it never will
		done := make(chan struct{})
		go func() { srv.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			srv.Process.Kill()
			<-done
		}
	}()
	for i := 0; i < 50 && !strings.Contains(l.In(f.To, "ss", "-ltn"), ":"+port); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	cliArgs := append(append([]string{"netns", "exec", l.NS(f.From), "timeout", fmt.Sprint(f.Secs + 20)}, f.Wrap...),
		"iperf3", "-c", f.Dst, "-p", port, "-t", fmt.Sprint(f.Secs), "-J")
	if f.CC != "" {
		cliArgs = append(cliArgs, "-C", f.CC)
	}
	if f.Omit > 0 {
		cliArgs = append(cliArgs, "-O", fmt.Sprint(f.Omit))
	}
	cli := exec.Command("ip", cliArgs...)
	var out strings.Builder
	cli.Stdout = &out
	if err := cli.Start(); err != nil {
		l.t.Fatal(err)
	}
	if f.During != nil {
		time.Sleep(time.Second)
		f.During()
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

func (l *Lab) Sysctl(h, key string) string {
	l.t.Helper()
	return strings.TrimSpace(l.In(h, "cat", "/proc/sys/"+key))
}
