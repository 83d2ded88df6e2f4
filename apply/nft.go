package apply

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// How many elements of a map fit the one netlink attribute that carries them (its length has 16 bits;
// beyond, it wraps and the kernel keeps a truncated map without an error): 52 bytes per element of a
// numgen map, at most 56 per element of the peers' map.
const (
	maxMapElements  = 1260
	maxPeerElements = 1170
)

// RouteChain is the base chain of our table (type route, hook output, priority mangle).
const RouteChain = "route"

// MarkChain names the chain that sets a path's mark.
func MarkChain(mark uint32) string { return plan.ChainName(mark) }

func nftFamily(f parser.Family) nftables.TableFamily {
	if f == parser.Inet6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// nftTableName is the name of the group's table: d.Nft.Table, or linkagg_<tun> when there is no spec.
func nftTableName(d plan.Desired) string {
	if d.Nft != nil && d.Nft.Table != "" {
		return d.Nft.Table
	}
	return plan.NftTablePrefix + d.TUN.Name
}

// nftHash is a short digest of the whole spec; every rule of ours carries it.
func nftHash(n *plan.Nft) string {
	b, _ := json.Marshal(n)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:6])
}

// NftTag is the comment (rule user data) of our rules.
func NftTag(group string, n *plan.Nft) string { return "linkagg:" + group + ":" + nftHash(n) }

func findTable(c *nftables.Conn, fam nftables.TableFamily, name string) (*nftables.Table, error) {
	ts, err := c.ListTablesOfFamily(fam)
	if err != nil {
		return nil, fmt.Errorf("listing nft tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == name {
			return t, nil
		}
	}
	return nil, nil
}

// nftConverged tells whether our table holds exactly the chains of n and every rule carries tag.
func nftConverged(c *nftables.Conn, tab *nftables.Table, n *plan.Nft, tag string) (bool, error) {
	chains, err := c.ListChainsOfTableFamily(tab.Family)
	if err != nil {
		return false, fmt.Errorf("listing nft chains: %w", err)
	}
	want := map[string]int{RouteChain: len(n.Fakenets) + b2i(n.SkipMPTCP) + b2i(n.PinMPTCP != nil) + b2i(len(n.Peers) > 0)}
	for _, m := range n.Marks() {
		want[MarkChain(m)] = 1
	}
	for i, p := range n.Peers {
		if p.HasChain() {
			want[plan.SequenceChain(i)] = 1
		}
	}
	seen := 0
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != tab.Name {
			continue
		}
		nrules, ok := want[ch.Name]
		if !ok {
			return false, nil
		}
		seen++
		rules, err := c.GetRules(tab, ch)
		if err != nil {
			return false, fmt.Errorf("listing nft rules of %s: %w", ch.Name, err)
		}
		if len(rules) != nrules {
			return false, nil
		}
		for _, r := range rules {
			if got, _ := userdata.GetString(r.UserData, userdata.TypeComment); got != tag {
				return false, nil
			}
			if strings.HasPrefix(ch.Name, "mark_") && !slices.ContainsFunc(r.Exprs, isCounter) {
				return false, nil // a table made before mark chains counted: replaced once
			}
		}
	}
	return seen == len(want), nil
}

func isCounter(e expr.Any) bool { _, ok := e.(*expr.Counter); return ok }

