package apply

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// An inet6 group: ip6 table, -6 rules, v6 routes; applied, idempotent, removed.
func TestInet6Group(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	for _, k := range []string{"default/disable_ipv6", "all/disable_ipv6"} {
		e.must(writeSysctl("net/ipv6/conf/"+k, "0"))
	}
	e.must(writeSysctl("net/ipv6/conf/default/addr_gen_mode", "1"))
	e.must(writeSysctl("net/ipv6/conf/default/accept_dad", "0"))
	e.veths(2)
	fakenet := netip.MustParsePrefix("fd99:255::/64")
	vip := netip.MustParseAddr("fd99:255::10")
	d := plan.Desired{Group: parser.GroupID("tun0", parser.Inet6), Family: parser.Inet6, Mode: parser.ModePacket,
		TUN: plan.TUN{Name: "tun0"}, VIP: netip.PrefixFrom(vip, 128),
		Routes: []plan.Route{{Table: 254, Dst: fakenet, Dev: "tun0", Src: vip}}}
	var seq []uint32
	for i := range 2 {
		dev := fmt.Sprintf("la%d", i)
		l, err := netlink.LinkByName(dev)
		e.must(err)
		a := mustAddr(fmt.Sprintf("fd99:%d::10/64", i))
		a.Flags = unix.IFA_F_NODAD
		e.must(netlink.AddrAdd(l, a))
		mark := uint32(0x20+i) << 24
		d.Paths = append(d.Paths, plan.Path{Index: i, Table: 20000 + i, Weight: 1, Mark: mark, Dev: dev, State: plan.PathActive})
		d.Routes = append(d.Routes, plan.Route{Table: 20000 + i, Dst: netip.MustParsePrefix("fd99:255::20/128"),
			Gateway: netip.MustParseAddr(fmt.Sprintf("fd99:%d::20", i)), Dev: dev})
		d.Rules = append(d.Rules, plan.Rule{Family: parser.Inet6, Mark: mark, Mask: 0xff000000, Table: 20000 + i, Priority: 1000})
		seq = append(seq, mark, mark) // weight 2:2 -> K = 4
	}
	d.Nft = &plan.Nft{Family: parser.Inet6, Table: "linkagg_tun0", Fakenets: []netip.Prefix{fakenet}, Mask: 0xff000000, Sequence: seq}
	// the kernel adds the local routes of the new addresses once the links are up: wait for both, or the
	// snapshot below races with them
	for i := 0; i < 100; i++ {
		rs, err := listRoutes(netlink.FAMILY_V6)
		e.must(err)
		local := 0
		for _, r := range rs {
			if r.Table == unix.RT_TABLE_LOCAL && r.Dst != nil && (r.Dst.IP.String() == "fd99::10" || r.Dst.IP.String() == "fd99:1::10") {
				local++
			}
		}
		if local == 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	pre := e.snapshot()

	res, err := Apply(d, e.opts())
	e.must(err)
	t.Logf("%d writes: %q", res.Writes, res.Ops)
	routes, rules := ownedObjects(t)
	if want := []string{
		"fd99:255::/64 dev tun0 src fd99:255::10 table main",
		"fd99:255::20/128 via fd99:1::20 dev la1 table 20001",
		"fd99:255::20/128 via fd99::20 dev la0 table 20000",
	}; !slices.Equal(routes, want) {
		t.Errorf("routes %q", routes)
	}
	if len(rules) != 2 || !strings.HasPrefix(rules[0], "rule -6 fwmark 0x20000000/0xff000000 lookup 20000") {
		t.Errorf("rules %q", rules)
	}
	out := e.nft("list", "table", "ip6", "linkagg_tun0")
	if !strings.Contains(out, "ip6 daddr fd99:255::/64 numgen inc mod 4 vmap { 0 : goto mark_20000000, 1 : goto mark_20000000, 2 : goto mark_21000000, 3 : goto mark_21000000 }") {
		t.Errorf("nft:\n%s", out)
	}
	res, err = Apply(d, e.opts())
	e.must(err)
	if res.Writes != 0 {
		t.Errorf("second apply: %q", res.Ops)
	}
	st, err := Status(d)
	e.must(err)
	if !st.Converged {
		t.Errorf("status:\n%s", st)
	}
	// a peer that can use path 2 only, and one reached by none: the ip6 per-peer map
	d.Nft.Peers = []plan.PeerSequence{{VIPs: []netip.Addr{netip.MustParseAddr("fd99:255::20")}, Sequence: []uint32{0x21000000}},
		{VIPs: []netip.Addr{netip.MustParseAddr("fd99:255::30")}}}
	_, err = Apply(d, e.opts())
	e.must(err)
	if out := e.nft("list", "table", "ip6", "linkagg_tun0"); !strings.Contains(out, "ip6 daddr vmap { fd99:255::20 : goto mark_21000000, fd99:255::30 : accept }") {
		t.Errorf("no ip6 per-peer map:\n%s", out)
	}
	if st, err := Status(d); err != nil || !st.Converged {
		t.Errorf("status with a per-peer map: %v\n%s", err, st)
	}
	_, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
	if post := e.snapshot(); post != pre {
		t.Fatalf("after down:\n%s", diffLines(pre, post))
	}
}
