package apply

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("test needs root (CI=true: not skipping)")
	}
	t.Skip("test needs root")
}

// env is a test in its own network namespaces: A (the thread's, where we apply) and B (the peers).
type env struct {
	t        *testing.T
	orig     netns.NsHandle
	a, b     netns.NsHandle
	hb       *netlink.Handle // netlink in B
	run      string
	restored bool
}

// newEnv locks the thread, moves it into a fresh namespace A and makes a second namespace B. The caller
// must defer e.close().
func newEnv(t *testing.T) *env {
	t.Helper()
	requireRoot(t)
	runtime.LockOSThread()
	e := &env{t: t, run: t.TempDir()}
	var err error
	if e.orig, err = netns.Get(); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	if e.b, err = netns.New(); err != nil {
		e.close()
		t.Fatal(err)
	}
	if e.a, err = netns.New(); err != nil {
		e.close()
		t.Fatal(err)
	}
	if e.hb, err = netlink.NewHandleAt(e.b); err != nil {
		e.close()
		t.Fatal(err)
	}
	// no IPv6 autoconfiguration: snapshots must not change by themselves
	for _, k := range []string{"net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"} {
		e.must(writeSysctl(k, "1"))
	}
	lo, err := netlink.LinkByName("lo")
	e.must(err)
	e.must(netlink.LinkSetUp(lo))
	e.inB(func() {
		for _, k := range []string{"net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"} {
			e.must(writeSysctl(k, "1"))
		}
	})
	lob, err := e.hb.LinkByName("lo")
	e.must(err)
	e.must(e.hb.LinkSetUp(lob))
	return e
}

func (e *env) close() {
	if e.hb != nil {
		e.hb.Close()
	}
	if e.orig.IsOpen() {
		if err := netns.Set(e.orig); err != nil {
			// the thread stays in a test namespace: never give it back to the runtime
			e.t.Errorf("restoring the namespace: %v", err)
			return
		}
	}
	for _, h := range []netns.NsHandle{e.a, e.b, e.orig} {
		if h.IsOpen() {
			h.Close()
		}
	}
	runtime.UnlockOSThread()
}

func (e *env) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

// inB runs f with the thread in namespace B.
func (e *env) inB(f func()) {
	e.t.Helper()
	e.must(netns.Set(e.b))
	defer func() {
		if err := netns.Set(e.a); err != nil {
			panic(err)
		}
	}()
	f()
}

