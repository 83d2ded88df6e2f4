package apply

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/plan"
)

// Test 1: Apply creates every object (read back via netlink and nftables) and a second Apply writes nothing.
func TestApplyReadBack(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	d := group("a", 0, 1)

	st, err := Status(d)
	e.must(err)
	if st.Converged || len(st.Drift) == 0 {
		t.Fatalf("status before apply says converged:\n%s", st)
	}

	res, err := Apply(d, e.opts())
	e.must(err)
	if res.Writes == 0 || len(res.Ops) != res.Writes {
		t.Fatalf("first apply: %d writes, ops %q", res.Writes, res.Ops)
	}
	t.Logf("first apply: %d writes:\n  %s", res.Writes, strings.Join(res.Ops, "\n  "))

	// TUN
	l, err := netlink.LinkByName("tun0")
	e.must(err)
	a := l.Attrs()
	if !isTun(l) || a.Alias != plan.LinkAlias || a.MTU != 9000 || a.Flags&net.FlagUp == 0 {
		t.Fatalf("tun0: tun=%v alias=%q mtu=%d flags=%v", isTun(l), a.Alias, a.MTU, a.Flags)
	}
	if ok, err := hasAddr(l, "10.99.255.10/32"); err != nil || !ok {
		t.Fatalf("VIP missing on tun0: %v", err)
	}
	// routes and rules
	routes, rules := ownedObjects(t)
	wantRoutes := []string{
		"10.99.255.0/24 dev tun0 src 10.99.255.10 table main",
		"10.99.255.20/32 via 10.99.0.20 dev la0 table 10000",
		"10.99.255.20/32 via 10.99.1.20 dev la1 table 10001",
	}
	if !slices.Equal(routes, wantRoutes) {
		t.Errorf("routes:\n got %q\nwant %q", routes, wantRoutes)
	}
	wantRules := []string{
		"rule -4 fwmark 0x10000000/0xff000000 lookup 10000 pref 1000 proto linkagg",
		"rule -4 fwmark 0x11000000/0xff000000 lookup 10001 pref 1000 proto linkagg",
	}
	if !slices.Equal(rules, wantRules) {
		t.Errorf("rules:\n got %q\nwant %q", rules, wantRules)
	}
	// sysctls
	for _, dev := range []string{"la0", "la1"} {
		if v, _ := readSysctl("net/ipv4/conf/" + dev + "/rp_filter"); v != "2" {
			t.Errorf("rp_filter of %s = %q", dev, v)
		}
	}
	// nft through google/nftables
	c, err := nftables.New()
	e.must(err)
	tab, err := findTable(c, nftables.TableFamilyIPv4, "linkagg_tun0")
	e.must(err)
	if tab == nil {
		t.Fatal("nft table linkagg_tun0 missing")
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	e.must(err)
	var names []string
	tag := NftTag(d.Group, d.Nft)
	for _, ch := range chains {
		if ch.Table.Name != tab.Name {
			continue
		}
		names = append(names, ch.Name)
		rs, err := c.GetRules(tab, ch)
		e.must(err)
		if len(rs) != 1 {
			t.Errorf("chain %s has %d rules", ch.Name, len(rs))
		}
		for _, r := range rs {
			if got, _ := userdata.GetString(r.UserData, userdata.TypeComment); got != tag {
				t.Errorf("rule of %s: user data %q, want %q", ch.Name, got, tag)
			}
		}
		if ch.Name == RouteChain && (ch.Type != nftables.ChainTypeRoute || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookOutput || *ch.Priority != *nftables.ChainPriorityMangle) {
			t.Errorf("chain route: type %v hook %v prio %v", ch.Type, ch.Hooknum, ch.Priority)
		}
	}
	slices.Sort(names)
	if want := []string{"mark_10000000", "mark_11000000", "route"}; !slices.Equal(names, want) {
		t.Errorf("chains %q, want %q", names, want)
	}
	// and as nft prints it
	out := e.nft("list", "table", "ip", "linkagg_tun0")
	t.Logf("nft list table ip linkagg_tun0:\n%s", out)
	for _, want := range []string{
		"type route hook output priority mangle",
		"ip daddr 10.99.255.0/24 numgen inc mod 2 vmap { 0 : goto mark_10000000, 1 : goto mark_11000000 }",
		// (mark & 0x00ffffff) ^ 0x10000000, in nft's canonical form
		"meta mark set meta mark & 0x10ffffff | 0x10000000",
		"meta mark set meta mark & 0x11ffffff | 0x11000000",
		`comment "` + tag + `"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("nft output lacks %q", want)
		}
	}

	st, err = Status(d)
	e.must(err)
	if !st.Converged {
		t.Errorf("status after apply not converged:\n%s", st)
	}
	t.Logf("status:\n%s", st)

	before := e.snapshot()
	res, err = Apply(d, e.opts())
	e.must(err)
	if res.Writes != 0 {
		t.Fatalf("second apply did %d writes: %q", res.Writes, res.Ops)
	}
	if after := e.snapshot(); after != before {
		t.Fatalf("second apply changed state:\n%s", diffLines(before, after))
	}
}

// plantForeign adds state of other software: a wireguard-like rule and table, a static route in our table
// 10000 and an inet filter table.
func (e *env) plantForeign() {
	e.ip("rule", "add", "fwmark", "0xca6c", "lookup", "51820", "pref", "999")
	e.ip("route", "add", "10.50.0.0/24", "via", "10.99.0.20", "dev", "la0", "table", "51820")
	e.ip("route", "add", "10.77.0.0/24", "via", "10.99.0.20", "dev", "la0", "table", "10000", "proto", "static")
	e.ip("route", "add", "10.88.0.0/24", "via", "10.99.1.20", "dev", "la1", "proto", "static")
	e.nft("add", "table", "inet", "filter")
	e.nft("add", "chain", "inet", "filter", "output", "{ type filter hook output priority 0 ; }")
	e.nft("add", "rule", "inet", "filter", "output", "ip", "daddr", "10.1.2.3", "meta", "mark", "set", "0xca6c")
}

// Test 2: Down leaves no residue and never touches foreign state.
func TestDownNoResidue(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	e.plantForeign()
	e.must(writeSysctl("net/ipv4/conf/la1/rp_filter", "1"))
	pre := e.snapshot()

	// Down on nothing
	res, err := Down(group("a", 0, 1), DownOptions{Options: e.opts()})
	e.must(err)
	if res.Writes != 0 {
		t.Fatalf("down on nothing did %d writes: %q", res.Writes, res.Ops)
	}

	d := group("a", 0, 1)
	_, err = Apply(d, e.opts())
	e.must(err)
	if out := e.nft("list", "ruleset"); !strings.Contains(out, "linkagg_tun0") || !strings.Contains(out, "table inet filter") {
		t.Fatalf("ruleset after apply:\n%s", out)
	}

	res, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
	t.Logf("down: %d writes:\n  %s", res.Writes, strings.Join(res.Ops, "\n  "))
	if routes, rules := ownedObjects(t); len(routes)+len(rules) != 0 {
		t.Errorf("residue: routes %q rules %q", routes, rules)
	}
	if l, _ := linkByName("tun0"); l != nil {
		t.Errorf("tun0 still exists")
	}
	post := e.snapshot()
	if post != pre {
		t.Fatalf("state after apply+down differs from before:\n%s", diffLines(pre, post))
	}
	res, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
	if res.Writes != 0 {
		t.Fatalf("second down did %d writes", res.Writes)
	}
}

// Down finds our objects from the kernel tags alone, without the state under RunDir.
func TestDownWithoutState(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	e.plantForeign()
	pre := e.snapshot()
	d := group("a", 0, 1)
	_, err := Apply(d, e.opts())
	e.must(err)
	ents, _ := os.ReadDir(e.run)
	for _, en := range ents {
		os.Remove(filepath.Join(e.run, en.Name()))
	}
	e.must(writeSysctl("net/ipv4/conf/la0/rp_filter", "0")) // the state that would restore it is lost
	e.must(writeSysctl("net/ipv4/conf/la1/rp_filter", "0"))
	_, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
	if post := e.snapshot(); post != pre {
		t.Fatalf("state after down without run dir differs:\n%s", diffLines(pre, post))
	}
}

// Test 3: a failure at every write of a full Apply leaves the kernel as it was: from an empty pre-state,
// from an older 1-path plan (adds next to ours, nft replaced) and from a 2-path plan going to 1 path
// (undo of route/rule deletions and of a sysctl restore).
func TestRollbackEveryWrite(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	e.plantForeign()
	one, two := group("a", 0), group("a", 0, 1)
	cases := []struct {
		name   string
		pre    *plan.Desired
		target plan.Desired
	}{
		{"empty->2", nil, two},
		{"1->2", &one, two},
		{"2->1", &two, one},
	}
	for _, c := range cases {
		reset := func() {
			_, err := Down(two, DownOptions{Options: e.opts()})
			e.must(err)
			if c.pre != nil {
				_, err := Apply(*c.pre, e.opts())
				e.must(err)
			}
		}
		reset()
		want := e.snapshot()
		res, err := Apply(c.target, e.opts())
		e.must(err)
		n := res.Writes
		t.Logf("%s: a full apply does %d writes: %q", c.name, n, res.Ops)
		if n < 3 {
			t.Fatalf("%s: only %d writes", c.name, n)
		}
		reset()
		if got := e.snapshot(); got != want {
			t.Fatalf("%s: reset does not give the pre-state:\n%s", c.name, diffLines(want, got))
		}
		for i := 1; i <= n; i++ {
			res, err := applyFailing(c.target, e.opts(), i)
			if !errors.Is(err, ErrInjected) {
				t.Fatalf("%s FailAt=%d: err %v", c.name, i, err)
			}
			if res.Writes != i-1 {
				t.Errorf("%s FailAt=%d: %d writes before the failure", c.name, i, res.Writes)
			}
			if got := e.snapshot(); got != want {
				t.Fatalf("%s FailAt=%d (%v): state differs from the pre-state:\n%s", c.name, i, err, diffLines(want, got))
			}
		}
		// FailAt past the end: success
		_, err = applyFailing(c.target, e.opts(), n+1)
		e.must(err)
	}
	_, err := Down(two, DownOptions{Options: e.opts()})
	e.must(err)
}

// A sysctl claimed by two groups is restored only when the last one lets go.
func TestSysctlSharedClaim(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	d1 := group("a", 0, 1)
	d2 := plan.Desired{Group: "tun1", Family: d1.Family, TUN: plan.TUN{Name: "tun1"}, VIP: netip.MustParsePrefix("10.99.254.10/32"),
		Sysctls: []plan.Sysctl{{Key: "net/ipv4/conf/la0/rp_filter", Value: "2"}}}
	pre := e.snapshot()
	_, err := Apply(d1, e.opts())
	e.must(err)
	_, err = Apply(d2, e.opts())
	e.must(err)
	_, err = Down(d1, DownOptions{Options: e.opts()})
	e.must(err)
	if v, _ := readSysctl("net/ipv4/conf/la0/rp_filter"); v != "2" {
		t.Errorf("la0 rp_filter = %s while tun1 still claims it", v)
	}
	if v, _ := readSysctl("net/ipv4/conf/la1/rp_filter"); v != "0" {
		t.Errorf("la1 rp_filter = %s, want restored 0", v)
	}
	_, err = Down(d2, DownOptions{Options: e.opts()})
	e.must(err)
	if post := e.snapshot(); post != pre {
		t.Fatalf("after both downs:\n%s", diffLines(pre, post))
	}
	// a claimed interface that disappeared is skipped on restore
	_, err = Apply(d2, e.opts())
	e.must(err)
	l, _ := netlink.LinkByName("la0")
	e.must(netlink.LinkDel(l))
	if _, err := Down(d2, DownOptions{Options: e.opts()}); err != nil {
		t.Fatalf("down with the NIC gone: %v", err)
	}
}

// A foreign route with our destination in our table blocks the Apply, which then undoes everything.
func TestForeignRouteConflict(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	e.ip("route", "add", "10.99.255.20/32", "via", "10.99.1.20", "dev", "la1", "table", "10001", "proto", "static")
	pre := e.snapshot()
	_, err := Apply(group("a", 0, 1), e.opts())
	if err == nil || !strings.Contains(err.Error(), "foreign route") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
	if post := e.snapshot(); post != pre {
		t.Fatalf("state changed:\n%s", diffLines(pre, post))
	}
}

// Test 4: re-plan 2 paths -> 1 path -> 2 paths.
func TestReplan(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	e.must(writeSysctl("net/ipv4/conf/la1/rp_filter", "1"))
	two, one := group("a", 0, 1), group("a", 0)
	_, err := Apply(two, e.opts())
	e.must(err)
	snapTwo := e.snapshot()

	res, err := Apply(one, e.opts())
	e.must(err)
	t.Logf("2->1: %q", res.Ops)
	routes, rules := ownedObjects(t)
	if want := []string{"10.99.255.0/24 dev tun0 src 10.99.255.10 table main", "10.99.255.20/32 via 10.99.0.20 dev la0 table 10000"}; !slices.Equal(routes, want) {
		t.Errorf("routes %q", routes)
	}
	if want := []string{"rule -4 fwmark 0x10000000/0xff000000 lookup 10000 pref 1000 proto linkagg"}; !slices.Equal(rules, want) {
		t.Errorf("rules %q", rules)
	}
	if v, _ := readSysctl("net/ipv4/conf/la1/rp_filter"); v != "1" {
		t.Errorf("la1 rp_filter = %s, want restored 1", v)
	}
	if v, _ := readSysctl("net/ipv4/conf/la0/rp_filter"); v != "2" {
		t.Errorf("la0 rp_filter = %s", v)
	}
	out := e.nft("list", "table", "ip", "linkagg_tun0")
	if !strings.Contains(out, "numgen inc mod 1 vmap { 0 : goto mark_10000000 }") || strings.Contains(out, "mark_11000000") {
		t.Errorf("nft after 2->1:\n%s", out)
	}
	if res, _ := Apply(one, e.opts()); res.Writes != 0 {
		t.Errorf("1-path apply again: %d writes", res.Writes)
	}

	_, err = Apply(two, e.opts())
	e.must(err)
	if got := e.snapshot(); got != snapTwo {
		t.Fatalf("back to 2 paths differs:\n%s", diffLines(snapTwo, got))
	}
	// Nft nil (no path active): our table goes, the rest of the plan stays
	none := group("a")
	_, err = Apply(none, e.opts())
	e.must(err)
	c, _ := nftables.New()
	if tab, _ := findTable(c, nftables.TableFamilyIPv4, "linkagg_tun0"); tab != nil {
		t.Errorf("nft table still there with no active path")
	}
}

// Test 5: a TUN made by the user is used and kept; a veth named tun0 is an error and changes nothing.
func TestUserTUNAndWrongKind(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	e.must(netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "tun0", MTU: 1400}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI}))
	l, _ := netlink.LinkByName("tun0")
	if l.Attrs().MTU != 1400 {
		e.must(netlink.LinkSetMTU(l, 1400))
	}
	pre := e.snapshot()

	res, err := EnsureTUN(plan.TUN{Name: "tun0"}, e.opts())
	e.must(err)
	if res.Writes != 0 {
		t.Fatalf("EnsureTUN on an existing tun did %d writes", res.Writes)
	}
	d := group("a", 0, 1)
	_, err = Apply(d, e.opts())
	e.must(err)
	l, _ = netlink.LinkByName("tun0")
	if l.Attrs().MTU != 9000 || l.Attrs().Alias != "" {
		t.Fatalf("tun0 mtu %d alias %q", l.Attrs().MTU, l.Attrs().Alias)
	}
	_, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
	l, err = netlink.LinkByName("tun0")
	if err != nil {
		t.Fatalf("user's tun0 was deleted: %v", err)
	}
	if l.Attrs().MTU != 1400 {
		t.Errorf("mtu not restored: %d", l.Attrs().MTU)
	}
	if ok, _ := hasAddr(l, "10.99.255.10/32"); ok {
		t.Errorf("VIP we added is still on tun0")
	}
	// we set it up; ifupdown brings it down itself
	e.must(netlink.LinkSetDown(l))
	if post := e.snapshot(); post != pre {
		t.Fatalf("state differs:\n%s", diffLines(pre, post))
	}
	e.must(netlink.LinkDel(l))

	// a veth named tun0
	e.must(netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tun0"}, PeerName: "tun0p"}))
	pre = e.snapshot()
	const want = "tun0 exists and is a veth, not a tun device"
	if _, err := EnsureTUN(plan.TUN{Name: "tun0"}, e.opts()); err == nil || err.Error() != want {
		t.Errorf("EnsureTUN: %v", err)
	}
	if _, err := Apply(d, e.opts()); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Apply: %v", err)
	}
	if _, err := Down(d, DownOptions{Options: e.opts()}); err != nil {
		t.Errorf("Down with a veth tun0: %v", err)
	}
	if post := e.snapshot(); post != pre {
		t.Fatalf("state changed:\n%s", diffLines(pre, post))
	}
}

// EnsureTUN creates our TUN (alias, persistent); Down with KeepTUN keeps it, without removes it.
func TestEnsureTUNKeep(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	res, err := EnsureTUN(plan.TUN{Name: "tun0"}, e.opts())
	e.must(err)
	if res.Writes != 1 {
		t.Fatalf("EnsureTUN: %d writes", res.Writes)
	}
	l, err := netlink.LinkByName("tun0")
	e.must(err)
	tt, ok := l.(*netlink.Tuntap)
	if !ok || tt.Mode != netlink.TUNTAP_MODE_TUN || tt.NonPersist || l.Attrs().Alias != plan.LinkAlias {
		t.Fatalf("tun0: %#v", l)
	}
	d := group("a", 0, 1)
	_, err = Apply(d, e.opts())
	e.must(err)
	_, err = Down(d, DownOptions{Options: e.opts(), KeepTUN: true})
	e.must(err)
	if _, err := netlink.LinkByName("tun0"); err != nil {
		t.Fatalf("KeepTUN: tun0 gone")
	}
	res, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
	if res.Writes != 1 {
		t.Errorf("post-down: %d writes %q", res.Writes, res.Ops)
	}
	if l, _ := linkByName("tun0"); l != nil {
		t.Fatalf("tun0 still there")
	}
}

// Test 6: real packets: A's datagrams to B's VIP alternate between la0 and la1, and B receives them.
func TestPacketsStriped(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	recv := e.peerB()
	defer recv.Close()
	_, err := Apply(group("a", 0, 1), e.opts())
	e.must(err)

	// another program's mark bits (wireguard's 0xca6c) must survive our marking: count them leaving
	e.nft("add", "table", "inet", "obs")
	e.nft("add", "chain", "inet", "obs", "post", "{ type filter hook postrouting priority 0 ; }")
	e.nft("add", "rule", "inet", "obs", "post", "oifname", "la0", "meta", "mark", "0x1000ca6c", "counter")
	e.nft("add", "rule", "inet", "obs", "post", "oifname", "la1", "meta", "mark", "0x1100ca6c", "counter")
	send, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.99.255.10")})
	e.must(err)
	defer send.Close()
	rc, err := send.SyscallConn()
	e.must(err)
	var serr error
	e.must(rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, 0xca6c) }))
	e.must(serr)
	dst := &net.UDPAddr{IP: net.ParseIP("10.99.255.20"), Port: 4789}
	// resolve the gateways' MACs first
	for range 4 {
		_, err := send.WriteToUDP([]byte("warm"), dst)
		e.must(err)
	}
	time.Sleep(300 * time.Millisecond)
	drain(recv)

	tx := func() (uint64, uint64) {
		var v [2]uint64
		for i, n := range []string{"la0", "la1"} {
			l, err := netlink.LinkByName(n)
			e.must(err)
			v[i] = l.Attrs().Statistics.TxPackets
		}
		return v[0], v[1]
	}
	a0, a1 := tx()
	const N = 200
	for i := range N {
		_, err := send.WriteToUDP([]byte(fmt.Sprintf("datagram %d", i)), dst)
		e.must(err)
	}
	time.Sleep(200 * time.Millisecond)
	b0, b1 := tx()
	d0, d1 := b0-a0, b1-a1
	got := drain(recv)
	t.Logf("tx la0 +%d, la1 +%d; B received %d of %d", d0, d1, got, N)
	if d0 < N/2-10 || d1 < N/2-10 || d0+d1 > N+10 {
		t.Errorf("not striped: la0 +%d la1 +%d", d0, d1)
	}
	if got < N-5 {
		t.Errorf("B received %d of %d", got, N)
	}
	// our mark chains counted exactly what they marked: numgen alternates, so warm-up and test datagrams
	// split evenly, and the counters survive a no-op apply (no table replacement)
	_, err = Apply(group("a", 0, 1), e.opts())
	e.must(err)
	rs, err := OpenReadOnly(Options{})
	e.must(err)
	ctr, err := rs.PathCounters(group("a", 0, 1))
	rs.Close()
	e.must(err)
	p0, p1 := ctr[0x10000000], ctr[0x11000000]
	t.Logf("mark chain counters: %+v %+v", p0, p1)
	if p0.Packets+p1.Packets != N+4 || p0.Packets != (N+4)/2 || p0.Bytes < p0.Packets*28 || p1.Bytes < p1.Packets*28 {
		t.Errorf("mark chain counters %+v %+v, want %d packets each with their bytes", p0, p1, (N+4)/2)
	}
	obs := e.nft("list", "table", "inet", "obs")
	var c0, c1 int
	for _, line := range strings.Split(obs, "\n") {
		var n int
		if i := strings.Index(line, "counter packets "); i >= 0 {
			fmt.Sscanf(line[i:], "counter packets %d", &n)
			if strings.Contains(line, "la0") {
				c0 = n
			} else if strings.Contains(line, "la1") {
				c1 = n
			}
		}
	}
	t.Logf("packets leaving with mark 0x1000ca6c on la0: %d, 0x1100ca6c on la1: %d", c0, c1)
	if c0 < N/2-10 || c1 < N/2-10 {
		t.Errorf("foreign mark bits not kept:\n%s", obs)
	}
}

// peerB makes two veth paths, applies B's group and listens for UDP on B's VIP.
func (e *env) peerB() *net.UDPConn {
	e.t.Helper()
	e.veths(2)
	var recv *net.UDPConn
	e.inB(func() {
		_, err := Apply(group("b", 0, 1), Options{RunDir: e.t.TempDir()})
		e.must(err)
		recv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.99.255.20"), Port: 4789})
		e.must(err)
	})
	return recv
}

func drain(c *net.UDPConn) int {
	buf := make([]byte, 2048)
	n := 0
	for {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, _, err := c.ReadFromUDP(buf); err != nil {
			return n
		}
		n++
	}
}

// The run lock times out with a clear message.
func TestLockTimeout(t *testing.T) {
	dir := t.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, err = Apply(group("a", 0), Options{RunDir: dir, LockTimeout: 200 * time.Millisecond})
	want := fmt.Sprintf("another linkagg run holds %s/lock for more than 200ms", dir)
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
}

// Links reports up-ness (admin up), carrier (oper up/unknown) and global addresses with their prefix length.
func TestLinks(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	l, _ := netlink.LinkByName("la1")
	e.must(netlink.LinkSetDown(l))
	links, err := snapshotLinks()
	e.must(err)
	got := map[string]plan.Local{}
	for _, l := range links {
		got[l.Name] = l
	}
	if la0 := got["la0"]; !la0.Up || !la0.Carrier || !slices.Contains(la0.Addrs, netip.MustParsePrefix("10.99.0.10/24")) {
		t.Errorf("la0: %+v", la0)
	}
	if la1 := got["la1"]; la1.Up || la1.Carrier || len(la1.Addrs) != 1 {
		t.Errorf("la1: %+v", la1)
	}
	if lo := got["lo"]; len(lo.Addrs) != 0 {
		t.Errorf("lo has global addresses: %+v", lo)
	}
}

// A peer that cannot use every path takes a sequence of its own (plan.Nft.Peers): packets to it leave only
// by its paths, packets to the other peers keep the full sequence, and the table reads back as converged.
func TestPeerSequences(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	recv := e.peerB()
	defer recv.Close()
	d := group("a", 0, 1)
	// B (.20) can use path 1 only; .30 is reached by no path; .40 and .50 by a sequence of their own (a
	// chain), the rest of the fakenet by the default sequence
	d.Nft.Peers = []plan.PeerSequence{
		{VIPs: []netip.Addr{netip.MustParseAddr("10.99.255.20")}, Sequence: []uint32{0x10000000}},
		{VIPs: []netip.Addr{netip.MustParseAddr("10.99.255.30")}},
		{VIPs: []netip.Addr{netip.MustParseAddr("10.99.255.40"), netip.MustParseAddr("10.99.255.50")}, Sequence: []uint32{0x11000000, 0x10000000, 0x11000000}},
	}
	d.Routes = slices.DeleteFunc(d.Routes, func(r plan.Route) bool { return r.Table == 10001 })
	_, err := Apply(d, e.opts())
	e.must(err)
	out := e.nft("list", "table", "ip", "linkagg_tun0")
	t.Logf("nft list table ip linkagg_tun0:\n%s", out)
	for _, want := range []string{
		"ip daddr vmap { 10.99.255.20 : goto mark_10000000, 10.99.255.30 : accept, 10.99.255.40 : goto peers_2, 10.99.255.50 : goto peers_2 }",
		"numgen inc mod 3 vmap { 0 : goto mark_11000000, 1 : goto mark_10000000, 2 : goto mark_11000000 }",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("nft table lacks %q", want)
		}
	}
	st, err := Status(d)
	e.must(err)
	if !st.Converged {
		t.Fatalf("not converged after apply:\n%s", st)
	}
	if res, err := Apply(d, e.opts()); err != nil || res.Writes != 0 {
		t.Fatalf("second apply: %d writes %q, %v", res.Writes, res.Ops, err)
	}

	send, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.99.255.10")})
	e.must(err)
	defer send.Close()
	tx := func() [2]uint64 {
		var v [2]uint64
		for i, n := range []string{"la0", "la1"} {
			l, err := netlink.LinkByName(n)
			e.must(err)
			v[i] = l.Attrs().Statistics.TxPackets
		}
		return v
	}
	dst := &net.UDPAddr{IP: net.ParseIP("10.99.255.20"), Port: 4789}
	for range 4 {
		_, err := send.WriteToUDP([]byte("warm"), dst)
		e.must(err)
	}
	time.Sleep(300 * time.Millisecond)
	drain(recv)
	before := tx()
	const N = 100
	for i := range N {
		_, err := send.WriteToUDP([]byte(fmt.Sprintf("datagram %d", i)), dst)
		e.must(err)
	}
	time.Sleep(200 * time.Millisecond)
	after := tx()
	got := drain(recv)
	t.Logf("to .20: la0 +%d, la1 +%d; B received %d of %d", after[0]-before[0], after[1]-before[1], got, N)
	if after[0]-before[0] < N || after[1]-before[1] > 5 || got < N-5 {
		t.Errorf("packets to the peer with one usable path left by both links or were lost")
	}

	// the peer back on both paths: the table is replaced by the plain sequence, and both links carry it
	_, err = Apply(group("a", 0, 1), e.opts())
	e.must(err)
	if out := e.nft("list", "table", "ip", "linkagg_tun0"); strings.Contains(out, "daddr vmap") {
		t.Errorf("per-peer map left after the peer is back:\n%s", out)
	}
	before = tx()
	for i := range N {
		_, err := send.WriteToUDP([]byte(fmt.Sprintf("datagram %d", i)), dst)
		e.must(err)
	}
	time.Sleep(200 * time.Millisecond)
	after = tx()
	drain(recv)
	if after[0]-before[0] < N/2-5 || after[1]-before[1] < N/2-5 {
		t.Errorf("not striped again: la0 +%d la1 +%d", after[0]-before[0], after[1]-before[1])
	}
}

// The TUN's gso_max_size (the unit of striping): set on our TUN and on a user's TUN, read back for IPv4
// too (gso_ipv4_max_size follows it), converged on the second apply, and put back on the user's at Down.
func TestTUNGSO(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	d := group("a", 0, 1)
	d.TUN.GSOMaxSize = 16384
	res, err := Apply(d, e.opts())
	e.must(err)
	l, err := netlink.LinkByName("tun0")
	e.must(err)
	if a := l.Attrs(); a.GSOMaxSize != 16384 || (a.GSOIPv4MaxSize != 0 && a.GSOIPv4MaxSize != 16384) {
		t.Fatalf("gso_max_size %d, gso_ipv4_max_size %d after apply (%q)", a.GSOMaxSize, a.GSOIPv4MaxSize, res.Ops)
	}
	if res, err := Apply(d, e.opts()); err != nil || res.Writes != 0 {
		t.Fatalf("second apply: %q %v", res.Ops, err)
	}
	_, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)

	// a TUN the admin made (a pre-up line): changed while the group runs, back to 65536 after Down
	e.ip("tuntap", "add", "mode", "tun", "name", "tun0")
	_, err = Apply(d, e.opts())
	e.must(err)
	l, err = netlink.LinkByName("tun0")
	e.must(err)
	if l.Attrs().GSOMaxSize != 16384 {
		t.Fatalf("user's TUN: gso_max_size %d after apply", l.Attrs().GSOMaxSize)
	}
	st, err := Status(d)
	e.must(err)
	if !st.Converged {
		t.Errorf("not converged:\n%s", st)
	}
	_, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
	l, err = netlink.LinkByName("tun0")
	e.must(err)
	if l.Attrs().GSOMaxSize != 65536 {
		t.Errorf("user's TUN: gso_max_size %d after down, want 65536 back", l.Attrs().GSOMaxSize)
	}
}

// tcp-min-rtt-wlen (a namespace-wide TCP sysctl, only when a group asks for it): set while the group runs,
// kept while a second group claims the same value, and back to the namespace's own value after the last
// Down; a later Apply without the option puts it back too.
func TestTCPMinRTTWlen(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	const key = "net/ipv4/tcp_min_rtt_wlen"
	orig, err := readSysctl(key)
	e.must(err)
	wlen := plan.Sysctl{Key: key, Value: "0"}
	d1 := group("a", 0, 1)
	d1.Sysctls = append(d1.Sysctls, wlen)
	d2 := plan.Desired{Group: "tun1", Family: d1.Family, TUN: plan.TUN{Name: "tun1"}, VIP: netip.MustParsePrefix("10.99.254.10/32"),
		Sysctls: []plan.Sysctl{wlen}}
	pre := e.snapshot()
	_, err = Apply(d1, e.opts())
	e.must(err)
	if v, _ := readSysctl(key); v != "0" {
		t.Fatalf("%s = %s while the group runs, want 0", key, v)
	}
	_, err = Apply(d2, e.opts())
	e.must(err)
	_, err = Down(d1, DownOptions{Options: e.opts()})
	e.must(err)
	if v, _ := readSysctl(key); v != "0" {
		t.Errorf("%s = %s while tun1 still claims it, want 0", key, v)
	}
	_, err = Down(d2, DownOptions{Options: e.opts()})
	e.must(err)
	if v, _ := readSysctl(key); v != orig {
		t.Errorf("%s = %s after the last Down, want %s back", key, v, orig)
	}
	if post := e.snapshot(); post != pre {
		t.Fatalf("after both downs:\n%s", diffLines(pre, post))
	}
	// the option dropped from the configuration while the group runs: the next Apply restores the value
	_, err = Apply(d1, e.opts())
	e.must(err)
	_, err = Apply(group("a", 0, 1), e.opts())
	e.must(err)
	if v, _ := readSysctl(key); v != orig {
		t.Errorf("%s = %s after an Apply without the option, want %s back", key, v, orig)
	}
	_, err = Down(group("a", 0, 1), DownOptions{Options: e.opts()})
	e.must(err)
}

// TestStoppedMeanwhile: a plan made while the TUN was up (an event's snapshot) and applied after the admin
// took the TUN down or deleted it must not bring it back: Apply answers ErrStopped, writes nothing and
// leaves the TUN as the admin left it; the group's own down event then takes it down. A plan made while
// the TUN was down or missing (the group starting) still creates it and sets it up. CI saw the race
// through networkd: a member's routable hook planned, `ip link set tun0 down` ran, and the hook's apply
// set tun0 up again, so tun0's off event found it up and kept the group.
func TestStoppedMeanwhile(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	d := group("a", 0, 1)
	_, err := Apply(d, e.opts())
	e.must(err)
	running := d
	running.TUN.Running = true
	if _, err := Apply(running, e.opts()); err != nil {
		t.Fatalf("a running group's plan on its running TUN: %v", err)
	}
	_, err = Down(d, DownOptions{Options: e.opts(), KeepTUN: true})
	e.must(err)
	l, err := linkByName("tun0")
	e.must(err)
	e.must(netlink.LinkSetDown(l))

	pre := e.snapshot()
	fp, _ := os.ReadFile(filepath.Join(e.run, footprintFile(d.Group)))
	res, err := Apply(running, e.opts())
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("TUN down since the plan: Apply = %v, want ErrStopped", err)
	}
	if res.Writes != 0 {
		t.Errorf("TUN down since the plan: %d writes %q", res.Writes, res.Ops)
	}
	if post := e.snapshot(); post != pre {
		t.Fatalf("TUN down since the plan: the kernel changed:\n%s", diffLines(pre, post))
	}
	if l, _ := linkByName("tun0"); l == nil || l.Attrs().Flags&net.FlagUp != 0 {
		t.Fatalf("TUN down since the plan: tun0 is up again or gone")
	}
	if after, _ := os.ReadFile(filepath.Join(e.run, footprintFile(d.Group))); string(after) != string(fp) {
		t.Errorf("TUN down since the plan: footprint changed from %q to %q", fp, after)
	}

	e.must(netlink.LinkDel(l))
	if _, err := Apply(running, e.opts()); !errors.Is(err, ErrStopped) {
		t.Fatalf("TUN deleted since the plan: Apply = %v, want ErrStopped", err)
	}
	if l, _ := linkByName("tun0"); l != nil {
		t.Fatalf("TUN deleted since the plan: Apply created it again")
	}
	if routes, rules := ownedObjects(t); len(routes)+len(rules) != 0 {
		t.Errorf("TUN deleted since the plan: routes %q rules %q", routes, rules)
	}

	// the group starting: its plan saw no TUN, so Apply creates it and sets it up
	if _, err := Apply(d, e.opts()); err != nil {
		t.Fatalf("starting plan: %v", err)
	}
	if l, _ := linkByName("tun0"); l == nil || l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("starting plan: tun0 missing or down")
	}
	_, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
}