// Counter is what one path's mark chain has counted since our table was last made (every change of the
// sequence replaces the table, and the counters start again from zero).
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// PathCounters reads the counter of every mark chain in the group's table, by mark. A group without a
// table (mode mptcp, no path active, not applied) gives an empty map. Read only.
func (s *Session) PathCounters(d plan.Desired) (map[uint32]Counter, error) {
	c, err := s.nft()
	if err != nil {
		return nil, err
	}
	tab, err := findTable(c, nftFamily(d.Family), nftTableName(d))
	if err != nil || tab == nil {
		return map[uint32]Counter{}, err
	}
	chains, err := c.ListChainsOfTableFamily(tab.Family)
	if err != nil {
		return nil, fmt.Errorf("listing nft chains: %w", err)
	}
	out := map[uint32]Counter{}
	for _, ch := range chains {
		var mark uint32
		if ch.Table == nil || ch.Table.Name != tab.Name {
			continue
		}
		if _, err := fmt.Sscanf(ch.Name, "mark_%08x", &mark); err != nil || MarkChain(mark) != ch.Name {
			continue
		}
		rules, err := c.GetRules(tab, ch)
		if err != nil {
			return nil, fmt.Errorf("listing nft rules of %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if x, ok := e.(*expr.Counter); ok {
					out[mark] = Counter{Packets: out[mark].Packets + x.Packets, Bytes: out[mark].Bytes + x.Bytes}
				}
			}
		}
	}
	return out, nil
}

func be(a netip.Addr) []byte { return a.AsSlice() }

// buildNft queues our whole table on c (no flush).
func buildNft(c *nftables.Conn, group string, n *plan.Nft) error {
	if len(n.Sequence) == 0 {
		return fmt.Errorf("nft spec of %s has an empty mark sequence", group)
	}
	ud := userdata.AppendString(nil, userdata.TypeComment, NftTag(group, n))
	tab := c.AddTable(&nftables.Table{Name: n.Table, Family: nftFamily(n.Family)})
	policy := nftables.ChainPolicyAccept
	route := c.AddChain(&nftables.Chain{
		Name: RouteChain, Table: tab, Type: nftables.ChainTypeRoute,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle, Policy: &policy,
	})
	for _, m := range n.Marks() {
		if m&^n.Mask != 0 {
			return fmt.Errorf("mark %#x has bits outside the mask %#x", m, n.Mask)
		}
		ch := c.AddChain(&nftables.Chain{Name: MarkChain(m), Table: tab})
		c.AddRule(&nftables.Rule{Table: tab, Chain: ch, UserData: ud, Exprs: []expr.Any{
			// what this path was sent: read back by PathCounters for `linkagg status`
			&expr.Counter{},
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(^n.Mask), Xor: binaryutil.NativeEndian.PutUint32(m)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		}})
	}
	mptcpOption := []expr.Any{ // `tcp option mptcp exists` (TCP option kind 30)
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: 30, Offset: 0, Len: 1, Flags: unix.NFT_EXTHDR_F_PRESENT, DestRegister: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
	}
	if pin := n.PinMPTCP; pin != nil {
		// mode hybrid: `meta l4proto tcp ip saddr VIP tcp option mptcp exists goto mark_PRIMARY`
		var offset, length uint32 = 12, 4 // ip saddr
		if n.Family == parser.Inet6 {
			offset, length = 8, 16
		}
		if pin.Src.Is6() != (n.Family == parser.Inet6) {
			return fmt.Errorf("the VIP %s is not of family %s", pin.Src, n.Family)
		}
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be(pin.Src)},
		}
		exprs = append(append(exprs, mptcpOption...), &expr.Verdict{Kind: expr.VerdictGoto, Chain: MarkChain(pin.Mark)})
		c.AddRule(&nftables.Rule{Table: tab, Chain: route, UserData: ud, Exprs: exprs})
	}
	if n.SkipMPTCP {
		// mode hybrid: `meta l4proto tcp tcp option mptcp exists return`
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		}
		exprs = append(append(exprs, mptcpOption...), &expr.Verdict{Kind: expr.VerdictReturn})
		c.AddRule(&nftables.Rule{Table: tab, Chain: route, UserData: ud, Exprs: exprs})
	}
	var offset, length uint32 = 16, 4 // ip daddr
	if n.Family == parser.Inet6 {
		offset, length = 24, 16 // ip6 daddr
	}
	daddr := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length}
	if len(n.Peers) > 0 {
		// `ip daddr vmap { PEER : goto peers_I, … }`: the peers that cannot use every path take their own
		// sequence (or, reached by no path, stay unmarked)
		set := &nftables.Set{Table: tab, Anonymous: true, Constant: true, IsMap: true,
			KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict}
		if n.Family == parser.Inet6 {
			set.KeyType = nftables.TypeIP6Addr
		}
		var elems []nftables.SetElement
		for i, p := range n.Peers {
			v := &expr.Verdict{Kind: expr.VerdictAccept}
			if len(p.Sequence) == 1 {
				v = &expr.Verdict{Kind: expr.VerdictGoto, Chain: MarkChain(p.Sequence[0])}
			}
			if p.HasChain() {
				v = &expr.Verdict{Kind: expr.VerdictGoto, Chain: plan.SequenceChain(i)}
				ch := c.AddChain(&nftables.Chain{Name: plan.SequenceChain(i), Table: tab})
				exprs, err := numgenMap(c, tab, p.Sequence)
				if err != nil {
					return err
				}
				c.AddRule(&nftables.Rule{Table: tab, Chain: ch, UserData: ud, Exprs: exprs})
			}
			for _, vip := range p.VIPs {
				if vip.Is6() != (n.Family == parser.Inet6) {
					return fmt.Errorf("peer %s is not of family %s", vip, n.Family)
				}
				elems = append(elems, nftables.SetElement{Key: be(vip), VerdictData: v})
			}
		}
		if len(elems) > maxPeerElements {
			return fmt.Errorf("nft spec of %s: the map of the %d peers with sequences of their own does not fit one netlink attribute (at most %d)", group, len(elems), maxPeerElements)
		}
		if err := c.AddSet(set, elems); err != nil {
			return fmt.Errorf("nft map: %w", err)
		}
		c.AddRule(&nftables.Rule{Table: tab, Chain: route, UserData: ud, Exprs: []expr.Any{
			daddr,
			&expr.Lookup{SourceRegister: 1, IsDestRegSet: true, DestRegister: 0, SetName: set.Name, SetID: set.ID},
		}})
	}
	for _, fn := range n.Fakenets {
		fn = fn.Masked()
		if (fn.Addr().Is6()) != (n.Family == parser.Inet6) {
			return fmt.Errorf("fakenet %s is not of family %s", fn, n.Family)
		}
		exprs := []expr.Any{daddr}
		if fn.Bits() < fn.Addr().BitLen() {
			mask := prefixIPNet(fn).Mask
			exprs = append(exprs, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: length,
				Mask: []byte(mask), Xor: make([]byte, length)})
		}
		exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be(fn.Addr())})
		ng, err := numgenMap(c, tab, n.Sequence)
		if err != nil {
			return err
		}
		c.AddRule(&nftables.Rule{Table: tab, Chain: route, UserData: ud, Exprs: append(exprs, ng...)})
	}
	return nil
}

