package apply

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/plan"
)

// ConflictError says the kernel holds something that is not ours where the plan needs to be alone: a
// foreign ip rule looking up one of our tables, a foreign nft table with our table's name, a foreign nft
// rule writing bits of our mark; or it lacks what an option needs (mptcp-transparent on a kernel without
// the BPF hook, BTF or a bpffs). Apply refuses before its first write. Option names the configuration
// option the conflict is about ("table", "fwmark-mask"; "" = the group as a whole), so the caller can
// point at its file:line.
type ConflictError struct {
	Option string
	Msg    string
}

func (e *ConflictError) Error() string { return e.Msg }

// precheck is the one read-only pass that looks for foreign kernel state in the group's way, before Apply
// writes anything: rules on its tables, a table with its nft table's name, marks inside its mask, routes
// with the destination of one of its routes, MPTCP endpoints of other software on its addresses.
func (s *Session) precheck(d plan.Desired, fp Footprint) error {
	if err := s.transparentPossible(d); err != nil {
		return err
	}
	if err := s.foreignRules(d, fp); err != nil {
		return err
	}
	c, err := s.nft()
	if err != nil {
		return err
	}
	if err := foreignNftTable(c, d); err != nil {
		return err
	}
	if err := foreignMarks(c, d); err != nil {
		return err
	}
	if err := s.foreignRoutes(d, fp); err != nil {
		return err
	}
	return s.foreignEndpoints(d, fp)
}

// foreignRules refuses a rule not tagged as ours (protocol != 76) that looks up one of the group's tables:
// we would route its packets with our peer routes, and our Down would leave it pointing at an empty table.
// Tables are per family, so only rules of the group's family count.
func (s *Session) foreignRules(d plan.Desired, fp Footprint) error {
	tables := scopeTables(d, fp)
	rules, err := s.listRules(familyOf(d.Family))
	if err != nil {
		return fmt.Errorf("listing rules: %w", err)
	}
	for _, r := range rules {
		if r.Protocol == plan.RouteProtocol || !slices.Contains(tables, r.Table) {
			continue
		}
		return &ConflictError{Option: "table", Msg: fmt.Sprintf(
			"table %d is used by a foreign ip rule (%s, proto %d): expected the group's tables to be looked up by linkagg's rules only (pick other tables or remove that rule)",
			r.Table, describeForeignRule(r), r.Protocol)}
	}
	return nil
}

func describeForeignRule(r netlink.Rule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pref %d", r.Priority)
	if r.Invert {
		b.WriteString(" not")
	}
	if r.Src != nil {
		fmt.Fprintf(&b, " from %s", r.Src)
	}
	if r.Dst != nil {
		fmt.Fprintf(&b, " to %s", r.Dst)
	}
	if r.Mark != 0 {
		fmt.Fprintf(&b, " fwmark %#x", r.Mark)
		if r.Mask != nil {
			fmt.Fprintf(&b, "/%#x", *r.Mask)
		}
	}
	if r.IifName != "" {
		fmt.Fprintf(&b, " iif %s", r.IifName)
	}
	if r.OifName != "" {
		fmt.Fprintf(&b, " oif %s", r.OifName)
	}
	fmt.Fprintf(&b, " lookup %d", r.Table)
	return b.String()
}

type chainRule struct {
	chain string
	rule  *nftables.Rule
}

// nftRules lists the rules of every chain of tab.
func nftRules(c *nftables.Conn, tab *nftables.Table) ([]chainRule, error) {
	chains, err := c.ListChainsOfTableFamily(tab.Family)
	if err != nil {
		return nil, fmt.Errorf("listing nft chains: %w", err)
	}
	var out []chainRule
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != tab.Name {
			continue
		}
		rules, err := c.GetRules(tab, ch)
		if err != nil {
			return nil, fmt.Errorf("listing nft rules of %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			out = append(out, chainRule{ch.Name, r})
		}
	}
	return out, nil
}

