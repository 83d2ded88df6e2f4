package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

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
		TUN:    TUN{Name: g.Iface, MTU: g.MTU, Running: Running(in.Links, g.Iface)},
		VIP:    netip.PrefixFrom(g.VIP, bits),
	}
	if err := CheckHost(g, in.Links); err != nil {
		return Desired{}, err
	}
	present := upLinks(in)
	links := usableLinks(in, present)

	for _, fn := range g.Fakenets {
		d.Routes = append(d.Routes, Route{Table: MainTable, Dst: fn.Masked(), Dev: g.Iface, Src: g.VIP})
	}

	var active []int
	speeds := make([]PathSpeed, len(g.Tables))
	for i, table := range g.Tables {
		p := Path{Index: i, Table: table, Mark: g.Marks[i], Own: g.Own[i], State: PathPending}
		l := Holder(present, g.Own[i])
		speeds[i] = speedOf(g, i, l)
		p.Speed = speeds[i].Mbit
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
	tune(g, &d, speeds, active)

	// per peer, the active paths it can use: those whose gateway of its is on a subnet of a usable link and
	// answers the watcher's probes (a peer's NIC can die behind a switch while our carrier stays up)
	usable := make([][]int, len(g.Peers))
	for _, i := range active {
		p := d.Paths[i]
		if mode != parser.ModeMPTCP { // MPTCP subflows are routed by their source address (buildMPTCP), never by marks
			d.Rules = append(d.Rules, Rule{Family: g.Family, Mark: p.Mark, Mask: g.MarkMask, Table: p.Table, Priority: g.RulePriority})
		}
		for k, peer := range g.Peers {
			gw := peer.Gateways[i]
			out := PeerOut{Peer: peer.VIP, Path: i, Gateway: gw, State: PathPending}
			l := GatewayLink(links, p.Own, gw)
			if l == nil {
				out.Reason = noGatewayLink(present, p.Own, gw)
				d.PeersOut = append(d.PeersOut, out)
				continue
			}
			out.Link = l.Name
			if down, ok := in.Health.Gateways[GatewayKey{Link: l.Name, Gateway: gw}]; ok {
				out.State, out.Since = PathState(down.State), down.Since
				out.Reason = fmt.Sprintf("gateway %s on %s does not answer probes", gw, l.Name)
				d.PeersOut = append(d.PeersOut, out)
				continue
			}
			d.Routes = append(d.Routes, Route{Table: p.Table, Dst: netip.PrefixFrom(peer.VIP, bits), Gateway: gw, Dev: l.Name})
			usable[k] = append(usable[k], i)
		}
	}

	if len(active) > 0 && mode != parser.ModeMPTCP {
		n := &Nft{Family: g.Family, Table: NftTablePrefix + g.Iface, Fakenets: maskedAll(g.Fakenets), Mask: g.MarkMask, SkipMPTCP: mode == parser.ModeHybrid}
		n.Sequence = d.marks(active)
		for k, peer := range g.Peers {
			if slices.Equal(usable[k], active) {
				continue
			}
			seq := d.marks(usable[k])
			j := slices.IndexFunc(n.Peers, func(ps PeerSequence) bool { return slices.Equal(ps.Sequence, seq) })
			if j < 0 {
				n.Peers = append(n.Peers, PeerSequence{Sequence: seq})
				j = len(n.Peers) - 1
			}
			n.Peers[j].VIPs = append(n.Peers[j].VIPs, peer.VIP)
		}
		d.Nft = n
	}

	d.Sysctls = memberSysctls(g, in.Links)
	if w := g.TCPMinRTTWlen; w != nil {
		// the admin's explicit choice (never a default): RACK tolerates reordering of up to a quarter of the
		// minimum RTT (growing with DSACKs, at most the smoothed RTT); on a LAN the minimum is microseconds,
		// far below how much striping reorders, and a short window lets it follow the RTT the flow has now
		d.Sysctls = append(d.Sysctls, Sysctl{Key: "net/ipv4/tcp_min_rtt_wlen", Value: strconv.Itoa(*w)})
	}
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

// marks is the smooth weighted mark sequence over the paths idx (indexes into d.Paths).
func (d *Desired) marks(idx []int) []uint32 {
	weights := make([]int, len(idx))
	for k, i := range idx {
		weights[k] = d.Paths[i].Weight
	}
	if sum(weights) == 0 { // only paths too slow for a share of the group's sequence: they share it equally
		for k := range weights {
			weights[k] = 1
		}
	}
	var out []uint32
	for _, k := range Sequence(weights) {
		out = append(out, d.Paths[idx[k]].Mark)
	}
	return out
}

// noGatewayLink says why no route to gw leaves for the path whose own address is own.
func noGatewayLink(present []Local, own, gw netip.Addr) string {
	if l := GatewayLink(present, own, gw); l != nil {
		return fmt.Sprintf("gateway %s is on %s, which counts as down", gw, l.Name)
	}
	return fmt.Sprintf("gateway %s is on no subnet of a link that is up", gw)
}

func maskedAll(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Masked()
	}
	return out
}

// memberSysctls makes reverse-path filtering loose on every member link (replies to the VIP arrive on any
// link, not the one the main table would pick) and, unless the group says `arp-isolation off`, makes each
// member answer ARP only for its own addresses and announce only them (arp_ignore=1, arp_announce=2): on a
// shared broadcast domain (several NICs on one switch) every NIC hears every ARP request, and without them
// a peer learns the MAC of whichever NIC answered first, so its frames for one path arrive on another. We
// cannot see the L2 topology, so this holds for every member, whatever the subnets.
//
// A member is a link holding a path's own address, whether the path is active or not: the values hold as
// long as the group runs, not per active path. A path out after failed probes must still receive the replies
// that bring it back, which a strict rp_filter would drop.
func memberSysctls(g parser.Group, links []Local) []Sysctl {
	if g.Family != parser.Inet {
		return nil // IPv6 has no rp_filter in net.ipv6.conf; neighbour discovery answers per link already
	}
	var devs []string
	for _, own := range g.Own {
		if l := Holder(links, own); l != nil && l.Name != g.Iface && !slices.Contains(devs, l.Name) {
			devs = append(devs, l.Name)
		}
	}
	slices.Sort(devs)
	var out []Sysctl
	for _, dev := range devs {
		out = append(out, Sysctl{Key: "net/ipv4/conf/" + dev + "/rp_filter", Value: "2"})
		if !g.KeepARP {
			out = append(out,
				Sysctl{Key: "net/ipv4/conf/" + dev + "/arp_ignore", Value: "1"},
				Sysctl{Key: "net/ipv4/conf/" + dev + "/arp_announce", Value: "2"})
		}
	}
	return out
}