// numgenMap queues the anonymous map of seq and returns `numgen inc mod len(seq) vmap { i : goto mark_… }`.
func numgenMap(c *nftables.Conn, tab *nftables.Table, seq []uint32) ([]expr.Any, error) {
	if len(seq) > maxMapElements {
		return nil, fmt.Errorf("a mark sequence of %d entries does not fit one netlink attribute (at most %d)", len(seq), maxMapElements)
	}
	set := &nftables.Set{Table: tab, Anonymous: true, Constant: true, IsMap: true,
		KeyType: nftables.TypeInteger, DataType: nftables.TypeVerdict}
	var elems []nftables.SetElement
	for i, m := range seq {
		elems = append(elems, nftables.SetElement{
			Key:         binaryutil.BigEndian.PutUint32(uint32(i)),
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: MarkChain(m)},
		})
	}
	if err := c.AddSet(set, elems); err != nil {
		return nil, fmt.Errorf("nft map: %w", err)
	}
	return []expr.Any{
		&expr.Numgen{Register: 1, Modulus: uint32(len(seq)), Type: unix.NFT_NG_INCREMENTAL},
		// google/nftables tags every constant set as big endian (NFTNL_UDATA_SET_KEYBYTEORDER), so the
		// keys are big endian and the host-order numgen value is converted, as nft itself does.
		&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4},
		&expr.Lookup{SourceRegister: 1, IsDestRegSet: true, DestRegister: 0, SetName: set.Name, SetID: set.ID},
	}, nil
}

