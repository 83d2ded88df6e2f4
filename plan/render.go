package plan

import (
	"fmt"
	"strings"
	"time"

	"github.com/linkagg/linkagg-hooks/parser"
)

// Commands renders d as the ip/nft/sysctl commands an admin would type for the same state. It is how
// `linkagg plan` shows the plan, and what the golden files of the tests hold.
func (d Desired) Commands() []string {
	ipf := "-4"
	if d.Family == parser.Inet6 {
		ipf = "-6"
	}
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }

	add("# group %s: %d of %d paths active", d.Group, d.activePaths(), len(d.Paths))
	for _, p := range d.Paths {
		switch {
		case p.Active():
			add("#   path %d table %d weight %d mark %#x: %s on %s", p.Index+1, p.Table, p.Weight, p.Mark, p.Own, p.Dev)
		case p.State == PathPending:
			add("#   path %d table %d weight %d mark %#x: pending (%s)", p.Index+1, p.Table, p.Weight, p.Mark, p.Reason)
		default:
			add("#   path %d table %d weight %d mark %#x: %s on %s, %s since %s (%s)", p.Index+1, p.Table, p.Weight, p.Mark, p.Own, p.Dev, p.State, p.Since.UTC().Format(time.RFC3339), p.Reason)
		}
	}
	add("#   weights: %s", d.Tuning.Weights)
	if d.Tuning.Unit != "" {
		add("#   unit: gso_max_size %d: %s", d.TUN.GSOMaxSize, d.Tuning.Unit)
	}
	for _, o := range d.PeersOut {
		if o.State == PathPending {
			add("#   peer %s: path %d out (%s)", o.Peer, o.Path+1, o.Reason)
		} else {
			add("#   peer %s: path %d out, %s since %s (%s)", o.Peer, o.Path+1, o.State, o.Since.UTC().Format(time.RFC3339), o.Reason)
		}
	}
	add("ip tuntap add mode tun name %s   # only if missing", d.TUN.Name)
	link := "ip link set dev " + d.TUN.Name
	if d.TUN.MTU != 0 {
		link += fmt.Sprintf(" mtu %d", d.TUN.MTU)
	}
	if d.TUN.GSOMaxSize != 0 {
		link += fmt.Sprintf(" gso_max_size %d", d.TUN.GSOMaxSize)
	}
	add("%s up", link)
	add("ip %s addr replace %s dev %s", ipf, d.VIP, d.TUN.Name)
	for _, s := range d.Sysctls {
		add("sysctl -w %s=%s", SysctlName(s.Key), s.Value)
	}
	for _, r := range d.Routes {
		add("ip %s route replace %s", ipf, r.String())
	}
	for _, r := range d.Rules {
		add("ip %s rule add %s", ipf, r.String())
	}
	if d.MPTCP != nil {
		out = append(out, d.MPTCP.Commands(d.Paths)...)
	}
	if d.Transparent != nil {
		out = append(out, d.Transparent.Commands(d.Group)...)
	}
	if d.Nft != nil {
		out = append(out, d.Nft.Script()...)
	}
	return out
}

// SysctlName is how sysctl(8) names key ("net/ipv4/conf/eth0/rp_filter"): with dots, unless a part of it
// holds a dot itself (a VLAN "eth0.100"), where sysctl takes the slashes as separators and the dots as
// part of the name.
func SysctlName(key string) string {
	if strings.Contains(key, ".") {
		return key
	}
	return strings.ReplaceAll(key, "/", ".")
}

func (d Desired) activePaths() int {
	n := 0
	for _, p := range d.Paths {
		if p.Active() {
			n++
		}
	}
	return n
}

func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Gateway.IsValid() {
		fmt.Fprintf(&b, " via %s", r.Gateway)
	}
	fmt.Fprintf(&b, " dev %s", r.Dev)
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " src %s", r.Src)
	}
	if r.Table != MainTable {
		fmt.Fprintf(&b, " table %d", r.Table)
	}
	fmt.Fprintf(&b, " proto %d", RouteProtocol)
	return b.String()
}

func (r Rule) String() string {
	if r.Src.IsValid() {
		return fmt.Sprintf("from %s lookup %d pref %d proto %d", r.Src, r.Table, r.Priority, RouteProtocol)
	}
	if r.Dst.IsValid() {
		return fmt.Sprintf("to %s lookup %d pref %d proto %d", r.Dst, r.Table, r.Priority, RouteProtocol)
	}
	return fmt.Sprintf("fwmark %#x/%#x lookup %d pref %d proto %d", r.Mark, r.Mask, r.Table, r.Priority, RouteProtocol)
}

// ChainName is the chain that sets mark m.
func ChainName(m uint32) string { return fmt.Sprintf("mark_%08x", m) }

// Script renders the nftables table as an `nft -f` script. Each path's chain keeps the packet mark's bits
// outside Mask, so marks set by other software (wireguard, tailscale, kube-proxy) survive.
func (n *Nft) Script() []string {
	fam := "ip"
	if n.Family == parser.Inet6 {
		fam = "ip6"
	}
	out := []string{fmt.Sprintf("nft -f - <<'EOF'"), fmt.Sprintf("table %s %s {", fam, n.Table)}
	for _, m := range n.Marks() {
		out = append(out, fmt.Sprintf("  chain %s { counter meta mark set meta mark & %#08x ^ %#08x; }", ChainName(m), ^n.Mask, m))
	}
	numgen := func(seq []uint32) string {
		var elems []string
		for i, m := range seq {
			elems = append(elems, fmt.Sprintf("%d : goto %s", i, ChainName(m)))
		}
		return fmt.Sprintf("numgen inc mod %d vmap { %s }", len(seq), strings.Join(elems, ", "))
	}
	var peers []string
	for i, p := range n.Peers {
		verdict := "accept" // no path reaches them: unmarked
		switch {
		case p.HasChain():
			verdict = "goto " + SequenceChain(i)
			out = append(out, fmt.Sprintf("  chain %s { %s; }", SequenceChain(i), numgen(p.Sequence)))
		case len(p.Sequence) == 1:
			verdict = "goto " + ChainName(p.Sequence[0])
		}
		for _, v := range p.VIPs {
			peers = append(peers, fmt.Sprintf("%s : %s", v, verdict))
		}
	}
	out = append(out, "  chain route {", "    type route hook output priority mangle; policy accept;")
	if pin := n.PinMPTCP; pin != nil {
		out = append(out, fmt.Sprintf("    meta l4proto tcp %s saddr %s tcp option mptcp exists goto %s", fam, pin.Src, ChainName(pin.Mark)))
	}
	if n.SkipMPTCP {
		out = append(out, "    meta l4proto tcp tcp option mptcp exists return")
	}
	if len(peers) > 0 {
		out = append(out, fmt.Sprintf("    %s daddr vmap { %s }", fam, strings.Join(peers, ", ")))
	}
	for _, fn := range n.Fakenets {
		out = append(out, fmt.Sprintf("    %s daddr %s %s", fam, fn, numgen(n.Sequence)))
	}
	out = append(out, "  }", "}", "EOF")
	return out
}
