package apply

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// Apply converges the kernel to d, writing only the difference. On any error, including a failure to save
// the group's footprint or the sysctl claims afterwards, every write of this run is undone and the error
// names the step that failed.
func (s *Session) Apply(d plan.Desired) (Result, error) {
	if d.Group == "" || d.TUN.Name == "" {
		return Result{}, errors.New("apply: Desired has no group or TUN name")
	}
	if s.unlock == nil {
		return Result{}, errors.New("apply: the session is read-only")
	}
	fp, err := s.loadFootprint(d.Group)
	if err != nil {
		return Result{}, fmt.Errorf("apply %s: %w", d.Group, err)
	}
	if err := s.precheck(d, fp); err != nil { // foreign state in our way: refuse before the first write
		return Result{}, fmt.Errorf("apply %s: %w", d.Group, err)
	}
	sst, err := s.loadSysctlState()
	if err != nil {
		return Result{}, fmt.Errorf("apply %s: %w", d.Group, err)
	}
	// write-ahead: before the first write the footprint covers the old state and the new plan, so a run
	// killed half-way leaves nothing its group cannot find again
	prevFile, err := s.dir.Read(footprintFile(d.Group))
	if err != nil {
		return Result{}, fmt.Errorf("apply %s: %w", d.Group, err)
	}
	next := newFootprint(d, fp)
	if d.Transparent != nil {
		// the pins' folder is in the footprint before the program is attached
		if next.Transparent, _, err = transparentDir(s.bpffs(), d.Group); err != nil {
			return Result{}, fmt.Errorf("apply %s: %w", d.Group, err)
		}
	}
	ahead := next
	ahead.merge(fp)
	if err := s.saveFootprint(ahead); err != nil {
		return Result{}, fmt.Errorf("apply %s: saving the footprint: %w (nothing was written)", d.Group, err)
	}
	t := s.txn(false)
	defer t.close() // after the rollback below: a replaced BPF link is held until then
	t.journal("footprint", func() error {
		if prevFile == nil {
			return s.dir.Remove(footprintFile(d.Group))
		}
		return s.dir.Write(footprintFile(d.Group), prevFile)
	})
	err = converge(t, d, fp, &next, &sst)
	if err == nil && s.failSave != nil {
		err = fmt.Errorf("saving the footprint: %w", s.failSave)
	}
	if err == nil {
		if err = s.saveFootprint(next); err != nil {
			err = fmt.Errorf("saving the footprint: %w", err)
		}
	}
	if err == nil {
		if err = s.saveSysctlState(sst); err != nil {
			err = fmt.Errorf("saving the sysctl claims: %w", err)
		}
	}
	if err != nil {
		res := t.result()
		err = fmt.Errorf("apply %s: %w", d.Group, err)
		if rerr := t.rollback(); rerr != nil {
			return res, errors.Join(err, fmt.Errorf("rollback incomplete: %w", rerr))
		}
		return res, fmt.Errorf("%w (all %d writes undone)", err, res.Writes)
	}
	return t.result(), nil
}

// newFootprint is what d will own once applied; what only the run knows (ids of MPTCP endpoints, an
// address or MTU we change) is filled in by converge.
func newFootprint(d plan.Desired, old Footprint) Footprint {
	return Footprint{
		Group: d.Group, Family: d.Family, TUN: d.TUN.Name, CreatedTUN: old.CreatedTUN,
		AddedVIP: old.AddedVIP, OrigMTU: old.OrigMTU, SetMTU: old.SetMTU, OrigGSO: old.OrigGSO, SetGSO: old.SetGSO,
		Tables: groupTables(d), Nft: d.Nft,
	}
}

