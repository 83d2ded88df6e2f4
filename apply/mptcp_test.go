package apply

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// mptcpDesired is group("a", active...) in mode mptcp: no marks or nft, a source rule per active path and
// for the VIP (path 0 primary when active), endpoints (the primary without flags), MPTCP on, checksum on.
func mptcpDesired(active ...int) plan.Desired {
	d := group("a", active...)
	d.Mode, d.Nft, d.Rules = parser.ModeMPTCP, nil, nil
	m := &plan.MPTCP{Primary: -1}
	for _, i := range active {
		p := d.Paths[i]
		if m.Primary < 0 {
			m.Primary = i
		}
		flags := parser.MPFlagSubflow
		if i == m.Primary {
			flags = 0
		}
		m.Endpoints = append(m.Endpoints, plan.Endpoint{Path: i, Addr: p.Own, Dev: p.Dev, Flags: flags})
		d.Rules = append(d.Rules, plan.Rule{Family: parser.Inet, Src: netip.PrefixFrom(p.Own, 32), Table: p.Table, Priority: 1001})
	}
	if m.Primary >= 0 {
		d.Rules = append(d.Rules, plan.Rule{Family: parser.Inet, Src: d.VIP, Table: d.Paths[m.Primary].Table, Priority: 1001},
			plan.Rule{Family: parser.Inet, Dst: netip.MustParsePrefix("10.99.255.0/24"), Table: d.Paths[m.Primary].Table, Priority: 1002})
	}
	for i := range d.Routes {
		if d.Routes[i].Table != 254 {
			d.Routes[i].Src = d.VIP.Addr()
		}
	}
	m.Limits = plan.Limits{Subflows: uint32(len(active)), AddAddrAccepted: uint32(len(active))}
	d.MPTCP = m
	d.Sysctls = append(d.Sysctls, plan.Sysctl{Key: "net/mptcp/enabled", Value: "1"}, plan.Sysctl{Key: "net/mptcp/checksum_enabled", Value: "1"})
	return d
}