// nftOwned tells whether tab is the group's own table: at least one of its rules carries the group's tag.
// We make the table with all its rules in one transaction, so an empty or untagged table is not ours; a
// table of ours to which someone added a rule by hand is still ours (and goes whole when we replace it).
func nftOwned(c *nftables.Conn, tab *nftables.Table, group string) (bool, error) {
	rules, err := nftRules(c, tab)
	if err != nil {
		return false, err
	}
	for _, r := range rules {
		if tag, _ := userdata.GetString(r.rule.UserData, userdata.TypeComment); strings.HasPrefix(tag, "linkagg:"+group+":") {
			return true, nil
		}
	}
	return false, nil
}

// foreignNftTable refuses a table with our table's name that we did not make: replacing it would delete
// someone else's rules.
func foreignNftTable(c *nftables.Conn, d plan.Desired) error {
	fam := nftFamily(d.Family)
	names := []string{plan.NftTablePrefix + d.TUN.Name}
	if n := nftTableName(d); n != names[0] {
		names = append(names, n)
	}
	for _, name := range names {
		tab, err := findTable(c, fam, name)
		if err != nil || tab == nil {
			return err
		}
		ok, err := nftOwned(c, tab, d.Group)
		if err != nil {
			return err
		}
		if !ok {
			return &ConflictError{Msg: fmt.Sprintf(
				"nft table %s %s exists and is not linkagg's (its rules lack the linkagg:%s tag): expected no table of that name (rename the group's interface or remove that table)",
				famName(d.Family), name, d.Group)}
		}
	}
	return nil
}

// regVal is what an nft register holds while a rule's expressions run, as far as marks go: either a known
// constant, or the packet mark transformed as (mark & mask) ^ xor.
type regVal struct {
	imm       bool
	v         uint32 // imm: the constant
	mask, xor uint32 // !imm: from the mark
}

// markBitsWritten returns the bits of the packet mark that a `meta mark set` in exprs may change, or
// 0 when it sets none or sets them from a value we cannot follow (ct mark, maps, xt targets).
func markBitsWritten(exprs []expr.Any) uint32 {
	regs := map[uint32]regVal{}
	var bits uint32
	u32 := func(b []byte) (uint32, bool) {
		if len(b) != 4 {
			return 0, false
		}
		return binary.NativeEndian.Uint32(b), true
	}
	for _, e := range exprs {
		switch x := e.(type) {
		case *expr.Immediate:
			if v, ok := u32(x.Data); ok {
				regs[x.Register] = regVal{imm: true, v: v}
			} else {
				delete(regs, x.Register)
			}
		case *expr.Meta:
			if x.Key != expr.MetaKeyMARK {
				if !x.SourceRegister {
					delete(regs, x.Register)
				}
				continue
			}
			if !x.SourceRegister {
				regs[x.Register] = regVal{mask: 0xffffffff}
				continue
			}
			r, ok := regs[x.Register]
			switch {
			case !ok:
			case r.imm:
				// the whole mark becomes r.v: the bits it sets are ours to worry about
				bits |= r.v
			default:
				// (mark & mask) ^ xor changes the bits cleared by mask and the bits flipped by xor
				bits |= ^r.mask | r.xor
			}
		case *expr.Bitwise:
			m, ok1 := u32(x.Mask)
			xo, ok2 := u32(x.Xor)
			r, ok := regs[x.SourceRegister]
			if !ok || !ok1 || !ok2 {
				delete(regs, x.DestRegister)
				continue
			}
			if r.imm {
				regs[x.DestRegister] = regVal{imm: true, v: r.v&m ^ xo}
			} else {
				regs[x.DestRegister] = regVal{mask: r.mask & m, xor: r.xor&m ^ xo}
			}
		default:
			// any other expression may load a register; forget them all (conservative: no false alarms)
			regs = map[uint32]regVal{}
		}
	}
	return bits
}