// syncGSO sets the TUN's gso_max_size (the largest burst a socket to the fakenet hands down, and so the
// unit of striping). On a TUN that is not ours the old value is kept in the footprint for Down.
func syncGSO(t *txn, l netlink.Link, tun plan.TUN, ours bool, next *Footprint) error {
	if tun.GSOMaxSize == 0 {
		return nil
	}
	was := int(l.Attrs().GSOMaxSize)
	t.count("tun", 0, 0, 0)
	if was == tun.GSOMaxSize {
		return nil
	}
	if !ours {
		if next.OrigGSO == 0 {
			next.OrigGSO = was
		}
		next.SetGSO = tun.GSOMaxSize
	}
	return t.do("link", fmt.Sprintf("set %s gso_max_size %d (was %d)", tun.Name, tun.GSOMaxSize, was),
		func() error { return t.s.setGSO(l, tun.GSOMaxSize) },
		func() error { return t.s.setGSO(l, was) })
}

// setGSO writes gso_max_size and reads it back: a kernel that ignores IFLA_GSO_MAX_SIZE on an existing link
// must not look converged.
func (s *Session) setGSO(l netlink.Link, size int) error {
	if err := s.nl.LinkSetGSOMaxSize(l, size); err != nil {
		return err
	}
	got, err := s.linkByIndex(l.Attrs().Index)
	if err != nil || got == nil {
		return fmt.Errorf("reading back %s: %v", l.Attrs().Name, err)
	}
	if int(got.Attrs().GSOMaxSize) != size {
		return fmt.Errorf("this kernel did not change gso_max_size of %s (still %d): set gso-max-size 65536 to leave it alone", l.Attrs().Name, got.Attrs().GSOMaxSize)
	}
	return nil
}

func (s *Session) hasAddr(l netlink.Link, p string) (bool, error) {
	a, err := s.findAddr(l, p)
	return a != nil, err
}

// findAddr is the address p of l as the kernel has it, or nil.
func (s *Session) findAddr(l netlink.Link, p string) (*netlink.Addr, error) {
	addrs, err := s.addrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IPNet != nil {
			if q, ok := ipnetPrefix(a.IPNet); ok && q.String() == p {
				return &a, nil
			}
		}
	}
	return nil, nil
}

// ourVIP tells whether the kernel's address is one we added: a host address carrying noprefixroute, the
// tag vipAddr gives it (the flag changes nothing for a /32 or /128, which has no prefix route).
func ourVIP(a *netlink.Addr) bool { return a != nil && a.Flags&unix.IFA_F_NOPREFIXROUTE != 0 }

// vipAddr is the VIP as we add it, tagged with noprefixroute so that Down can tell it from an address
// the admin or ifupdown put there.
func vipAddr(p string) (*netlink.Addr, error) {
	a, err := netlink.ParseAddr(p)
	if err != nil {
		return nil, err
	}
	a.Flags |= unix.IFA_F_NOPREFIXROUTE
	if a.IP.To4() == nil {
		a.Flags |= unix.IFA_F_NODAD
	}
	return a, nil
}

