package apply

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

func familyOf(f parser.Family) int {
	if f == parser.Inet6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

func prefixFamily(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// groupTables are the routing tables of the group's paths (main excluded).
func groupTables(d plan.Desired) []int {
	var ts []int
	add := func(t int) {
		if t != 0 && t != unix.RT_TABLE_MAIN && !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	for _, p := range d.Paths {
		add(p.Table)
	}
	for _, r := range d.Rules {
		add(r.Table)
	}
	for _, r := range d.Routes {
		add(r.Table)
	}
	return ts
}

// scopeTables are the tables a run of the group may touch: those of its plan and those its footprint says
// it used (a stanza whose tables were renumbered while up still finds its old rules and routes).
func scopeTables(d plan.Desired, fp Footprint) []int {
	ts := groupTables(d)
	for _, t := range fp.Tables {
		if validTable(t) && !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	return ts
}

// routeKey is what we compare routes on: (table, dst, gw, dev, src).
type routeKey struct {
	Table int
	Dst   netip.Prefix
	Gw    netip.Addr
	Dev   int // ifindex, 0 = any
	Src   netip.Addr
}

func keyOfRoute(r netlink.Route) routeKey {
	k := routeKey{Table: r.Table, Gw: ipAddr(r.Gw), Dev: r.LinkIndex, Src: ipAddr(r.Src)}
	if r.Dst != nil {
		k.Dst, _ = ipnetPrefix(r.Dst)
	} else if r.Family == netlink.FAMILY_V6 {
		k.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	} else {
		k.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	k.Dst = k.Dst.Masked()
	return k
}

func (k routeKey) matches(o routeKey) bool {
	return k.Table == o.Table && k.Dst == o.Dst && k.Gw == o.Gw && k.Src == o.Src && (k.Dev == 0 || o.Dev == 0 || k.Dev == o.Dev)
}

func (s *Session) describeRoute(r netlink.Route) string {
	k := keyOfRoute(r)
	out := k.Dst.String()
	if k.Gw.IsValid() {
		out += " via " + k.Gw.String()
	}
	if r.LinkIndex != 0 {
		out += " dev " + s.linkName(r.LinkIndex)
	}
	if k.Src.IsValid() {
		out += " src " + k.Src.String()
	}
	return out + " table " + tableName(k.Table)
}

func tableName(t int) string {
	if t == unix.RT_TABLE_MAIN {
		return "main"
	}
	return fmt.Sprint(t)
}

// ownedRoute: proto 76 and (a group table, or main via the TUN).
func ownedRoute(r netlink.Route, tables []int, tunIndex int) bool {
	if r.Protocol != plan.RouteProtocol {
		return false
	}
	if slices.Contains(tables, r.Table) {
		return true
	}
	return r.Table == unix.RT_TABLE_MAIN && tunIndex != 0 && r.LinkIndex == tunIndex
}

// restorable copies the fields of a dumped route the kernel takes back on RTM_NEWROUTE.
func restorable(r netlink.Route) *netlink.Route {
	c := &netlink.Route{
		LinkIndex: r.LinkIndex,
		Scope:     r.Scope,
		Dst:       r.Dst,
		Src:       r.Src,
		Gw:        r.Gw,
		Protocol:  r.Protocol,
		Priority:  r.Priority,
		Family:    r.Family,
		Table:     r.Table,
		Type:      r.Type,
		Tos:       r.Tos,
		Flags:     r.Flags &^ (unix.RTNH_F_LINKDOWN | unix.RTNH_F_DEAD | unix.RTNH_F_OFFLOAD | unix.RTNH_F_TRAP),
		MultiPath: r.MultiPath,
		MTU:       r.MTU,
		AdvMSS:    r.AdvMSS,
		Hoplimit:  r.Hoplimit,
		Realm:     r.Realm,
		Via:       r.Via,
	}
	return c
}

// syncRoutes adds the desired routes that are missing (a route of ours in the same place, the old
// gateway of a peer say, is replaced in one write) and returns the owned routes no longer desired: they
// go with deleteRoutes once the nft table no longer sends packets to them.
func syncRoutes(t *txn, d plan.Desired, fp Footprint, tunIndex int) ([]netlink.Route, error) {
	tables := scopeTables(d, fp)
	type want struct {
		r   plan.Route
		key routeKey
		fam int
	}
	var wants []want
	fams := map[int]bool{}
	// one link dump for all routes: a lookup per route opens a netlink socket each, which made a no-op
	// apply of 254 peers x 4 paths cost ~100 ms
	var byName map[string]int
	index := func(name string) (int, error) {
		if byName == nil {
			links, err := t.s.linkList()
			if err != nil {
				return 0, fmt.Errorf("listing links: %w", err)
			}
			byName = make(map[string]int, len(links))
			for _, l := range links {
				byName[l.Attrs().Name] = l.Attrs().Index
			}
		}
		return byName[name], nil
	}
	for _, r := range d.Routes {
		k := routeKey{Table: r.Table, Dst: r.Dst.Masked(), Gw: r.Gateway, Src: r.Src}
		if k.Table == 0 {
			k.Table = unix.RT_TABLE_MAIN
		}
		if r.Dev != "" {
			if r.Dev == d.TUN.Name && tunIndex != 0 {
				k.Dev = tunIndex
			} else if idx, err := index(r.Dev); err != nil {
				return nil, err
			} else if idx != 0 {
				k.Dev = idx
			} else if !t.dry {
				return nil, fmt.Errorf("route %s table %s: device %s does not exist", r.Dst, tableName(k.Table), r.Dev)
			} else {
				k.Dev = -1 // never matches in a dry run
			}
		}
		wants = append(wants, want{r, k, prefixFamily(r.Dst)})
		fams[prefixFamily(r.Dst)] = true
	}
	fams[familyOf(d.Family)] = true

	var present int
	var extra []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if !fams[fam] {
			continue
		}
		all, err := t.s.listRoutes(fam)
		if err != nil {
			return nil, fmt.Errorf("listing routes: %w", err)
		}
		matched := make([]bool, len(wants))
		var owned []netlink.Route // ours, not desired
		for _, r := range all {
			if !ownedRoute(r, tables, tunIndex) {
				continue
			}
			k := keyOfRoute(r)
			found := false
			for i, w := range wants {
				if w.fam == fam && !matched[i] && w.key.matches(k) {
					matched[i], found = true, true
					present++
					break
				}
			}
			if !found {
				owned = append(owned, r)
			}
		}
		for i, w := range wants {
			if w.fam != fam || matched[i] {
				continue
			}
			for _, r := range all {
				if !ownedRoute(r, tables, tunIndex) && sameSlot(r, w.key) {
					who := "a foreign route"
					if r.Protocol == plan.RouteProtocol {
						who = "a route of another linkagg group" // a renamed stanza's old group: `linkagg apply` removes it
					}
					return nil, fmt.Errorf("route %s table %s: %s (%s, proto %d) has the same destination", w.r.Dst, tableName(w.key.Table), who, t.s.describeRoute(r), r.Protocol)
				}
			}
			nr := &netlink.Route{
				Table:     w.key.Table,
				Dst:       prefixIPNet(w.key.Dst),
				Gw:        addrIP(w.key.Gw),
				Src:       addrIP(w.key.Src),
				LinkIndex: max(w.key.Dev, 0),
				Protocol:  plan.RouteProtocol,
				Family:    fam,
				Scope:     unix.RT_SCOPE_UNIVERSE,
			}
			if !w.key.Gw.IsValid() && fam == netlink.FAMILY_V4 {
				nr.Scope = unix.RT_SCOPE_LINK
			}
			if j := slices.IndexFunc(owned, func(r netlink.Route) bool { return sameSlot(r, w.key) }); j >= 0 {
				old := owned[j]
				owned = slices.Delete(owned, j, j+1)
				if err := t.do("routes", fmt.Sprintf("replace route %s (was %s)", planRouteString(w.r), t.s.describeRoute(old)),
					func() error { return t.s.nl.RouteReplace(nr) },
					func() error { return t.s.nl.RouteReplace(restorable(old)) }); err != nil {
					return nil, err
				}
				continue
			}
			if err := t.do("routes", "add route "+planRouteString(w.r),
				func() error { return t.s.nl.RouteAdd(nr) },
				func() error { return t.s.nl.RouteDel(nr) }); err != nil {
				return nil, err
			}
		}
		extra = append(extra, owned...)
	}
	t.count("routes", len(wants), present, len(extra))
	return extra, nil
}

// deleteRoutes deletes routes of ours, each with its undo.
func deleteRoutes(t *txn, routes []netlink.Route) error {
	for _, r := range routes {
		if err := t.do("routes", "delete route "+t.s.describeRoute(r),
			func() error { return t.s.nl.RouteDel(&r) },
			func() error { return t.s.nl.RouteAdd(restorable(r)) }); err != nil {
			return err
		}
	}
	return nil
}

// sameSlot tells whether two routes of one family take the same place in the kernel (table, destination,
// no tos, metric 0): a route of ours there is replaced in one write rather than deleted and added.
func sameSlot(r netlink.Route, k routeKey) bool {
	return r.Table == k.Table && r.Priority == 0 && r.Tos == 0 && keyOfRoute(r).Dst == k.Dst && (r.Type == unix.RTN_UNICAST || r.Type == 0)
}

func planRouteString(r plan.Route) string {
	s := r.Dst.String()
	if r.Gateway.IsValid() {
		s += " via " + r.Gateway.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.Src.IsValid() {
		s += " src " + r.Src.String()
	}
	t := r.Table
	if t == 0 {
		t = unix.RT_TABLE_MAIN
	}
	return s + " table " + tableName(t) + " proto linkagg"
}

// removeRoutes deletes every route the group owns (Down).
func removeRoutes(t *txn, d plan.Desired, fp Footprint, tunIndex int) error {
	tables := scopeTables(d, fp)
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		all, err := t.s.listRoutes(fam)
		if err != nil {
			return fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range all {
			if !ownedRoute(r, tables, tunIndex) {
				continue
			}
			r := r
			if err := t.do("routes", "delete route "+t.s.describeRoute(r),
				func() error { return t.s.nl.RouteDel(&r) },
				func() error { return t.s.nl.RouteAdd(restorable(r)) }); err != nil {
				return err
			}
		}
	}
	return nil
}

// ---- rules ----

type ruleKey struct {
	Src        netip.Prefix // MPTCP modes: `from Src`, no mark
	Dst        netip.Prefix // mode mptcp: `to Dst`, no mark
	Mark, Mask uint32
	Table      int
	Priority   int
}

func keyOfRule(r netlink.Rule) ruleKey {
	k := ruleKey{Mark: r.Mark, Table: r.Table, Priority: r.Priority}
	if r.Src != nil {
		k.Src, _ = ipnetPrefix(r.Src)
	}
	if r.Dst != nil {
		k.Dst, _ = ipnetPrefix(r.Dst)
	}
	if r.Mask != nil {
		k.Mask = *r.Mask
	} else if r.Mark != 0 {
		k.Mask = 0xffffffff
	}
	return k
}

func ownedRule(r netlink.Rule, tables []int) bool {
	return r.Protocol == plan.RouteProtocol && slices.Contains(tables, r.Table)
}

func newRule(fam int, k ruleKey) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = fam
	switch {
	case k.Src.IsValid():
		r.Src = prefixIPNet(k.Src)
	case k.Dst.IsValid():
		r.Dst = prefixIPNet(k.Dst)
	default:
		r.Mark = k.Mark
		mask := k.Mask
		r.Mask = &mask
	}
	r.Table = k.Table
	r.Priority = k.Priority
	r.Protocol = plan.RouteProtocol
	return r
}

func restorableRule(r netlink.Rule) *netlink.Rule {
	c := r
	return &c
}

func describeRule(fam int, k ruleKey) string {
	f := "-4"
	if fam == netlink.FAMILY_V6 {
		f = "-6"
	}
	if k.Src.IsValid() {
		return fmt.Sprintf("rule %s from %s lookup %d pref %d proto linkagg", f, k.Src, k.Table, k.Priority)
	}
	if k.Dst.IsValid() {
		return fmt.Sprintf("rule %s to %s lookup %d pref %d proto linkagg", f, k.Dst, k.Table, k.Priority)
	}
	return fmt.Sprintf("rule %s fwmark %#x/%#x lookup %d pref %d proto linkagg", f, k.Mark, k.Mask, k.Table, k.Priority)
}

// syncRules adds the desired rules that are missing and returns the owned rules no longer desired (they go
// with deleteRules, after the nft table stopped marking packets for them).
func syncRules(t *txn, d plan.Desired, fp Footprint) ([]netlink.Rule, error) {
	tables := scopeTables(d, fp)
	fam := familyOf(d.Family)
	var wants []ruleKey
	for _, r := range d.Rules {
		if r.Family != 0 && familyOf(r.Family) != fam {
			return nil, fmt.Errorf("rule fwmark %#x lookup %d is %s in an %s group", r.Mark, r.Table, r.Family, d.Family)
		}
		wants = append(wants, ruleKey{Src: r.Src, Dst: r.Dst, Mark: r.Mark, Mask: r.Mask, Table: r.Table, Priority: r.Priority})
	}
	all, err := t.s.listRules(fam)
	if err != nil {
		return nil, fmt.Errorf("listing rules: %w", err)
	}
	matched := make([]bool, len(wants))
	var present int
	var extra []netlink.Rule
	for _, r := range all {
		if !ownedRule(r, tables) {
			continue
		}
		k := keyOfRule(r)
		if i := slices.IndexFunc(wants, func(w ruleKey) bool { return w == k }); i >= 0 && !matched[i] {
			matched[i] = true
			present++
			continue
		}
		extra = append(extra, r)
	}
	for i, k := range wants {
		if matched[i] {
			continue
		}
		nr := newRule(fam, k)
		if err := t.do("rules", "add "+describeRule(fam, k),
			func() error { return t.s.nl.RuleAdd(nr) },
			func() error { return t.s.nl.RuleDel(nr) }); err != nil {
			return nil, err
		}
	}
	t.count("rules", len(wants), present, len(extra))
	return extra, nil
}

// deleteRules deletes rules of ours, each with its undo.
func deleteRules(t *txn, fam int, rules []netlink.Rule) error {
	for _, r := range rules {
		if err := t.do("rules", "delete "+describeRule(fam, keyOfRule(r)),
			func() error { return t.s.nl.RuleDel(&r) },
			func() error { return t.s.nl.RuleAdd(restorableRule(r)) }); err != nil {
			return err
		}
	}
	return nil
}

func removeRules(t *txn, d plan.Desired, fp Footprint) error {
	tables := scopeTables(d, fp)
	fam := familyOf(d.Family)
	all, err := t.s.listRules(fam)
	if err != nil {
		return fmt.Errorf("listing rules: %w", err)
	}
	for _, r := range all {
		if !ownedRule(r, tables) {
			continue
		}
		r := r
		if err := t.do("rules", "delete "+describeRule(fam, keyOfRule(r)),
			func() error { return t.s.nl.RuleDel(&r) },
			func() error { return t.s.nl.RuleAdd(restorableRule(r)) }); err != nil {
			return err
		}
	}
	return nil
}