// veths makes la<i>/lb<i> pairs, la in A with 10.99.<i>.10/24, lb in B with 10.99.<i>.20/24, all up.
func (e *env) veths(n int) {
	e.t.Helper()
	for i := range n {
		la, lb := fmt.Sprintf("la%d", i), fmt.Sprintf("lb%d", i)
		e.must(netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: la}, PeerName: lb, PeerNamespace: netlink.NsFd(int(e.b))}))
		l, err := netlink.LinkByName(la)
		e.must(err)
		e.must(netlink.AddrAdd(l, mustAddr(fmt.Sprintf("10.99.%d.10/24", i))))
		e.must(netlink.LinkSetUp(l))
		p, err := e.hb.LinkByName(lb)
		e.must(err)
		e.must(e.hb.AddrAdd(p, mustAddr(fmt.Sprintf("10.99.%d.20/24", i))))
		e.must(e.hb.LinkSetUp(p))
	}
	// carrier comes asynchronously; snapshots must not see it change
	for i := range n {
		name := fmt.Sprintf("la%d", i)
		for try := 0; ; try++ {
			l, err := netlink.LinkByName(name)
			e.must(err)
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if try == 200 {
				e.t.Fatalf("%s: no carrier", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(20 * time.Millisecond)
}

func mustAddr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

func (e *env) opts() Options { return Options{RunDir: e.run} }

// group makes the test group as seen from side "a" (own .10, peer .20 via la*) or "b" (own .20, peer .10
// via lb*). active lists the active paths; the others are pending (still listed, so their tables stay
// the group's).
func group(side string, active ...int) plan.Desired {
	own, peer, pfx := 10, 20, "la"
	if side == "b" {
		own, peer, pfx = 20, 10, "lb"
	}
	vip := netip.MustParseAddr(fmt.Sprintf("10.99.255.%d", own))
	peerVIP := netip.MustParseAddr(fmt.Sprintf("10.99.255.%d", peer))
	fakenet := netip.MustParsePrefix("10.99.255.0/24")
	d := plan.Desired{
		Group:  "tun0",
		Family: parser.Inet,
		Mode:   parser.ModePacket,
		TUN:    plan.TUN{Name: "tun0", MTU: 9000},
		VIP:    netip.PrefixFrom(vip, 32),
		Routes: []plan.Route{{Table: 254, Dst: fakenet, Dev: "tun0", Src: vip}},
	}
	var seq []uint32
	for i := range 2 {
		mark := uint32(0x10+i) << 24
		p := plan.Path{Index: i, Table: 10000 + i, Weight: 1, Mark: mark,
			Own: netip.MustParseAddr(fmt.Sprintf("10.99.%d.%d", i, own)), State: plan.PathPending, Reason: "test"}
		if slices.Contains(active, i) {
			p.State, p.Reason, p.Dev = plan.PathActive, "", fmt.Sprintf("%s%d", pfx, i)
			d.Routes = append(d.Routes, plan.Route{Table: p.Table, Dst: netip.PrefixFrom(peerVIP, 32),
				Gateway: netip.MustParseAddr(fmt.Sprintf("10.99.%d.%d", i, peer)), Dev: p.Dev})
			d.Rules = append(d.Rules, plan.Rule{Family: parser.Inet, Mark: mark, Mask: 0xff000000, Table: p.Table, Priority: 1000})
			d.Sysctls = append(d.Sysctls, plan.Sysctl{Key: "net/ipv4/conf/" + p.Dev + "/rp_filter", Value: "2"})
			seq = append(seq, mark)
		}
		d.Paths = append(d.Paths, p)
	}
	if len(seq) > 0 {
		d.Nft = &plan.Nft{Family: parser.Inet, Table: "linkagg_tun0", Fakenets: []netip.Prefix{fakenet}, Mask: 0xff000000, Sequence: seq}
	}
	return d
}

// snapshot prints the whole kernel state of namespace A that apply could touch, plus the run dir.
func (e *env) snapshot() string {
	e.t.Helper()
	var b strings.Builder
	links, err := netlink.LinkList()
	e.must(err)
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Name < links[j].Attrs().Name })
	for _, l := range links {
		a := l.Attrs()
		fmt.Fprintf(&b, "link %s type=%s mtu=%d up=%v alias=%q\n", a.Name, linkKind(l), a.MTU, a.Flags&net.FlagUp != 0, a.Alias)
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		e.must(err)
		var as []string
		for _, ad := range addrs {
			as = append(as, fmt.Sprintf("  addr %s scope=%d flags=%d", ad.IPNet, ad.Scope, ad.Flags))
		}
		sort.Strings(as)
		for _, s := range as {
			b.WriteString(s + "\n")
		}
	}
	var lines []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := listRoutes(fam)
		e.must(err)
		for _, r := range rs {
			lines = append(lines, fmt.Sprintf("route %s table=%d proto=%d scope=%d type=%d prio=%d flags=%d", describeRouteKey(r), r.Table, r.Protocol, r.Scope, r.Type, r.Priority, r.Flags))
		}
		rules, err := listRules(fam)
		e.must(err)
		for _, r := range rules {
			k := keyOfRule(r)
			lines = append(lines, fmt.Sprintf("rule fam=%d pref=%d mark=%#x/%#x table=%d proto=%d", fam, r.Priority, k.Mark, k.Mask, r.Table, r.Protocol))
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	b.WriteString(e.nft("list", "ruleset"))
	for _, k := range []string{"all", "default", "lo", "la0", "la1"} {
		v, err := readSysctl("net/ipv4/conf/" + k + "/rp_filter")
		if err == nil {
			fmt.Fprintf(&b, "sysctl %s rp_filter=%s\n", k, v)
		}
	}
	ents, _ := os.ReadDir(e.run)
	for _, en := range ents {
		if en.Name() == "lock" {
			continue
		}
		c, _ := os.ReadFile(filepath.Join(e.run, en.Name()))
		fmt.Fprintf(&b, "file %s:\n%s\n", en.Name(), c)
	}
	return b.String()
}

func describeRouteKey(r netlink.Route) string {
	k := keyOfRoute(r)
	dev := fmt.Sprint(k.Dev)
	if l, err := netlink.LinkByIndex(k.Dev); err == nil {
		dev = l.Attrs().Name
	}
	return fmt.Sprintf("%s gw=%s dev=%s src=%s", k.Dst, k.Gw, dev, k.Src)
}

// nft runs the nft binary in namespace A (the locked thread's).
func (e *env) nft(args ...string) string {
	e.t.Helper()
	out, err := exec.Command("nft", args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("nft %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (e *env) ip(args ...string) {
	e.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("ip %v: %v\n%s", args, err, out)
	}
}

// ours lists the proto-76 routes and rules of namespace A.
func ownedObjects(t *testing.T) (routes []string, rules []string) {
	t.Helper()
	rs, err := listRoutes(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenReadOnly(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, r := range rs {
		if r.Protocol == plan.RouteProtocol {
			routes = append(routes, s.describeRoute(r))
		}
	}
	rl, err := listRules(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rl {
		if r.Protocol == plan.RouteProtocol {
			rules = append(rules, describeRule(r.Family, keyOfRule(r)))
		}
	}
	sort.Strings(routes)
	sort.Strings(rules)
	return
}

func diffLines(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for _, l := range al {
		if !slices.Contains(bl, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range bl {
		if !slices.Contains(al, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// applyFailing is Apply with the n-th kernel write of its session failing (ErrInjected).
func applyFailing(d plan.Desired, o Options, n int) (Result, error) {
	s, err := Open(o)
	if err != nil {
		return Result{}, err
	}
	defer s.Close()
	s.failAt = n
	return s.Apply(d)
}

// readOnly runs f on a read-only session of the calling thread's namespace (tests read the kernel back).
func readOnly[T any](f func(s *Session) (T, error)) (T, error) {
	s, err := OpenReadOnly(Options{})
	if err != nil {
		var zero T
		return zero, err
	}
	defer s.Close()
	return f(s)
}

var procOnly = &Session{proc: "/proc/sys"}

func readSysctl(key string) (string, error) { return procOnly.readSysctl(key) }
func writeSysctl(key, v string) error       { return procOnly.writeSysctl(key, v) }

func hasAddr(l netlink.Link, p string) (bool, error) {
	return readOnly(func(s *Session) (bool, error) { return s.hasAddr(l, p) })
}
func linkByName(name string) (netlink.Link, error) {
	return readOnly(func(s *Session) (netlink.Link, error) { return s.linkByName(name) })
}
func snapshotLinks() ([]plan.Local, error) { return readOnly((*Session).Links) }
func listRoutes(fam int) ([]netlink.Route, error) {
	return readOnly(func(s *Session) ([]netlink.Route, error) { return s.listRoutes(fam) })
}
func listRules(fam int) ([]netlink.Rule, error) {
	return readOnly(func(s *Session) ([]netlink.Rule, error) { return s.listRules(fam) })
}
func listEndpoints() ([]mpEndpoint, error) { return readOnly((*Session).listEndpoints) }
func getLimits() (plan.Limits, error)      { return readOnly((*Session).getLimits) }
func setLimits(l plan.Limits) error {
	_, err := readOnly(func(s *Session) (struct{}, error) { return struct{}{}, s.setLimits(l) })
	return err
}
func addEndpoint(e mpEndpoint) error {
	_, err := readOnly(func(s *Session) (struct{}, error) { return struct{}{}, s.addEndpoint(e) })
	return err
}