// converge does the steps in order: TUN, VIP, sysctls, routes, rules, MPTCP, mptcp-transparent, nft, and
// then removes the rules, routes and sysctl claims the plan no longer wants: make before break, so no
// packet is marked into a path whose rule or route is gone. old is the group's footprint (the scope of
// what it may remove), next receives what it owns afterwards. A
// mptcp-transparent program the plan no longer wants goes before the sysctls: with net.mptcp.enabled
// restored to 0 while it still turned TCP sockets into MPTCP ones, they would fail to open.
func converge(t *txn, d plan.Desired, old Footprint, next *Footprint, sst *sysctlState) error {
	s := t.s
	name := d.TUN.Name
	existed, err := s.linkByName(name)
	if err != nil {
		return err
	}
	if d.TUN.Running && !t.dry && (existed == nil || existed.Attrs().Flags&net.FlagUp == 0) {
		return ErrStopped
	}
	l, err := ensureTUN(t, name)
	if err != nil {
		return fmt.Errorf("tun: %w", err)
	}
	t.count("tun", 1, b2i(existed != nil), 0)
	if existed == nil {
		next.CreatedTUN = true
	}
	tunIndex := 0
	if l != nil {
		a := l.Attrs()
		tunIndex = a.Index
		ours := a.Alias == plan.LinkAlias
		if d.TUN.MTU != 0 && a.MTU != d.TUN.MTU {
			was := a.MTU
			if !ours && next.OrigMTU == 0 {
				next.OrigMTU = was
			}
			if !ours {
				next.SetMTU = d.TUN.MTU
			}
			if err := t.do("link", fmt.Sprintf("set %s mtu %d (was %d)", name, d.TUN.MTU, was),
				func() error { return s.nl.LinkSetMTU(l, d.TUN.MTU) },
				func() error { return s.nl.LinkSetMTU(l, was) }); err != nil {
				return fmt.Errorf("tun: %w", err)
			}
		}
		if err := syncGSO(t, l, d.TUN, ours, next); err != nil {
			return fmt.Errorf("tun: %w", err)
		}
		if a.Flags&net.FlagUp == 0 {
			if d.TUN.Running && !t.dry {
				return ErrStopped // taken down since the check above
			}
			if err := t.do("link", fmt.Sprintf("set %s up", name),
				func() error { return s.nl.LinkSetUp(l) },
				func() error { return s.nl.LinkSetDown(l) }); err != nil {
				return fmt.Errorf("tun: %w", err)
			}
		}
	}

	// VIP
	if d.VIP.IsValid() {
		vip := d.VIP.String()
		present := false
		if l != nil {
			if present, err = s.hasAddr(l, vip); err != nil {
				return err
			}
			// a VIP we added earlier and that is no longer the VIP goes
			if prev := old.AddedVIP; prev != "" && prev != vip {
				if a, err := s.findAddr(l, prev); err != nil {
					return err
				} else if ourVIP(a) {
					if err := t.do("addresses", fmt.Sprintf("delete address %s dev %s", prev, name),
						func() error { return s.nl.AddrDel(l, a) },
						func() error { return s.nl.AddrAdd(l, a) }); err != nil {
						return fmt.Errorf("vip: %w", err)
					}
				}
				next.AddedVIP = ""
			}
		}
		t.count("addresses", 1, b2i(present), 0)
		if !present {
			a, err := vipAddr(vip)
			if err != nil {
				return fmt.Errorf("vip: %w", err)
			}
			if err := t.do("addresses", fmt.Sprintf("add address %s dev %s", vip, name),
				func() error { return s.nl.AddrAdd(l, a) },
				func() error { return s.nl.AddrDel(l, a) }); err != nil {
				return fmt.Errorf("vip: %w", err)
			}
			next.AddedVIP = vip
		}
	}

	if d.Transparent == nil {
		if err := syncTransparent(t, d, next); err != nil {
			return fmt.Errorf("mptcp-transparent: %w", err)
		}
	}
	kept, err := syncSysctls(t, d.Group, d.Sysctls, sst)
	if err != nil {
		return fmt.Errorf("sysctls: %w", err)
	}
	staleRoutes, err := syncRoutes(t, d, old, tunIndex)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	staleRules, err := syncRules(t, d, old)
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	mp := old
	if err := syncMPTCP(t, d, &mp); err != nil {
		return fmt.Errorf("mptcp: %w", err)
	}
	next.Endpoints = mp.Endpoints
	if d.Transparent != nil {
		if err := syncTransparent(t, d, next); err != nil {
			return fmt.Errorf("mptcp-transparent: %w", err)
		}
	}
	if err := syncNft(t, d, old.Nft); err != nil {
		return fmt.Errorf("nft: %w", err)
	}
	// break after make: the table marks no packet for a leaving path any more, so its rules, routes and
	// member sysctls can go (the other order sends its packets into the TUN by the fakenet route in main)
	if err := deleteRules(t, familyOf(d.Family), staleRules); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	if err := deleteRoutes(t, staleRoutes); err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	if err := releaseOtherSysctls(t, d.Group, kept, sst); err != nil {
		return fmt.Errorf("sysctls: %w", err)
	}
	return nil
}

