package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/linkagg/linkagg-hooks/parser"
)

// MPTCP is the kernel MPTCP state of a group in mode mptcp or hybrid: one in-kernel path manager endpoint
// per active path (this host's address on it), the limits the endpoints need, and which path carries the
// first subflow (the one from the VIP). The per-source rules that pin each subflow to its link are in
// Desired.Rules (Rule.Src), the net.mptcp.* knobs in Desired.Sysctls.
type MPTCP struct {
	Endpoints []Endpoint
	Limits    Limits
	Primary   int // index of the path the VIP's first subflow follows; -1 when no path is active
}

// Endpoint is one `ip mptcp endpoint` we own. The kernel ID is chosen at apply time from our reserved range.
type Endpoint struct {
	Path  int // index into Desired.Paths
	Addr  netip.Addr
	Dev   string
	Flags uint32 // parser.MPFlag* bits
}

// Limits are `ip mptcp limits`; apply only ever raises the kernel's values to these.
type Limits struct {
	Subflows        uint32
	AddAddrAccepted uint32
}

// maxMPTCPLimit is the kernel's cap on both limits (MPTCP_PM_ADDR_MAX).
const maxMPTCPLimit = 8

// buildMPTCP adds the MPTCP part of d. Each active path gets an endpoint on our address and a rule
// `from OWN lookup TABLE`, so a subflow opened from that address leaves by that path's gateway (the tables
// already route the peers' VIPs per path). The VIP gets `from VIP lookup TABLE_primary`: a connection to a
// peer's VIP starts on one path, and no packet mark may ever move its packets elsewhere. The primary path's
// endpoint has no flag by default: the first subflow already uses that path, and a `subflow` endpoint
// there would open a second subflow on the same link.
func buildMPTCP(g parser.Group, d *Desired, active []int, bits int) {
	m := &MPTCP{Primary: -1}
	if len(active) > 0 {
		m.Primary = active[0]
		for _, i := range active {
			if d.Paths[i].Weight > d.Paths[m.Primary].Weight {
				m.Primary = i
			}
		}
		if p := g.MPTCP.Primary - 1; p >= 0 && p < len(d.Paths) && d.Paths[p].State == PathActive {
			m.Primary = p
		}
	}
	// The VIP's rule comes after the fwmark rules of mode hybrid (a striped packet follows its mark); the
	// rules of the path addresses come before them, so a subflow from a path address stays on its link even
	// if one of its segments lacked the MPTCP option and was marked.
	vipPrio, srcPrio := g.RulePriority+1, g.RulePriority+1
	if g.Mode == parser.ModeHybrid && g.RulePriority > 1 {
		srcPrio = g.RulePriority - 1
	}
	var subflows uint32
	for _, i := range active {
		p := d.Paths[i]
		cfg := parser.MPTCPPath{}
		if i < len(g.MPTCP.Paths) {
			cfg = g.MPTCP.Paths[i]
		}
		if cfg.Off {
			continue // v0.95 `multipath off`: MPTCP leaves this path alone
		}
		flags := cfg.Flags
		if !cfg.Set {
			flags = parser.MPFlagSubflow
			if i == m.Primary {
				flags = 0
			}
			if g.MPTCP.Fullmesh {
				flags |= parser.MPFlagFullmesh
			}
		}
		if flags&parser.MPFlagSubflow != 0 {
			subflows++
		}
		m.Endpoints = append(m.Endpoints, Endpoint{Path: i, Addr: p.Own, Dev: p.Dev, Flags: flags})
		d.Rules = append(d.Rules, Rule{Family: g.Family, Src: netip.PrefixFrom(p.Own, bits), Table: p.Table, Priority: srcPrio})
	}
	switch {
	case m.Primary < 0:
	case g.Mode == parser.ModeHybrid && d.Nft != nil:
		// the first subflow follows the primary path by its mark (Nft.PinMPTCP), so that plain TCP sockets
		// keep the TUN as their route, and its GSO size
		d.Nft.PinMPTCP = &MPTCPPin{Src: g.VIP, Mark: d.Paths[m.Primary].Mark}
	default:
		primary := d.Paths[m.Primary].Table
		d.Rules = append(d.Rules, Rule{Family: g.Family, Src: d.VIP, Table: primary, Priority: vipPrio})
		if g.Mode == parser.ModeMPTCP {
			nonTCP(g, d, primary, vipPrio+1)
		}
	}
	n := uint32(len(active))
	if g.MPTCP.Fullmesh {
		subflows = n * n // fullmesh: every local endpoint to every address the peer has
	}
	m.Limits = Limits{Subflows: min(subflows, maxMPTCPLimit), AddAddrAccepted: min(n, maxMPTCPLimit)}
	d.MPTCP = m
	if g.MPTCP.TransparentAll || len(g.MPTCP.TransparentUnits) > 0 {
		d.Transparent = &Transparent{All: g.MPTCP.TransparentAll, Units: slices.Clone(g.MPTCP.TransparentUnits)}
	}

	d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/mptcp/enabled", Value: "1"})
	if v := g.MPTCP.Checksum; v != "" {
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/mptcp/checksum_enabled", Value: v})
	}
	if v := g.MPTCP.Scheduler; v != "" {
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/mptcp/scheduler", Value: v})
	}
	if v := g.MPTCP.PathManager; v != "" {
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/mptcp/path_manager", Value: v})
	}
	if v := g.MPTCP.SynRetries; v != "" {
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/mptcp/syn_retrans_before_tcp_fallback", Value: v})
	}
}

