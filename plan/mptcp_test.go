package plan

import (
	"slices"
	"testing"

	"github.com/linkagg/linkagg-hooks/parser"
)

func mptcpGroup(weights ...int) parser.Group {
	g := seedGroup()
	g.Mode = parser.ModeMPTCP
	if len(weights) > 0 {
		g.Weights = weights
	}
	g.MPTCP = parser.MPTCP{Paths: make([]parser.MPTCPPath, len(g.Tables))}
	return g
}

func TestMPTCPGolden(t *testing.T) {
	knobs := mptcpGroup()
	knobs.MPTCP.Paths[1] = parser.MPTCPPath{Set: true, Flags: parser.MPFlagSubflow | parser.MPFlagBackup}
	knobs.MPTCP.Paths[2] = parser.MPTCPPath{Set: true, Off: true}
	knobs.MPTCP.Scheduler, knobs.MPTCP.Checksum, knobs.MPTCP.PathManager, knobs.MPTCP.SynRetries = "default", "1", "kernel", "2"
	knobs.MPTCP.Primary = 4
	fullmesh := mptcpGroup()
	fullmesh.MPTCP.Fullmesh = true
	for _, tc := range []struct {
		name  string
		group parser.Group
		links []Local
	}{
		{"mptcp-seed", mptcpGroup(), seedLinks()},
		// the heaviest path (3) carries the first subflow
		{"mptcp-weighted", mptcpGroup(1, 2, 3, 1), seedLinks()},
		{"mptcp-knobs", knobs, seedLinks()},
		{"mptcp-fullmesh", fullmesh, seedLinks()},
		// hybrid: striping as in packet mode, MPTCP segments skipped, path sources ahead of the marks
		{"hybrid-weighted", func() parser.Group { g := mptcpGroup(3, 2, 3, 2); g.Mode = parser.ModeHybrid; return g }(), seedLinks()},
		// eth1 has no address: no endpoint and no rule for path 2 (no stale endpoint)
		{"mptcp-eth1-pending", mptcpGroup(), withoutAddrs(seedLinks(), "eth1")},
		// mptcp-transparent: the program is a comment in the commands (only apply makes it)
		{"mptcp-transparent", func() parser.Group {
			g := mptcpGroup()
			g.MPTCP.TransparentUnits = []string{"ssh.service", "user.slice"}
			return g
		}(), seedLinks()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGolden(t, tc.name, Input{Group: tc.group, Links: tc.links})
		})
	}
}

// Mode mptcp: no marks anywhere (a mark could move a subflow's packets to another link), one endpoint and
// one source rule per active path, the VIP pinned to the primary path, MPTCP switched on.
func TestMPTCPInvariants(t *testing.T) {
	d, err := Build(Input{Group: mptcpGroup(1, 3, 1, 1), Links: withoutAddrs(seedLinks(), "eth2")})
	if err != nil {
		t.Fatal(err)
	}
	if d.Nft != nil {
		t.Errorf("nft striping in mode mptcp: %+v", d.Nft)
	}
	var srcs []string
	for _, r := range d.Rules {
		if r.Mark != 0 || r.Src.IsValid() == r.Dst.IsValid() {
			t.Errorf("rule with a mark, or not exactly one of source and destination: %v", r)
		}
		srcs = append(srcs, r.String())
	}
	want := []string{
		"from 10.99.0.10/32 lookup 10000 pref 1001 proto 76",
		"from 10.99.1.10/32 lookup 10001 pref 1001 proto 76",
		"from 10.3.23.10/32 lookup 10003 pref 1001 proto 76",
		"from 10.99.255.10/32 lookup 10001 pref 1001 proto 76", // weight 3: path 2 is primary
		// ping, unconnected UDP: by the primary path, after every source rule
		"to 10.99.255.0/24 lookup 10001 pref 1002 proto 76",
	}
	if !slices.Equal(srcs, want) {
		t.Errorf("rules:\n got %q\nwant %q", srcs, want)
	}
	// the path tables' peer routes prefer the VIP as source: an unbound socket's packet sent by the
	// `to FAKENET` rule leaves from the VIP, not from the primary path's address
	for _, r := range d.Routes {
		if r.Table != MainTable && r.Src != d.VIP.Addr() {
			t.Errorf("route %v: want src %s", r, d.VIP.Addr())
		}
	}
	m := d.MPTCP
	if m == nil || m.Primary != 1 || len(m.Endpoints) != 3 {
		t.Fatalf("mptcp: %+v", m)
	}
	for _, e := range m.Endpoints {
		wantFlags := parser.MPFlagSubflow
		if e.Path == m.Primary {
			wantFlags = 0 // the first subflow already uses it
		}
		if e.Flags != wantFlags || e.Addr != d.Paths[e.Path].Own || e.Dev != d.Paths[e.Path].Dev {
			t.Errorf("endpoint %+v", e)
		}
	}
	if m.Limits != (Limits{Subflows: 2, AddAddrAccepted: 3}) {
		t.Errorf("limits %+v", m.Limits)
	}
	if !slices.Contains(d.Sysctls, Sysctl{Key: "net/mptcp/enabled", Value: "1"}) {
		t.Errorf("sysctls %v", d.Sysctls)
	}
	// a named primary that is pending falls back to the heaviest active path
	g := mptcpGroup()
	g.MPTCP.Primary = 3
	d, _ = Build(Input{Group: g, Links: withoutAddrs(seedLinks(), "eth2")})
	if d.MPTCP.Primary != 0 {
		t.Errorf("primary %d, want 0 when the named path 3 is pending", d.MPTCP.Primary)
	}
	// hybrid: marks and nft as packet mode, plus the MPTCP part; path sources before the fwmark rules, and no
	// rule for the VIP: its MPTCP segments take the primary path's mark (a `from VIP` rule would give plain
	// TCP sockets the primary NIC's route and GSO size)
	g = mptcpGroup()
	g.Mode = parser.ModeHybrid
	d, err = Build(Input{Group: g, Links: seedLinks()})
	if err != nil {
		t.Fatal(err)
	}
	if d.Nft == nil || !d.Nft.SkipMPTCP || d.MPTCP == nil || len(d.Rules) != 4+4 ||
		d.Nft.PinMPTCP == nil || *d.Nft.PinMPTCP != (MPTCPPin{Src: g.VIP, Mark: d.Paths[d.MPTCP.Primary].Mark}) {
		t.Fatalf("hybrid: nft %+v mptcp %+v rules %v", d.Nft, d.MPTCP, d.Rules)
	}
	for _, r := range d.Rules {
		if r.Dst.IsValid() {
			t.Errorf("hybrid: rule %v (its nft chain marks non-MPTCP packets to the fakenets already)", r)
		}
	}
	for _, r := range d.Rules {
		switch {
		case r.Src == d.VIP, r.Src.IsValid() && r.Priority != 999, !r.Src.IsValid() && r.Priority != 1000:
			t.Errorf("hybrid rule priority: %v", r)
		}
	}
}