// Down removes exactly what the group owns, by its plan d (which may name only the group and its TUN, for a
// group no longer configured) together with its footprint: nft table, rules, mptcp-transparent pins (found
// by the group's name in the BPF file system, footprint or not), routes, MPTCP endpoints and limit claims,
// sysctls (restored when no other group claims them), the VIP if we added it, the MTU if we
// changed it, and the TUN if it is ours and !keepTUN. It goes on after an error and returns all of them;
// Down on nothing does no write.
func (s *Session) Down(d plan.Desired, keepTUN bool) (Result, error) {
	return s.DownExcept(d, keepTUN, nil)
}

// DownExcept is Down leaving alone the tables in claimed: those a configured group uses now, when d is a
// group that is no longer configured and whose footprint may still name them (a stanza renamed).
func (s *Session) DownExcept(d plan.Desired, keepTUN bool, claimed []int) (Result, error) {
	if d.Group == "" || d.TUN.Name == "" {
		return Result{}, errors.New("down: Desired has no group or TUN name")
	}
	if s.unlock == nil {
		return Result{}, errors.New("down: the session is read-only")
	}
	fp, err := s.loadFootprint(d.Group)
	if err != nil {
		return Result{}, fmt.Errorf("down %s: %w", d.Group, err)
	}
	if len(d.Paths) == 0 && len(fp.Tables) == 0 {
		// known from neither the configuration nor the run dir: what the kernel's tags say
		fp.merge(s.tagFootprint(d.Group, d.Family, d.TUN.Name))
	}
	fp.Tables = slices.DeleteFunc(fp.Tables, func(t int) bool { return slices.Contains(claimed, t) })
	sst, err := s.loadSysctlState()
	if err != nil {
		return Result{}, fmt.Errorf("down %s: %w", d.Group, err)
	}
	t := s.txn(false)
	var errs []error
	step := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	l, err := s.linkByName(d.TUN.Name)
	step("tun", err)
	if l != nil && !isTun(l) {
		l = nil // not a tun device: not ours to touch
	}
	tunIndex := 0
	if l != nil {
		tunIndex = l.Attrs().Index
	}
	step("nft", removeNft(t, d, fp))
	step("rules", removeRules(t, d, fp))
	// before the sysctls: net.mptcp.enabled goes back only once no program makes MPTCP sockets
	if err := removeTransparent(t, d.Group); err != nil {
		step("mptcp-transparent", err)
	} else {
		fp.Transparent = ""
	}
	mp := fp
	step("mptcp", removeMPTCP(t, d, &mp))
	step("routes", removeRoutes(t, d, fp, tunIndex))
	step("sysctls", releaseAllSysctls(t, d.Group, &sst))

	deleteTUN := l != nil && l.Attrs().Alias == plan.LinkAlias && !keepTUN
	if l != nil && !deleteTUN {
		// the TUN stays: undo only our own changes, only where the kernel still shows them, and on a TUN that
		// is not ours only what the configuration names (a footprint alone never removes an address or
		// changes an MTU there)
		ours := l.Attrs().Alias == plan.LinkAlias
		if vip := fp.AddedVIP; vip != "" && (ours || d.VIP.IsValid() && vip == d.VIP.String()) {
			a, err := s.findAddr(l, vip)
			step("vip", err)
			if ourVIP(a) {
				step("vip", t.do("addresses", fmt.Sprintf("delete address %s dev %s", vip, d.TUN.Name),
					func() error { return s.nl.AddrDel(l, a) }, nil))
			}
		}
		// the same for gso_max_size
		if !ours && fp.OrigGSO != 0 && fp.SetGSO != 0 && int(l.Attrs().GSOMaxSize) == fp.SetGSO && fp.OrigGSO != fp.SetGSO {
			step("tun", t.do("link", fmt.Sprintf("restore %s gso_max_size %d", d.TUN.Name, fp.OrigGSO),
				func() error { return s.setGSO(l, fp.OrigGSO) }, nil))
		}
		// the MTU goes back only while it is still the one the configuration asked for and we set
		if !ours && fp.OrigMTU != 0 && d.TUN.MTU != 0 && fp.SetMTU == d.TUN.MTU && l.Attrs().MTU == d.TUN.MTU && fp.OrigMTU != d.TUN.MTU {
			step("tun", t.do("link", fmt.Sprintf("restore %s mtu %d", d.TUN.Name, fp.OrigMTU),
				func() error { return s.nl.LinkSetMTU(l, fp.OrigMTU) }, nil))
		}
	}
	if deleteTUN {
		step("tun", t.do("link", "delete tun device "+d.TUN.Name,
			func() error { return s.nl.LinkDel(l) }, nil))
	}
	if len(errs) == 0 {
		fp = Footprint{Group: d.Group}
	} else {
		fp.Nft = nil
		fp.Endpoints = mp.Endpoints
	}
	step("state", s.saveFootprint(fp))
	step("state", s.saveSysctlState(sst))
	if len(errs) > 0 {
		return t.result(), fmt.Errorf("down %s: %w", d.Group, errors.Join(errs...))
	}
	return t.result(), nil
}

