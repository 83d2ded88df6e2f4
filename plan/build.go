package plan

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/linkagg/linkagg-hooks/parser"
)

// MainTable is the kernel's main routing table.
const MainTable = 254

// Build computes the kernel state of one group from the host's links. A path whose own address is on no
// link that is up is pending: it gets no rule, no routes and no share of the mark sequence until its link
// comes up and the group is planned again. A peer route leaves by the link whose subnet holds the gateway,
// which need not be the path's own link (a router reachable on one subnet serves every table).
func Build(in Input) (Desired, error) {
	g := in.Group
	mode := g.Mode
	if mode == "" {
		mode = parser.ModePacket
	}
	bits := 32
	if g.Family == parser.Inet6 {
		bits = 128
	}
	d := Desired{
		Group:  g.ID(),
		Family: g.Family,
		Mode:   mode,
		TUN:    TUN{Name: g.Iface, MTU: g.MTU},
		VIP:    netip.PrefixFrom(g.VIP, bits),
	}
	present := upLinks(in)
	links := usableLinks(in, present)

	for _, fn := range g.Fakenets {
		d.Routes = append(d.Routes, Route{Table: MainTable, Dst: fn.Masked(), Dev: g.Iface, Src: g.VIP})
	}

	var active []int
	for i, table := range g.Tables {
		p := Path{Index: i, Table: table, Weight: g.Weights[i], Mark: g.Marks[i], Own: g.Own[i], State: PathPending}
		l := Holder(present, g.Own[i])
		switch down, isDown := in.Health.LinkDown(linkName(l)); {
		case l == nil:
			p.Reason = fmt.Sprintf("address %s is on no link that is up", g.Own[i])
		case isDown:
			p.Dev, p.State, p.Since = l.Name, PathState(down.State), down.Since
			p.Reason = l.Name + " " + downReason(down.State)
		default:
			p.Dev, p.State = l.Name, PathActive
			active = append(active, i)
		}
		d.Paths = append(d.Paths, p)
	}

	for _, i := range active {
		p := d.Paths[i]
		if mode != parser.ModeMPTCP { // MPTCP subflows are routed by their source address (buildMPTCP), never by marks
			d.Rules = append(d.Rules, Rule{Family: g.Family, Mark: p.Mark, Mask: g.MarkMask, Table: p.Table, Priority: g.RulePriority})
		}
		for _, peer := range g.Peers {
			gw := peer.Gateways[i]
			l := GatewayLink(links, p.Own, gw)
			if l == nil {
				continue // the gateway's subnet is not up yet: added when its link's event re-plans the group
			}
			d.Routes = append(d.Routes, Route{Table: p.Table, Dst: netip.PrefixFrom(peer.VIP, bits), Gateway: gw, Dev: l.Name})
		}
	}

	if len(active) > 0 && mode != parser.ModeMPTCP {
		weights := make([]int, len(active))
		for k, i := range active {
			weights[k] = d.Paths[i].Weight
		}
		n := &Nft{Family: g.Family, Table: NftTablePrefix + g.Iface, Fakenets: maskedAll(g.Fakenets), Mask: g.MarkMask, SkipMPTCP: mode == parser.ModeHybrid}
		for _, k := range Sequence(weights) {
			n.Sequence = append(n.Sequence, d.Paths[active[k]].Mark)
		}
		d.Nft = n
	}

	d.Sysctls = memberSysctls(g.Family, d.Paths, links)
	if mode != parser.ModePacket {
		buildMPTCP(g, &d, active, bits)
	}
	return d, nil
}

// upLinks drops links that are down or being taken down, and the group's own TUN.
func upLinks(in Input) []Local {
	var out []Local
	for _, l := range in.Links {
		if l.Up && !slices.Contains(in.Exclude, l.Name) && l.Name != in.Group.Iface {
			out = append(out, l)
		}
	}
	return out
}

// usableLinks drops, of the links that are up, those Health counts as down: no route leaves by them.
func usableLinks(in Input, up []Local) []Local {
	var out []Local
	for _, l := range up {
		if _, down := in.Health.LinkDown(l.Name); !down {
			out = append(out, l)
		}
	}
	return out
}

func linkName(l *Local) string {
	if l == nil {
		return ""
	}
	return l.Name
}

func downReason(state string) string {
	switch state {
	case DownNoCarrier:
		return "has no carrier"
	case DownProbeFailed:
		return "passes no traffic: no gateway on it answers probes"
	}
	return "counts as down (" + state + ")"
}

func maskedAll(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Masked()
	}
	return out
}

// memberSysctls makes reverse-path filtering loose on every active member link (replies to the VIP arrive
// on any link, not the one the main table would pick) and, when two members share a subnet, stops each
// from answering ARP for the other's address so that the peer's per-link neighbour entries stay per link.
func memberSysctls(f parser.Family, paths []Path, links []Local) []Sysctl {
	if f != parser.Inet {
		return nil // IPv6 has no rp_filter in net.ipv6.conf; neighbour discovery answers per link already
	}
	var devs []string
	for _, p := range paths {
		if p.State == PathActive && !slices.Contains(devs, p.Dev) {
			devs = append(devs, p.Dev)
		}
	}
	slices.Sort(devs)
	shared := map[string]bool{}
	for i, a := range devs {
		for _, b := range devs[i+1:] {
			if sameSubnet(links, a, b) {
				shared[a], shared[b] = true, true
			}
		}
	}
	var out []Sysctl
	for _, dev := range devs {
		out = append(out, Sysctl{Key: "net/ipv4/conf/" + dev + "/rp_filter", Value: "2"})
		if shared[dev] {
			out = append(out,
				Sysctl{Key: "net/ipv4/conf/" + dev + "/arp_ignore", Value: "1"},
				Sysctl{Key: "net/ipv4/conf/" + dev + "/arp_announce", Value: "2"})
		}
	}
	return out
}

func sameSubnet(links []Local, a, b string) bool {
	var la, lb *Local
	for i := range links {
		switch links[i].Name {
		case a:
			la = &links[i]
		case b:
			lb = &links[i]
		}
	}
	if la == nil || lb == nil {
		return false
	}
	for _, pa := range la.Addrs {
		for _, pb := range lb.Addrs {
			if pa.Addr().Is4() && pa.Masked() == pb.Masked() {
				return true
			}
		}
	}
	return false
}
