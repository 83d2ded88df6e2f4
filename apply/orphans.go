package apply

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/plan"
)

// Orphans are objects of ours that no configured group claims: what a removed or renamed stanza left.
type Orphans struct {
	// Groups are group IDs known from a footprint, an nft table tag, a TUN of ours, a sysctl/MPTCP claim
	// or mptcp-transparent pins (a BPF program attached for the group), that are not configured: Down(Unconfigured(id)) removes each.
	Groups []string
	// Rules and Routes (protocol 76) in tables that neither a configured group nor a footprint claims,
	// and main-table routes of ours through a device that is no configured group's TUN.
	Rules  []netlink.Rule
	Routes []netlink.Route
	// Lines describe each orphan for status.
	Lines []string
}

// Empty tells whether nothing is orphaned.
func (o Orphans) Empty() bool { return len(o.Groups) == 0 && len(o.Rules) == 0 && len(o.Routes) == 0 }

// Orphans looks for objects of ours that none of the configured groups (their plans, ds) claims.
func (s *Session) Orphans(ds []plan.Desired) (Orphans, error) {
	var o Orphans
	configured := map[string]bool{}
	tuns := map[string]bool{}
	var claimed []int
	for _, d := range ds {
		configured[d.Group] = true
		tuns[d.TUN.Name] = true
		claimed = append(claimed, groupTables(d)...)
		fp, err := s.loadFootprint(d.Group)
		if err != nil {
			return o, err
		}
		claimed = append(claimed, fp.Tables...)
	}
	addGroup := func(g, why string) {
		if !configured[g] && validGroupID(g) && !slices.Contains(o.Groups, g) {
			o.Groups = append(o.Groups, g)
			o.Lines = append(o.Lines, fmt.Sprintf("group %s: %s", g, why))
		}
	}

	fps, err := s.Footprints()
	if err != nil {
		return o, err
	}
	for _, g := range fps {
		fp, err := s.loadFootprint(g)
		if err != nil {
			return o, err
		}
		if !configured[g] {
			addGroup(g, "footprint in "+s.describeDir())
			continue
		}
		claimed = append(claimed, fp.Tables...)
	}
	// footprints of orphans claim their tables too: their Down removes them
	for _, g := range o.Groups {
		fp, _ := s.loadFootprint(g)
		claimed = append(claimed, fp.Tables...)
	}

	c, err := s.nft()
	if err != nil {
		return o, err
	}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		tabs, err := c.ListTablesOfFamily(fam)
		if err != nil {
			return o, fmt.Errorf("listing nft tables: %w", err)
		}
		for _, tab := range tabs {
			if !strings.HasPrefix(tab.Name, plan.NftTablePrefix) {
				continue
			}
			rules, err := nftRules(c, tab)
			if err != nil {
				return o, err
			}
			for _, r := range rules {
				tag, _ := userdata.GetString(r.rule.UserData, userdata.TypeComment)
				if g, ok := tagGroup(tag); ok {
					addGroup(g, fmt.Sprintf("nft table %s %s", nftFamName(fam), tab.Name))
					break
				}
			}
		}
	}

	links, err := s.linkList()
	if err != nil {
		return o, err
	}
	for _, l := range links {
		if a := l.Attrs(); a.Alias == plan.LinkAlias && isTun(l) && !tuns[a.Name] {
			addGroup(a.Name, "tun device "+a.Name+" (alias linkagg)")
		}
	}

	sst, err := s.loadSysctlState()
	if err != nil {
		return o, err
	}
	for _, cl := range sst.Claims {
		for _, g := range cl.Groups {
			addGroup(g, "sysctl claim on "+cl.Key)
		}
	}
	mst, err := s.loadMPTCPState()
	if err != nil {
		return o, err
	}
	for g := range mst.Claims {
		addGroup(g, "MPTCP limits claim")
	}
	tgs, err := TransparentGroups(s.bpffs())
	if err != nil {
		return o, err
	}
	for _, g := range tgs {
		if dir, _, err := transparentDir(s.bpffs(), g); err == nil {
			addGroup(g, "mptcp-transparent pins in "+dir)
		}
	}
	slices.Sort(o.Groups)

	ourTun := func(index int) bool {
		l, err := s.linkByIndex(index)
		return err == nil && l != nil && tuns[l.Attrs().Name]
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := s.listRules(fam)
		if err != nil {
			return o, fmt.Errorf("listing rules: %w", err)
		}
		for _, r := range rules {
			if r.Protocol == plan.RouteProtocol && !slices.Contains(claimed, r.Table) {
				o.Rules = append(o.Rules, r)
				o.Lines = append(o.Lines, "rule "+describeRule(fam, keyOfRule(r)))
			}
		}
		routes, err := s.listRoutes(fam)
		if err != nil {
			return o, fmt.Errorf("listing routes: %w", err)
		}
		for _, r := range routes {
			if r.Protocol != plan.RouteProtocol {
				continue
			}
			if r.Table == unix.RT_TABLE_MAIN && ourTun(r.LinkIndex) || r.Table != unix.RT_TABLE_MAIN && slices.Contains(claimed, r.Table) {
				continue
			}
			o.Routes = append(o.Routes, r)
			o.Lines = append(o.Lines, "route "+s.describeRoute(r))
		}
	}
	return o, nil
}

// tagGroup is the group of an nft rule tag "linkagg:GROUP:HASH".
func tagGroup(tag string) (string, bool) {
	rest, ok := strings.CutPrefix(tag, "linkagg:")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 {
		return "", false
	}
	return rest[:i], validGroupID(rest[:i])
}

// RemoveOrphans deletes the orphaned rules and routes of o (its groups are taken down by the caller first,
// with Down). It goes on after an error.
func (s *Session) RemoveOrphans(o Orphans) (Result, error) {
	if s.unlock == nil {
		return Result{}, errors.New("remove orphans: the session is read-only")
	}
	t := s.txn(false)
	var errs []error
	for _, r := range o.Rules {
		r := r
		if err := t.do("rules", "delete orphaned "+describeRule(r.Family, keyOfRule(r)),
			func() error { return s.nl.RuleDel(&r) }, nil); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range o.Routes {
		r := r
		if err := t.do("routes", "delete orphaned route "+s.describeRoute(r),
			func() error { return s.nl.RouteDel(&r) }, nil); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, err)
		}
	}
	return t.result(), errors.Join(errs...)
}