// tagFootprint is what the kernel's tags tell of a group nobody remembers: its nft table (by name and tag),
// the tables of the fwmark rules of that table's marks, and the tables of the rules from its TUN's
// addresses (MPTCP modes).
func (s *Session) tagFootprint(group string, fam parser.Family, tun string) Footprint {
	fp := Footprint{Group: group, Family: fam, TUN: tun}
	var marks []uint32
	if c, err := s.nft(); err == nil {
		if tab, err := findTable(c, nftFamily(fam), plan.NftTablePrefix+tun); err == nil && tab != nil {
			if ok, _ := nftOwned(c, tab, group); ok {
				chains, _ := c.ListChainsOfTableFamily(tab.Family)
				for _, ch := range chains {
					var m uint32
					if ch.Table != nil && ch.Table.Name == tab.Name {
						if _, err := fmt.Sscanf(ch.Name, "mark_%08x", &m); err == nil {
							marks = append(marks, m)
						}
					}
				}
			}
		}
	}
	var srcs []string
	if l, err := s.linkByName(tun); err == nil && l != nil {
		if addrs, err := s.addrList(l, familyOf(fam)); err == nil {
			for _, a := range addrs {
				srcs = append(srcs, a.IP.String())
			}
		}
	}
	rules, err := s.listRules(familyOf(fam))
	if err != nil {
		return fp
	}
	for _, r := range rules {
		if r.Protocol != plan.RouteProtocol || !validTable(r.Table) {
			continue
		}
		byMark := r.Mark != 0 && slices.Contains(marks, r.Mark)
		bySrc := r.Src != nil && slices.Contains(srcs, r.Src.IP.String())
		if (byMark || bySrc) && !slices.Contains(fp.Tables, r.Table) {
			fp.Tables = append(fp.Tables, r.Table)
		}
	}
	return fp
}

// Report compares the kernel with a plan.
type Report struct {
	Group     string
	TUN       TUNStatus
	Kinds     []Kind   // tun, addresses, sysctls, routes, rules, nft
	Drift     []string // every change Apply would make, in order
	Converged bool
	MPTCP     *MPTCPStatus // mode mptcp/hybrid: endpoints and limits as found
	// Transparent: mptcp-transparent as planned and as found (nil when neither)
	Transparent *TransparentStatus
}

// TUNStatus is the device as found.
type TUNStatus struct {
	Name    string
	Exists  bool
	IsTun   bool
	Ours    bool // alias == plan.LinkAlias
	Up      bool // administratively
	Carrier bool // a process holds the device (oper up)
	MTU     int
	GSO     int // gso_max_size
}