// mptcpSnapshot adds to e.snapshot what MPTCP mode touches: endpoints, limits, net.mptcp sysctls.
func (e *env) mptcpSnapshot() string {
	e.t.Helper()
	var b strings.Builder
	b.WriteString(e.snapshot())
	eps, err := listEndpoints()
	e.must(err)
	for _, ep := range eps {
		fmt.Fprintf(&b, "endpoint %+v\n", ep)
	}
	l, err := getLimits()
	e.must(err)
	fmt.Fprintf(&b, "limits %+v\n", l)
	for _, k := range []string{"net/mptcp/enabled", "net/mptcp/checksum_enabled"} {
		v, err := readSysctl(k)
		e.must(err)
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	return b.String()
}

// mptcpPre is a host with MPTCP off, zero limits and an endpoint of other software.
func (e *env) mptcpPre() {
	e.plantForeign()
	e.must(writeSysctl("net/mptcp/enabled", "0"))
	e.must(setLimits(plan.Limits{}))
	e.must(addEndpoint(mpEndpoint{ID: 5, Addr: netip.MustParseAddr("10.77.0.1"), Flags: parser.MPFlagSignal}))
}

// Apply makes the endpoints (ids in the reserved range), raises the limits, pins each source to its table;
// a second Apply writes nothing; Down restores everything and keeps the foreign endpoint.
func TestMPTCPApplyDown(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	e.mptcpPre()
	pre := e.mptcpSnapshot()
	d := mptcpDesired(0, 1)
	res, err := Apply(d, e.opts())
	e.must(err)
	t.Logf("apply: %d writes:\n  %s", res.Writes, strings.Join(res.Ops, "\n  "))
	got, err := readOnly(func(s *Session) ([]string, error) {
		eps, err := s.listEndpoints()
		var out []string
		for _, ep := range eps {
			out = append(out, s.describeEndpoint(ep))
		}
		return out, err
	})
	e.must(err)
	want := []string{"10.77.0.1 id 5 signal", "10.99.0.10 id 200 none dev la0", "10.99.1.10 id 201 subflow dev la1"}
	if !slices.Equal(got, want) {
		t.Errorf("endpoints:\n got %q\nwant %q", got, want)
	}
	if l, _ := getLimits(); l != (plan.Limits{Subflows: 2, AddAddrAccepted: 2}) {
		t.Errorf("limits %+v", l)
	}
	_, rules := ownedObjects(t)
	wantRules := []string{
		"rule -4 from 10.99.0.10/32 lookup 10000 pref 1001 proto linkagg",
		"rule -4 from 10.99.1.10/32 lookup 10001 pref 1001 proto linkagg",
		"rule -4 from 10.99.255.10/32 lookup 10000 pref 1001 proto linkagg",
		"rule -4 to 10.99.255.0/24 lookup 10000 pref 1002 proto linkagg",
	}
	if !slices.Equal(rules, wantRules) {
		t.Errorf("rules:\n got %q\nwant %q", rules, wantRules)
	}
	// the kernel's own lookups: a socket without a source (ping, unconnected UDP) goes by the primary path
	// from the VIP, not into the TUN; a subflow from path 2's address stays on path 2
	for _, c := range []struct{ src, dev, prefsrc string }{{"", "la0", "10.99.255.10"}, {"10.99.1.10", "la1", ""}, {"10.99.255.10", "la0", ""}} {
		o := &netlink.RouteGetOptions{}
		if c.src != "" {
			o.SrcAddr = net.ParseIP(c.src)
		}
		rs, err := netlink.RouteGetWithOptions(net.ParseIP("10.99.255.20"), o)
		e.must(err)
		l, err := netlink.LinkByName(c.dev)
		e.must(err)
		if len(rs) != 1 || rs[0].LinkIndex != l.Attrs().Index || (c.prefsrc != "" && rs[0].Src.String() != c.prefsrc) {
			t.Errorf("route get 10.99.255.20 from %q: %+v, want dev %s src %s", c.src, rs, c.dev, c.prefsrc)
		}
	}
	st, err := Status(d)
	e.must(err)
	if !st.Converged || st.MPTCP == nil || len(st.MPTCP.Endpoints) != 3 {
		t.Errorf("status after apply:\n%s", st)
	}
	if res, err := Apply(d, e.opts()); err != nil || res.Writes != 0 {
		t.Errorf("second apply: %d writes %q, %v", res.Writes, res.Ops, err)
	}
	// an endpoint of ours that drifted (flags changed by hand) is replaced
	e.ip("mptcp", "endpoint", "change", "id", "201", "backup")
	if st, _ := Status(d); st.Converged {
		t.Errorf("status does not see the changed endpoint:\n%s", st)
	}
	_, err = Apply(d, e.opts())
	e.must(err)
	if st, _ := Status(d); !st.Converged {
		t.Errorf("not converged after re-apply:\n%s", st)
	}
	_, err = Down(d, DownOptions{Options: e.opts()})
	e.must(err)
	if post := e.mptcpSnapshot(); post != pre {
		t.Fatalf("state after apply+down differs:\n%s", diffLines(pre, post))
	}
}

// A failure at every write leaves the kernel, endpoints, limits and state files as they were.
func TestMPTCPRollbackEveryWrite(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	e.mptcpPre()
	one, two := mptcpDesired(0), mptcpDesired(0, 1)
	packet := group("a", 0, 1)
	// hybrid: the packet-mode marks and nft (skipping MPTCP segments) plus the MPTCP part
	hybrid := mptcpDesired(0, 1)
	nft := *packet.Nft
	nft.SkipMPTCP = true
	nft.PinMPTCP = &plan.MPTCPPin{Src: hybrid.VIP.Addr(), Mark: nft.Sequence[0]}
	hybrid.Mode, hybrid.Nft = parser.ModeHybrid, &nft
	hybrid.Rules = append(slices.Clone(packet.Rules), hybrid.Rules...)
	for _, c := range []struct {
		name   string
		pre    *plan.Desired
		target plan.Desired
	}{
		{"empty->2", nil, two},
		{"1->2", &one, two},
		{"2->1", &two, one},
		{"packet->mptcp", &packet, two},
		{"mptcp->packet", &two, packet},
		{"mptcp->hybrid", &two, hybrid},
		{"hybrid->packet", &hybrid, packet},
	} {
		reset := func() {
			_, err := Down(two, DownOptions{Options: e.opts()})
			e.must(err)
			if c.pre != nil {
				_, err := Apply(*c.pre, e.opts())
				e.must(err)
			}
		}
		reset()
		want := e.mptcpSnapshot()
		res, err := Apply(c.target, e.opts())
		e.must(err)
		n := res.Writes
		t.Logf("%s: %d writes: %q", c.name, n, res.Ops)
		reset()
		for i := 1; i <= n; i++ {
			if _, err := applyFailing(c.target, e.opts(), i); !errors.Is(err, ErrInjected) {
				t.Fatalf("%s FailAt=%d: err %v", c.name, i, err)
			}
			if got := e.mptcpSnapshot(); got != want {
				t.Fatalf("%s FailAt=%d: state differs from the pre-state:\n%s", c.name, i, diffLines(want, got))
			}
		}
	}
	_, err := Down(two, DownOptions{Options: e.opts()})
	e.must(err)
}
