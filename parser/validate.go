package parser

import (
	"fmt"
	"net/netip"
	"slices"
)

// Validate checks groups as a whole: every group on its own (so hand-built groups get the same checks as
// parsed ones), then what groups must not share: their iface+family, routing tables and packet marks.
// The first error wins; groups are checked in order, so the error points at the later of two clashing
// definitions.
func Validate(groups []Group) error {
	for i := range groups {
		if err := validateGroup(&groups[i]); err != nil {
			return err
		}
	}
	for i := range groups {
		g := &groups[i]
		for j := 0; j < i; j++ {
			h := &groups[j]
			// one namespace-wide value: two groups asking for different ones would undo each other
			if g.TCPMinRTTWlen != nil && h.TCPMinRTTWlen != nil && *g.TCPMinRTTWlen != *h.TCPMinRTTWlen {
				return errAt(g.optPos(optMinRTT), "tcp-min-rtt-wlen %d differs from %d of group %s at %s: it is one value for the whole network namespace", *g.TCPMinRTTWlen, *h.TCPMinRTTWlen, h.ID(), h.optPos(optMinRTT))
			}
			if g.Iface == h.Iface && g.Family == h.Family {
				return errAt(g.Pos, "group %s (%s) is defined twice: also at %s", g.Iface, g.Family, h.Pos)
			}
		}
	}
	for i := range groups {
		g := &groups[i]
		for j := 0; j < i; j++ {
			h := &groups[j]
			for _, t := range g.Tables {
				for _, u := range h.Tables {
					if t == u {
						return errAt(g.optPos(optTable), "table %d is also used by group %s at %s", t, h.ID(), h.optPos(optTable))
					}
				}
			}
			for _, m := range g.Marks {
				for _, n := range h.Marks {
					if err := markClash(g, m, h, n); err != nil {
						return err
					}
				}
			}
			if g.Family == h.Family {
				if err := addressClash(g, h); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// addressClash refuses groups of one family whose addresses meet: a VIP in two groups, fakenets that are
// equal or overlap (packets to the overlap would be marked by both groups' tables and routed into either
// TUN), and a path address or gateway of one group inside another group's fakenet (its packets would go
// into that group's TUN). g is the later group; the error points at g's configuration.
func addressClash(g, h *Group) error {
	for _, v := range g.vips() {
		for _, w := range h.vips() {
			if v.addr == w.addr {
				what := "the VIP of group " + h.ID()
				if w.peer {
					what = fmt.Sprintf("the VIP of peer %s of group %s", w.addr, h.ID())
				}
				if v.peer {
					return errAt(v.pos, "rspec entry for %s: VIP is also %s (at %s): expected each VIP in one group", v.addr, what, w.pos)
				}
				return errAt(v.pos, "address %s is also %s (at %s): expected each VIP in one group", v.addr, what, w.pos)
			}
		}
	}
	for i, p := range g.Fakenets {
		for j, q := range h.Fakenets {
			switch {
			case p == q:
				return errAt(g.fakenetPos(i), "fakenet %s is also a fakenet of group %s (at %s): expected the groups' fakenets apart", p, h.ID(), h.fakenetPos(j))
			case p.Overlaps(q):
				return errAt(g.fakenetPos(i), "fakenet %s overlaps fakenet %s of group %s (at %s): expected the groups' fakenets apart (packets to the overlap would be marked by both)", p, q, h.ID(), h.fakenetPos(j))
			}
		}
	}
	for i, p := range g.Fakenets {
		for _, a := range h.routed() {
			if p.Contains(a.addr) {
				return errAt(g.fakenetPos(i), "fakenet %s holds %s, %s of group %s (at %s): expected the fakenets apart from every group's path addresses and gateways", p, a.addr, a.what, h.ID(), a.pos)
			}
		}
	}
	for _, a := range g.routed() {
		for j, q := range h.Fakenets {
			if q.Contains(a.addr) {
				if a.peer != nil {
					return errAt(a.pos, "rspec entry for %s: %s %s of path %d is inside fakenet %s of group %s (at %s): expected an address on a member NIC's subnet", a.peer.VIP, a.kind, a.addr, a.path+1, q, h.ID(), h.fakenetPos(j))
				}
				return errAt(a.pos, "own address %s of path %d is inside fakenet %s of group %s (at %s): expected this host's address on that path's NIC, outside the fakenets", a.addr, a.path+1, q, h.ID(), h.fakenetPos(j))
			}
		}
	}
	return nil
}

type vipAt struct {
	addr netip.Addr
	pos  Pos
	peer bool
}

// vips are the group's VIP and its peers' VIPs, with where each was written.
func (g *Group) vips() []vipAt {
	out := []vipAt{{g.VIP, g.optPos(optAddress), false}}
	for _, p := range g.Peers {
		out = append(out, vipAt{p.VIP, g.peerPos(p), true})
	}
	return out
}

type routedAt struct {
	addr netip.Addr
	pos  Pos
	path int
	kind string // "own address" or "gateway"
	what string // for messages: "the own address of path 1", "gateway of path 2 of peer 10.99.255.20"
	peer *Peer  // nil for an own address
}

// routed are the addresses the group routes to or from on its paths: its own path addresses and every
// peer's gateways.
func (g *Group) routed() []routedAt {
	var out []routedAt
	for i, a := range g.Own {
		out = append(out, routedAt{a, g.ownPos(), i, "own address", fmt.Sprintf("the own address of path %d", i+1), nil})
	}
	for k := range g.Peers {
		p := &g.Peers[k]
		for i, a := range p.Gateways {
			out = append(out, routedAt{a, g.peerPos(*p), i, "gateway", fmt.Sprintf("gateway of path %d of peer %s", i+1, p.VIP), p})
		}
	}
	return out
}

func (g *Group) fakenetPos(i int) Pos {
	if i < len(g.FakenetPos) && g.FakenetPos[i].File != "" {
		return g.FakenetPos[i]
	}
	return g.optPos(optFakenet)
}

func (g *Group) ownPos() Pos {
	if g.OwnPos.File != "" {
		return g.OwnPos
	}
	return g.optPos(optRspec)
}

func (g *Group) peerPos(p Peer) Pos {
	if p.Pos.File != "" {
		return p.Pos
	}
	return g.optPos(optRspec)
}

// Minimum fakenet prefix lengths: a fakenet holds the groups' VIPs, and everything in it is striped and
// routed into the TUN; a shorter prefix takes a share of the Internet (and the default route) with it.
const (
	minFakenetBits4 = 8
	minFakenetBits6 = 16
)

// Ranges a fakenet must not touch: the kernel never routes them into a TUN (local, link-scoped or
// multicast delivery wins), so their traffic would be lost or the host's own would be.
var specialRanges = []struct {
	name   string
	prefix netip.Prefix
}{
	{`"this network"`, netip.MustParsePrefix("0.0.0.0/8")},
	{"loopback", netip.MustParsePrefix("127.0.0.0/8")},
	{"link-local", netip.MustParsePrefix("169.254.0.0/16")},
	{"multicast", netip.MustParsePrefix("224.0.0.0/4")},
	{"broadcast", netip.MustParsePrefix("255.255.255.255/32")},
	{"unspecified", netip.MustParsePrefix("::/128")},
	{"loopback", netip.MustParsePrefix("::1/128")},
	{"link-local", netip.MustParsePrefix("fe80::/10")},
	{"multicast", netip.MustParsePrefix("ff00::/8")},
}

// fakenetProblem says what is wrong with a fakenet on its own (length, special ranges), or "".
func fakenetProblem(p netip.Prefix) string {
	min := minFakenetBits4
	if p.Addr().Is6() {
		min = minFakenetBits6
	}
	if p.Bits() == 0 {
		return fmt.Sprintf("the default route: expected a prefix of /%d or longer (a fakenet holds the groups' VIPs)", min)
	}
	if p.Bits() < min {
		return fmt.Sprintf("expected a prefix of /%d or longer (a fakenet holds the groups' VIPs)", min)
	}
	for _, r := range specialRanges {
		if r.prefix.Addr().Is6() == p.Addr().Is6() && r.prefix.Overlaps(p) {
			return fmt.Sprintf("overlaps the %s range %s: expected a prefix outside loopback, link-local and multicast addresses (the kernel never routes those into the TUN)", r.name, r.prefix)
		}
	}
	return ""
}

// addrKind names what makes an address unusable as a path address or gateway, or "".
func addrKind(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "the unspecified address"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	}
	return ""
}

// markClash reports whether g's rule "fwmark m/g.MarkMask" and h's rule "fwmark n/h.MarkMask" can catch
// each other's packets. With equal masks that is m == n; with different masks a packet marked by one
// group may still match the other's rule.
func markClash(g *Group, m uint32, h *Group, n uint32) error {
	p := markPos(g)
	if m == n {
		return errAt(p, "duplicate mark %#x: also used by group %s at %s%s", m, h.ID(), markPos(h), markHint(g))
	}
	if m&h.MarkMask == n || n&g.MarkMask == m {
		return errAt(p, "mark %#x/%#x overlaps mark %#x/%#x of group %s at %s", m, g.MarkMask, n, h.MarkMask, h.ID(), markPos(h))
	}
	return nil
}

func markPos(g *Group) Pos {
	if p, ok := g.OptPos[optFwmark]; ok {
		return p
	}
	return g.optPos(optTable)
}

func markHint(g *Group) string {
	if _, ok := g.OptPos[optFwmark]; ok {
		return ""
	}
	return " (marks derived from table; give fwmark explicitly)"
}

// validateGroup checks one group's invariants: everything the planner relies on without checking.
func validateGroup(g *Group) error {
	if err := checkIfaceName(g.Iface, g.Pos); err != nil {
		return err
	}
	fam := g.Family
	if fam != Inet && fam != Inet6 {
		return errAt(g.Pos, "group %s: family must be inet or inet6", g.Iface)
	}
	okAddr := func(a netip.Addr) bool { return a.IsValid() && a.Zone() == "" && (fam == Inet) == a.Is4() }

	if !okAddr(g.VIP) {
		return errAt(g.optPos(optAddress), "address %s: expected %s address", g.VIP, famWord(fam))
	}
	if g.MTU != 0 {
		lo := 68
		if fam == Inet6 {
			lo = 1280
		}
		if g.MTU < lo || g.MTU > 65535 {
			return errAt(g.optPos(optMTU), "mtu %d: expected %d..65535", g.MTU, lo)
		}
	}

	fp := g.optPos(optFakenet)
	if len(g.Fakenets) == 0 || len(g.Fakenets) > maxFakenets {
		return errAt(fp, "fakenet has %s: expected 1..%d prefixes", values(len(g.Fakenets)), maxFakenets)
	}
	for i, p := range g.Fakenets {
		if !p.IsValid() || (fam == Inet) != p.Addr().Is4() || p.Masked() != p {
			return errAt(g.fakenetPos(i), "fakenet %s: expected a %s prefix without host bits", p, famWord(fam))
		}
		if msg := fakenetProblem(p); msg != "" {
			return errAt(g.fakenetPos(i), "fakenet %s: %s", p, msg)
		}
		for _, q := range g.Fakenets[:i] {
			if p.Overlaps(q) {
				return errAt(g.fakenetPos(i), "fakenet %s overlaps fakenet %s", p, q)
			}
		}
	}
	if !inFakenet(g.Fakenets, g.VIP) {
		return errAt(g.optPos(optAddress), "address %s is outside every fakenet (%s): the VIP must lie in one", g.VIP, prefixList(g.Fakenets))
	}

	tp := g.optPos(optTable)
	n := len(g.Tables)
	if n == 0 || n > maxPaths {
		return errAt(tp, "table has %s: expected 1..%d routing tables, one per path", values(n), maxPaths)
	}
	for i, t := range g.Tables {
		if msg := checkTable(int64(t)); msg != "" {
			return errAt(tp, "%s", msg)
		}
		for _, u := range g.Tables[:i] {
			if t == u {
				return errAt(tp, "table %d is listed twice: each path needs its own table", t)
			}
		}
	}

	if g.Weights != nil && len(g.Weights) != n {
		return errAt(g.optPos(optWeight), "weight has %s but table has %d", values(len(g.Weights)), n)
	}
	for _, w := range g.Weights {
		if w < 1 || w > maxWeight {
			return errAt(g.optPos(optWeight), "weight %d: expected a positive integer 1..%d", w, maxWeight)
		}
	}

	if g.Speeds != nil && len(g.Speeds) != n {
		return errAt(g.optPos(optSpeed), "speed has %s but table has %d", values(len(g.Speeds)), n)
	}
	for _, s := range g.Speeds {
		if s < 0 || s > MaxSpeed {
			return errAt(g.optPos(optSpeed), "speed %d: expected Mbit/s 1..%d or auto", s, MaxSpeed)
		}
	}

	switch g.Mode {
	case ModePacket, ModeMPTCP, ModeHybrid:
	default:
		return errAt(g.optPos(optMode), "mode %q: expected packet, mptcp or hybrid", g.Mode)
	}
	if g.MarkMask == 0 {
		return errAt(g.optPos(optMarkMask), "fwmark-mask must be non-zero")
	}
	if g.RulePriority < 1 || g.RulePriority > 32765 {
		return errAt(g.optPos(optPriority), "rule-priority %d: expected 1..32765", g.RulePriority)
	}
	// the MPTCP modes add rules at neighbouring priorities (hybrid: the path addresses' rules at -1, before
	// the fwmark rules, and the VIP's at +1; mptcp: +1 and +2), and every one of them must lie in 1..32765,
	// before the main table's rule at 32766, or the traffic it routes follows main into the TUN
	switch {
	case g.Mode == ModeHybrid && (g.RulePriority < 2 || g.RulePriority > 32764):
		return errAt(g.optPos(optPriority), "rule-priority %d: expected 2..32764 in mode hybrid (its path rules take PRIORITY-1 and its VIP rule PRIORITY+1, all after priority 0 and before main's 32766)", g.RulePriority)
	case g.Mode == ModeMPTCP && g.RulePriority > 32763:
		return errAt(g.optPos(optPriority), "rule-priority %d: expected 1..32763 in mode mptcp (its rules take PRIORITY+1 and PRIORITY+2, all before main's 32766)", g.RulePriority)
	}
	if g.Mode != ModeMPTCP {
		if len(g.Peers) > MaxPeers {
			return errAt(g.optPos(optRspec), "rspec has %d peers: at most %d fit the nftables map of peers that lost a path", len(g.Peers), MaxPeers)
		}
		// without weights the planner derives them from the speeds, within the limit, down to one entry per
		// path (plan/speed.go)
		w := g.Weights
		if w == nil {
			w = make([]int, n)
			for i := range w {
				w[i] = 1
			}
		}
		if k, max := SequenceLength(w), MaxSequenceFor(n, len(g.Fakenets), len(g.Peers)); k > max {
			return errAt(g.optPos(optWeight), "weights reduce to a sequence of %d entries; at most %d fit in one nftables transaction (%s, %s, %s): expected smaller weights (the sequence is their sum divided by their greatest common divisor) or fewer fakenets (each holds its own copy)", k, max, plural(len(g.Fakenets), "fakenet"), plural(n, "path"), plural(len(g.Peers), "peer"))
		}
	}

	mp := markPos(g)
	if len(g.Marks) != n {
		return errAt(mp, "fwmark has %s but table has %d", values(len(g.Marks)), n)
	}
	for i, m := range g.Marks {
		if m == 0 {
			return errAt(mp, "mark of path %d is 0: expected a non-zero mark", i+1)
		}
		if m&^g.MarkMask != 0 {
			return errAt(mp, "mark %#x of path %d is outside fwmark-mask %#x", m, i+1, g.MarkMask)
		}
		for j, o := range g.Marks[:i] {
			if m == o {
				return errAt(mp, "duplicate mark %#x: paths %d and %d (tables %d and %d)%s", m, j+1, i+1, g.Tables[j], g.Tables[i], markHint(g))
			}
		}
	}

	rp := g.optPos(optRspec)
	if len(g.Own) != n {
		return errAt(rp, "own entry has %d addresses but table has %d", len(g.Own), n)
	}
	for _, a := range g.Own {
		if !okAddr(a) {
			return errAt(rp, "own address %s: expected %s address", a, famWord(fam))
		}
	}
	peerAt := map[netip.Addr]Pos{}
	for _, p := range g.Peers {
		if _, dup := peerAt[p.VIP]; !dup {
			peerAt[p.VIP] = g.peerPos(p)
		}
	}
	// what each address of a path must not be; "" when it is fine
	misuse := func(a netip.Addr) string {
		if a == g.VIP {
			return "this group's VIP"
		}
		if at, ok := peerAt[a]; ok {
			return fmt.Sprintf("the VIP of peer %s (at %s)", a, at)
		}
		return ""
	}
	for i, a := range g.Own {
		if what := misuse(a); what != "" {
			return errAt(g.ownPos(), "own address %s of path %d is %s: expected this host's address on that path's NIC", a, i+1, what)
		}
		if what := addrKind(a); what != "" {
			return errAt(g.ownPos(), "own address %s of path %d is %s: expected this host's address on that path's NIC", a, i+1, what)
		}
		for _, f := range g.Fakenets {
			if f.Contains(a) {
				return errAt(g.ownPos(), "own address %s of path %d is inside fakenet %s: expected this host's address on that path's NIC, outside the fakenets", a, i+1, f)
			}
		}
	}
	seen := map[netip.Addr]bool{g.VIP: true}
	for _, p := range g.Peers {
		pp := p.Pos
		if pp.File == "" {
			pp = rp
		}
		if !okAddr(p.VIP) {
			return errAt(pp, "peer VIP %s: expected %s address", p.VIP, famWord(fam))
		}
		if seen[p.VIP] {
			return errAt(pp, "VIP %s has two rspec entries", p.VIP)
		}
		seen[p.VIP] = true
		if !inFakenet(g.Fakenets, p.VIP) {
			return errAt(pp, "rspec entry for %s: VIP is outside every fakenet (%s)", p.VIP, prefixList(g.Fakenets))
		}
		if len(p.Gateways) != n {
			return errAt(pp, "rspec entry for %s has %d gateways but table has %d paths", p.VIP, len(p.Gateways), n)
		}
		for i, a := range p.Gateways {
			if !okAddr(a) {
				return errAt(pp, "rspec entry for %s: gateway %s: expected %s address", p.VIP, a, famWord(fam))
			}
			const want = "expected the peer's address on that path"
			if what := misuse(a); what != "" {
				return errAt(pp, "rspec entry for %s: gateway %s of path %d is %s: %s", p.VIP, a, i+1, what, want)
			}
			if k := slices.Index(g.Own, a); k >= 0 {
				return errAt(pp, "rspec entry for %s: gateway %s of path %d is this host's own address on path %d: %s", p.VIP, a, i+1, k+1, want)
			}
			for _, f := range g.Fakenets {
				if f.Contains(a) {
					return errAt(pp, "rspec entry for %s: gateway %s of path %d is inside fakenet %s: expected an address on a member NIC's subnet (a route via the TUN goes nowhere)", p.VIP, a, i+1, f)
				}
			}
			if what := addrKind(a); what != "" {
				hint := ""
				if what == "link-local" {
					hint = " (a link-local gateway names no NIC)"
				}
				return errAt(pp, "rspec entry for %s: gateway %s of path %d is %s: expected an address on a member NIC's subnet%s", p.VIP, a, i+1, what, hint)
			}
		}
	}
	return nil
}

// SequenceLength is the length of the mark sequence of these weights: their sum divided by their
// greatest common divisor (plan.Sequence).
func SequenceLength(weights []int) int {
	g, sum := 0, 0
	for _, w := range weights {
		for a, b := g, w; ; {
			if b == 0 {
				g = a
				break
			}
			a, b = b, a%b
		}
		sum += w
	}
	if g <= 0 {
		return 0
	}
	return sum / g
}

// The nftables table of a group (apply/nft.go) is sent in one netlink message batch: each fakenet's
// numgen map holds the whole sequence, one element per entry, and so does the map of every group of peers
// that lost some paths but not all (their own sequence over the paths they still reach), plus one element
// per such peer in the map that picks their sequence. Measured on the kernel (apply's TestNftSizeLimit)
// and in google/nftables' encoding (TestNftBatchEstimate):
//   - an element takes 52 bytes, and one map's elements travel in one netlink attribute whose length
//     field has 16 bits: above 1260 elements the length wraps and the kernel silently keeps a truncated map
//     (numgen then finds no entry for most packets);
//   - the whole batch must fit the socket's send buffer, 212992 bytes by default (net.core.wmem_default;
//     the kernel takes at most that minus 32), or it is refused with EMSGSIZE. apply asks for 4 MiB (as
//     nft does), which needs CAP_NET_ADMIN in the initial user namespace or a large net.core.wmem_max.
//
// The limits keep a margin under each: MaxSequence entries per map; the table as it is while every peer
// uses every path within nftBudget of the default buffer; the table of the worst case (every distinct
// subset of the paths in use by some peer) within nftBudgetLarge of the 4 MiB one. The byte costs are
// upper bounds of the real encoding (longest names, inet6, hybrid).
const (
	MaxSequence    = 1024
	MaxPeers       = 1024 // VIPs in the peers' map, whose elements (56 bytes) share one attribute too
	nftBudget      = 160 << 10
	nftBudgetLarge = 3 << 20

	nftFixedBytes   = 1024 // batch begin/end, table, base chain, hybrid's MPTCP rule, a replaced table's delete
	nftPathBytes    = 400  // one mark chain and its rule
	nftFakenetBytes = 768  // a fakenet's map, its element message header and its rule
	nftPeerMapBytes = 640  // a peer group's chain, its rule, its map and that map's element message header
	nftPeersBytes   = 512  // the peers' map and its rule
	nftPeerVIPBytes = 64   // one element of the peers' map
	nftElemBytes    = 52   // one entry of a sequence map
)

// NftBatchBytes bounds the size of the nftables batch that makes a group's table: paths mark chains,
// fakenets maps of entries elements each, and peerMaps more such maps for peers that lost some paths,
// peerVIPs of them in the peers' map.
func NftBatchBytes(paths, fakenets, entries, peerMaps, peerVIPs int) int {
	n := nftFixedBytes + nftPathBytes*paths + (nftFakenetBytes+nftElemBytes*entries)*fakenets +
		(nftPeerMapBytes+nftElemBytes*entries)*peerMaps
	if peerVIPs > 0 {
		n += nftPeersBytes + nftPeerVIPBytes*peerVIPs
	}
	return n
}

// worstPeerMaps is how many peer groups with a sequence of their own a group can have at once: one per
// subset of its paths other than all, one or none, and at most one per peer.
func worstPeerMaps(paths, peers int) int {
	if paths >= 20 {
		return peers
	}
	return max(0, min(peers, 1<<paths-paths-2))
}

// MaxSequenceFor is the longest mark sequence a group of paths, fakenets and peers can have (modes
// packet and hybrid; mode mptcp has no nftables table): 0 when even one entry does not fit.
func MaxSequenceFor(paths, fakenets, peers int) int {
	fakenets = max(fakenets, 1)
	m := worstPeerMaps(paths, peers)
	every := (nftBudget - NftBatchBytes(paths, fakenets, 0, 0, 0)) / (nftElemBytes * fakenets)
	worst := (nftBudgetLarge - NftBatchBytes(paths, fakenets, 0, m, peers)) / (nftElemBytes * (fakenets + m))
	return max(0, min(MaxSequence, every, worst))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func inFakenet(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func prefixList(ps []netip.Prefix) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += " "
		}
		s += p.String()
	}
	return s
}

func values(n int) string {
	if n == 1 {
		return "1 value"
	}
	return fmt.Sprintf("%d values", n)
}