// foreignMarks refuses when a foreign nft rule (any table, any family) writes bits inside our mark mask:
// its packets would match our fwmark rules, or ours lose their path. Rules we cannot decode are skipped:
// this check is best effort and must not stop a boot on a table it does not understand.
func foreignMarks(c *nftables.Conn, d plan.Desired) error {
	if d.Nft == nil || d.Nft.Mask == 0 {
		return nil
	}
	mask := d.Nft.Mask
	chains, err := c.ListChains()
	if err != nil {
		return fmt.Errorf("listing nft chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table == nil {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			continue
		}
		for _, r := range rules {
			if tag, _ := userdata.GetString(r.UserData, userdata.TypeComment); strings.HasPrefix(tag, "linkagg:") {
				continue
			}
			if bits := markBitsWritten(r.Exprs) & mask; bits != 0 {
				return &ConflictError{Option: "fwmark-mask", Msg: fmt.Sprintf(
					"nft rule in table %s %s chain %s (handle %d) writes packet mark bits %#x inside linkagg's fwmark-mask %#x: expected foreign rules to leave those bits alone (choose another fwmark-mask and fwmark)",
					nftFamName(ch.Table.Family), ch.Table.Name, ch.Name, r.Handle, bits, mask)}
			}
		}
	}
	return nil
}

func nftFamName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprint(f)
}

// Precheck runs Apply's checks for foreign state in the way without writing: ifupdown's pre-up calls it so
// a conflict fails ifup before ifupdown configures anything.
func (s *Session) Precheck(d plan.Desired) error {
	fp, err := s.loadFootprint(d.Group)
	if err != nil {
		return err
	}
	if err := s.precheck(d, fp); err != nil {
		return fmt.Errorf("apply %s: %w", d.Group, err)
	}
	return nil
}

// foreignRoutes refuses a route of other software with the destination of one of the group's routes in the
// same table: adding ours would fail half-way through the run, or shadow it.
func (s *Session) foreignRoutes(d plan.Desired, fp Footprint) error {
	tables := scopeTables(d, fp)
	byFam := map[int][]netlink.Route{}
	for _, r := range d.Routes {
		fam := prefixFamily(r.Dst)
		all, ok := byFam[fam]
		if !ok {
			var err error
			if all, err = s.listRoutes(fam); err != nil {
				return fmt.Errorf("listing routes: %w", err)
			}
			byFam[fam] = all
		}
		table := r.Table
		if table == 0 {
			table = unix.RT_TABLE_MAIN
		}
		for _, x := range all {
			if x.Protocol == plan.RouteProtocol && (slices.Contains(tables, x.Table) || x.Table == unix.RT_TABLE_MAIN) {
				continue // ours (main: via our TUN, or another group's fakenet, which validate keeps apart)
			}
			if x.Table != table || x.Priority != 0 || x.Tos != 0 || (x.Type != unix.RTN_UNICAST && x.Type != 0) {
				continue
			}
			if k := keyOfRoute(x); k.Dst == r.Dst.Masked() {
				opt := "rspec"
				if table == unix.RT_TABLE_MAIN {
					opt = "fakenet"
				}
				return &ConflictError{Option: opt, Msg: fmt.Sprintf(
					"route %s table %s: a foreign route (%s, proto %d) has the same destination: expected none (remove it, or change the configuration)",
					r.Dst, tableName(table), s.describeRoute(x), x.Protocol)}
			}
		}
	}
	return nil
}

// foreignEndpoints refuses an MPTCP endpoint of other software on one of the addresses the group needs an
// endpoint on: the kernel keeps one endpoint per address.
func (s *Session) foreignEndpoints(d plan.Desired, fp Footprint) error {
	if d.MPTCP == nil || len(d.MPTCP.Endpoints) == 0 {
		return nil
	}
	all, err := s.listEndpoints()
	if err != nil {
		return err
	}
	for _, w := range d.MPTCP.Endpoints {
		for _, e := range all {
			if e.Addr == w.Addr && !ownedEndpoint(e, d, fp) {
				return &ConflictError{Option: "rspec", Msg: fmt.Sprintf(
					"path %d: address %s already has an MPTCP endpoint of other software (%s): expected none (remove it, or give this path mptcp-flags off)",
					w.Path+1, w.Addr, s.describeEndpoint(e))}
			}
		}
	}
	return nil
}
