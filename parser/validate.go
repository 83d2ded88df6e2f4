package parser

import (
	"fmt"
	"net/netip"
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
		}
	}
	return nil
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
			return errAt(fp, "fakenet %s: expected a %s prefix without host bits", p, famWord(fam))
		}
		for _, q := range g.Fakenets[:i] {
			if p.Overlaps(q) {
				return errAt(fp, "fakenet %s overlaps fakenet %s", p, q)
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

	if len(g.Weights) != n {
		return errAt(g.optPos(optWeight), "weight has %s but table has %d", values(len(g.Weights)), n)
	}
	for _, w := range g.Weights {
		if w < 1 || w > maxWeight {
			return errAt(g.optPos(optWeight), "weight %d: expected a positive integer 1..%d", w, maxWeight)
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
	// the MPTCP modes add rules at the next priorities (hybrid +1; mptcp +1 and +2), and every one of them
	// must come before the main table's rule at 32766, or the traffic it routes follows main into the TUN
	if top := map[Mode]int{ModeHybrid: 32764, ModeMPTCP: 32763}[g.Mode]; top != 0 && g.RulePriority > top {
		return errAt(g.optPos(optPriority), "rule-priority %d: expected 1..%d in mode %s (its rules take the next priorities, all before main's 32766)", g.RulePriority, top, g.Mode)
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
		for _, a := range p.Gateways {
			if !okAddr(a) {
				return errAt(pp, "rspec entry for %s: gateway %s: expected %s address", p.VIP, a, famWord(fam))
			}
		}
	}
	return nil
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