// replaceNft swaps our table for the one of n (nil: no table) in one transaction.
func (s *Session) replaceNft(group string, fam nftables.TableFamily, name string, exists bool, n *plan.Nft) error {
	c, err := s.nft()
	if err != nil {
		return err
	}
	if exists {
		c.DelTable(&nftables.Table{Name: name, Family: fam})
	}
	if n != nil {
		if err := buildNft(c, group, n); err != nil {
			return err
		}
	}
	return s.flushNft(c, group, fam, name, n)
}

// flushNft sends c's transaction, after which the table name of family fam must be n (nil: gone). ENOBUFS
// means the acknowledgements overflowed our receive buffer (see nftBufferBytes): the kernel processed the
// whole batch, atomically, and only the answers were lost; the table read back tells whether it landed.
func (s *Session) flushNft(c *nftables.Conn, group string, fam nftables.TableFamily, name string, n *plan.Nft) error {
	err := c.Flush()
	if err == nil || !errors.Is(err, unix.ENOBUFS) {
		return err
	}
	r, rerr := s.nft()
	if rerr != nil {
		return err
	}
	tab, rerr := findTable(r, fam, name)
	switch {
	case rerr != nil:
		return err
	case n == nil && tab == nil:
		return nil
	case n != nil && tab != nil:
		if ok, cerr := nftConverged(r, tab, n, NftTag(group, n)); cerr == nil && ok {
			s.logf("nft table %s %s: the kernel's acknowledgements overflowed the socket buffer; the table read back is the one sent", nftFamName(fam), name)
			return nil
		}
	}
	return err
}

func describeNft(n *plan.Nft) string {
	var seq []string
	for _, m := range n.Sequence {
		seq = append(seq, fmt.Sprintf("%#x", m))
	}
	var fns []string
	for _, f := range n.Fakenets {
		fns = append(fns, f.String())
	}
	skip := ""
	if n.SkipMPTCP {
		skip = ", MPTCP segments unmarked"
	}
	peers := ""
	for _, p := range n.Peers {
		var ps []string
		for _, m := range p.Sequence {
			ps = append(ps, fmt.Sprintf("%#x", m))
		}
		var vs []string
		for _, v := range p.VIPs {
			vs = append(vs, v.String())
		}
		peers += fmt.Sprintf(", %s -> [%s]", strings.Join(vs, ","), strings.Join(ps, " "))
	}
	return fmt.Sprintf("nft table %s %s: %s -> sequence [%s]%s%s", famName(n.Family), n.Table, strings.Join(fns, ","), strings.Join(seq, " "), peers, skip)
}

func famName(f parser.Family) string {
	if f == parser.Inet6 {
		return "ip6"
	}
	return "ip"
}