// Commands renders the MPTCP part as `ip mptcp` commands.
func (m *MPTCP) Commands(paths []Path) []string {
	var out []string
	if m.Primary >= 0 {
		out = append(out, fmt.Sprintf("# mptcp: first subflow (from the VIP) on path %d", m.Primary+1))
	}
	for _, e := range m.Endpoints {
		flags := ""
		for _, n := range parser.MPFlagNames {
			if e.Flags&n.Bit != 0 {
				flags += " " + n.Name
			}
		}
		out = append(out, fmt.Sprintf("ip mptcp endpoint add %s dev %s%s   # id from 200..254 (ours)", e.Addr, e.Dev, flags))
	}
	out = append(out, fmt.Sprintf("ip mptcp limits set subflows %d add_addr_accepted %d   # raise only", m.Limits.Subflows, m.Limits.AddAddrAccepted))
	return out
}

// Commands renders the BPF program as a comment: no ip/nft/sysctl command makes it (bpftool could load
// and pin it, but not assemble it).
func (t *Transparent) Commands(group string) []string {
	return []string{fmt.Sprintf("# mptcp-transparent %s: BPF fmod_ret program on update_socket_protocol, pinned at /sys/fs/bpf/linkagg/NETNS-COOKIE/%s/link (made by linkagg apply only)", t, group)}
}

// Transparent is the scope of mptcp-transparent: every TCP socket created in the host's network namespace
// (All), or those of processes in the named systemd units/slices. Applied as a BPF program (apply/mptcpify.go).
type Transparent struct {
	All   bool     `json:",omitempty"`
	Units []string `json:",omitempty"` // sorted, unique
}

// Equal compares two scopes.
func (t Transparent) Equal(o Transparent) bool {
	return t.All == o.All && slices.Equal(t.Units, o.Units)
}

func (t Transparent) String() string {
	if t.All {
		return "all"
	}
	if len(t.Units) == 0 {
		return "(no unit)"
	}
	return strings.Join(t.Units, " ")
}

// nonTCP keeps ICMP, UDP and every socket that does not bind the VIP working in mode mptcp. Only TCP (and
// connected UDP) looks a route up a second time with the VIP as source and so reaches the `from VIP` rule;
// an unbound ping or UDP sendto looks up with no source, finds the fakenet route via the TUN in main, and
// its packets were lost in the TUN. A rule `to FAKENET lookup PRIMARY` one priority after the source rules
// (the kernel orders rules of one priority by insertion, and a path's rule is re-added when its link comes
// back: it must not land behind this one, or that path's subflows would take the primary path) sends them by
// the primary path, and the peer routes of the path tables carry the VIP as preferred source so that such
// a packet still leaves from the VIP (and a TCP connect's first lookup, which now also lands there, keeps
// choosing the VIP). Subflows bind their path address, which wins over a preferred source. Mode hybrid
// needs none of this: its nft chain marks every packet to the fakenets that is not MPTCP.
func nonTCP(g parser.Group, d *Desired, primary, prio int) {
	for _, fn := range g.Fakenets {
		d.Rules = append(d.Rules, Rule{Family: g.Family, Dst: fn.Masked(), Table: primary, Priority: prio})
	}
	for i := range d.Routes {
		if d.Routes[i].Table != MainTable {
			d.Routes[i].Src = g.VIP
		}
	}
}