// Kind counts one kind of object: desired, present of those desired, and owned but not desired.
type Kind struct {
	Kind    string
	Desired int
	Present int
	Extra   int
	Drift   []string
}

// Status compares the kernel with d without writing, in the scope of d and the group's footprint
// (sysctl claims of other groups are not considered).
func (s *Session) Status(d plan.Desired) (Report, error) {
	r := Report{Group: d.Group, TUN: TUNStatus{Name: d.TUN.Name}}
	l, err := s.linkByName(d.TUN.Name)
	if err != nil {
		return r, err
	}
	if l != nil {
		a := l.Attrs()
		r.TUN = TUNStatus{Name: a.Name, Exists: true, IsTun: isTun(l), Ours: a.Alias == plan.LinkAlias,
			Up: a.Flags&net.FlagUp != 0, Carrier: a.OperState == netlink.OperUp, MTU: a.MTU, GSO: int(a.GSOMaxSize)}
	}
	fp, err := s.loadFootprint(d.Group)
	if err != nil {
		return r, err
	}
	t := s.txn(true)
	next := newFootprint(d, fp)
	if err := converge(t, d, fp, &next, &sysctlState{}); err != nil {
		return r, err
	}
	if r.MPTCP, err = s.mptcpStatus(d, fp); err != nil {
		return r, err
	}
	if r.Transparent, err = s.transparentStatus(d); err != nil {
		return r, err
	}
	order := []string{"tun", "link", "addresses", "sysctls", "routes", "rules", "mptcp", transparentKind, "nft"}
	for _, k := range order {
		c := t.counts[k]
		lines := t.drift[k]
		if c == nil && len(lines) == 0 {
			continue
		}
		if c == nil {
			c = &Kind{Kind: k}
		}
		c.Drift = lines
		r.Kinds = append(r.Kinds, *c)
		r.Drift = append(r.Drift, lines...)
	}
	for k := range t.drift {
		if !slices.Contains(order, k) {
			r.Drift = append(r.Drift, t.drift[k]...)
		}
	}
	r.Converged = len(r.Drift) == 0
	return r, nil
}

// String prints the report, one line per kind and one per drift.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: tun %s", r.Group, r.TUN.Name)
	switch {
	case !r.TUN.Exists:
		b.WriteString(" missing")
	default:
		fmt.Fprintf(&b, " up=%v carrier=%v ours=%v mtu=%d gso_max_size=%d", r.TUN.Up, r.TUN.Carrier, r.TUN.Ours, r.TUN.MTU, r.TUN.GSO)
	}
	b.WriteString("\n")
	for _, k := range r.Kinds {
		fmt.Fprintf(&b, "  %-9s desired %d present %d extra %d\n", k.Kind, k.Desired, k.Present, k.Extra)
		for _, d := range k.Drift {
			fmt.Fprintf(&b, "    drift: %s\n", d)
		}
	}
	if r.MPTCP != nil {
		b.WriteString(r.MPTCP.String())
	}
	if r.Transparent != nil {
		b.WriteString("  " + r.Transparent.String() + "\n")
	}
	return b.String()
}

// ---- one-shot sessions (tests, simple callers) ----

// Apply converges d in a session of its own.
func Apply(d plan.Desired, o Options) (Result, error) {
	s, err := Open(o)
	if err != nil {
		return Result{}, err
	}
	defer s.Close()
	return s.Apply(d)
}

// Down removes d's group in a session of its own.
func Down(d plan.Desired, o DownOptions) (Result, error) {
	s, err := Open(o.Options)
	if err != nil {
		return Result{}, err
	}
	defer s.Close()
	return s.Down(d, o.KeepTUN)
}

// Status compares the kernel with d in a read-only session without a run dir.
func Status(d plan.Desired) (Report, error) {
	s, err := OpenReadOnly(Options{})
	if err != nil {
		return Report{}, err
	}
	defer s.Close()
	return s.Status(d)
}