// syncNft converges our table to d.Nft; prev is the spec last applied (to undo a replacement), if known.
func syncNft(t *txn, d plan.Desired, prev *plan.Nft) error {
	s := t.s
	c, err := s.nft()
	if err != nil {
		return err
	}
	fam := nftFamily(d.Family)
	name := nftTableName(d)
	if !strings.HasPrefix(name, plan.NftTablePrefix) {
		return fmt.Errorf("nft table %q does not start with %q", name, plan.NftTablePrefix)
	}
	tab, err := findTable(c, fam, name)
	if err != nil {
		return err
	}
	n := d.Nft
	if n != nil && nftFamily(n.Family) != fam {
		return fmt.Errorf("nft spec family %s differs from the group's %s", n.Family, d.Family)
	}
	exists := tab != nil
	if n == nil {
		t.count("nft", 0, 0, b2i(exists))
		if !exists {
			return nil
		}
		return t.do("nft", fmt.Sprintf("delete nft table %s %s", famName(d.Family), name),
			func() error { return s.replaceNft(d.Group, fam, name, true, nil) },
			s.restoreNft(d.Group, fam, name, prev))
	}
	tag := NftTag(d.Group, n)
	if exists {
		ok, err := nftConverged(c, tab, n, tag)
		if err != nil {
			return err
		}
		if ok {
			t.count("nft", 1, 1, 0)
			return nil
		}
		s.warnForeignNftRules(c, tab, d.Group)
	}
	t.count("nft", 1, 0, 0)
	verb := "add"
	if exists {
		verb = "replace"
	}
	var un func() error
	if exists {
		un = s.restoreNft(d.Group, fam, name, prev)
	} else {
		un = func() error { return s.replaceNft(d.Group, fam, name, true, nil) }
	}
	return t.do("nft", verb+" "+describeNft(n),
		func() error { return s.replaceNft(d.Group, fam, name, exists, n) }, un)
}

// restoreNft puts back the table we replaced or deleted, when we know its spec (the footprint); without
// it, the table is only removed.
func (s *Session) restoreNft(group string, fam nftables.TableFamily, name string, prev *plan.Nft) func() error {
	return func() error {
		c, err := s.nft()
		if err != nil {
			return err
		}
		tab, err := findTable(c, fam, name)
		if err != nil {
			return err
		}
		if tab != nil {
			c.DelTable(tab)
		}
		var want *plan.Nft
		if prev != nil && prev.Table == name && nftFamily(prev.Family) == fam {
			if err := buildNft(c, group, prev); err != nil {
				return err
			}
			want = prev
		}
		return s.flushNft(c, group, fam, name, want)
	}
}

// warnForeignNftRules logs the rules someone added by hand inside our table: replacing or deleting the
// table (one transaction) removes them with it.
func (s *Session) warnForeignNftRules(c *nftables.Conn, tab *nftables.Table, group string) {
	rules, err := nftRules(c, tab)
	if err != nil {
		return
	}
	for _, r := range rules {
		if tag, _ := userdata.GetString(r.rule.UserData, userdata.TypeComment); !strings.HasPrefix(tag, "linkagg:"+group+":") {
			s.logf("warning: nft table %s %s is linkagg's, but its chain %s holds a rule that is not (handle %d): it goes with the table",
				nftFamName(tab.Family), tab.Name, r.chain, r.rule.Handle)
		}
	}
}

// removeNft deletes the group's table (Down): linkagg_<tun> of the group's family and any other table its
// footprint names. A table that holds a rule with the group's tag is ours and is deleted whole, with any
// rule someone added to it; one without is another program's and is left alone.
func removeNft(t *txn, d plan.Desired, fp Footprint) error {
	s := t.s
	c, err := s.nft()
	if err != nil {
		return err
	}
	fam := nftFamily(d.Family)
	names := []string{plan.NftTablePrefix + d.TUN.Name}
	for _, n := range []*plan.Nft{d.Nft, fp.Nft} {
		if n != nil && !slices.Contains(names, n.Table) && strings.HasPrefix(n.Table, plan.NftTablePrefix) {
			names = append(names, n.Table)
		}
	}
	for _, name := range names {
		tab, err := findTable(c, fam, name)
		if err != nil {
			return err
		}
		if tab == nil {
			continue
		}
		if ok, err := nftOwned(c, tab, d.Group); err != nil {
			return err
		} else if !ok {
			t.logf("leaving nft table %s %s: it is not linkagg's (no rule carries the linkagg:%s tag)", famName(d.Family), name, d.Group)
			continue
		}
		s.warnForeignNftRules(c, tab, d.Group)
		if err := t.do("nft", fmt.Sprintf("delete nft table %s %s", famName(d.Family), name),
			func() error { return s.replaceNft(d.Group, fam, name, true, nil) }, nil); err != nil {
			return err
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
