package apply

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/plan"
)

// Apply converges the kernel to d, writing only the difference. On any error every write of this run is
// undone and the error names the step that failed.
func Apply(d plan.Desired, o Options) (Result, error) {
	if d.Group == "" || d.TUN.Name == "" {
		return Result{}, errors.New("apply: Desired has no group or TUN name")
	}
	unlock, err := lock(o)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	if err := precheck(d); err != nil { // foreign state in our way: refuse before the first write
		return Result{}, fmt.Errorf("apply %s: %w", d.Group, err)
	}
	st, sst, err := loadStates(o.RunDir, d.Group)
	if err != nil {
		return Result{}, err
	}
	t := &txn{o: o}
	if err := converge(t, d, &st, sst); err != nil {
		res := t.result()
		err = fmt.Errorf("apply %s: %w", d.Group, err)
		if rerr := t.rollback(); rerr != nil {
			return res, errors.Join(err, fmt.Errorf("rollback incomplete: %w", rerr))
		}
		return res, fmt.Errorf("%w (all %d writes undone)", err, res.Writes)
	}
	if err := saveGroupState(o.RunDir, st); err != nil {
		return t.result(), fmt.Errorf("apply %s: saving state: %w", d.Group, err)
	}
	if err := saveSysctlState(o.RunDir, sst); err != nil {
		return t.result(), fmt.Errorf("apply %s: saving sysctl state: %w", d.Group, err)
	}
	return t.result(), nil
}

func hasAddr(l netlink.Link, p string) (bool, error) {
	addrs, err := addrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return false, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IPNet != nil {
			if q, ok := ipnetPrefix(a.IPNet); ok && q.String() == p {
				return true, nil
			}
		}
	}
	return false, nil
}

func vipAddr(p string) (*netlink.Addr, error) {
	a, err := netlink.ParseAddr(p)
	if err != nil {
		return nil, err
	}
	if a.IP.To4() == nil {
		a.Flags |= unix.IFA_F_NODAD
	}
	return a, nil
}

// converge does the steps in order: TUN, VIP, sysctls, routes, rules, nft.
func converge(t *txn, d plan.Desired, st *groupState, sst sysctlState) error {
	name := d.TUN.Name
	existed, err := linkByName(name)
	if err != nil {
		return err
	}
	l, err := ensureTUN(t, name)
	if err != nil {
		return fmt.Errorf("tun: %w", err)
	}
	t.count("tun", 1, b2i(existed != nil), 0)
	if existed == nil {
		st.CreatedTUN = true
	}
	tunIndex := 0
	if l != nil {
		a := l.Attrs()
		tunIndex = a.Index
		ours := a.Alias == plan.LinkAlias
		if d.TUN.MTU != 0 && a.MTU != d.TUN.MTU {
			old := a.MTU
			if !ours && st.OrigMTU == 0 {
				st.OrigMTU = old
			}
			if err := t.do("link", fmt.Sprintf("set %s mtu %d (was %d)", name, d.TUN.MTU, old),
				func() error { return netlink.LinkSetMTU(l, d.TUN.MTU) },
				func() error { return netlink.LinkSetMTU(l, old) }); err != nil {
				return fmt.Errorf("tun: %w", err)
			}
		}
		if a.Flags&net.FlagUp == 0 {
			if err := t.do("link", fmt.Sprintf("set %s up", name),
				func() error { return netlink.LinkSetUp(l) },
				func() error { return netlink.LinkSetDown(l) }); err != nil {
				return fmt.Errorf("tun: %w", err)
			}
		}
	}

	// VIP
	if d.VIP.IsValid() {
		vip := d.VIP.String()
		present := false
		if l != nil {
			if present, err = hasAddr(l, vip); err != nil {
				return err
			}
			// a VIP we added earlier and that is no longer the VIP goes
			if st.AddedVIP != "" && st.AddedVIP != vip {
				old := st.AddedVIP
				if here, err := hasAddr(l, old); err != nil {
					return err
				} else if here {
					a, err := vipAddr(old)
					if err != nil {
						return err
					}
					if err := t.do("addresses", fmt.Sprintf("delete address %s dev %s", old, name),
						func() error { return netlink.AddrDel(l, a) },
						func() error { return netlink.AddrAdd(l, a) }); err != nil {
						return fmt.Errorf("vip: %w", err)
					}
				}
				st.AddedVIP = ""
			}
		}
		t.count("addresses", 1, b2i(present), 0)
		if !present {
			a, err := vipAddr(vip)
			if err != nil {
				return fmt.Errorf("vip: %w", err)
			}
			if err := t.do("addresses", fmt.Sprintf("add address %s dev %s", vip, name),
				func() error { return netlink.AddrAdd(l, a) },
				func() error { return netlink.AddrDel(l, a) }); err != nil {
				return fmt.Errorf("vip: %w", err)
			}
			st.AddedVIP = vip
		}
	}

	if err := syncSysctls(t, d.Group, d.Sysctls, sst); err != nil {
		return fmt.Errorf("sysctls: %w", err)
	}
	if err := syncRoutes(t, d, tunIndex); err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	if err := syncRules(t, d); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	if err := syncMPTCP(t, d); err != nil {
		return fmt.Errorf("mptcp: %w", err)
	}
	if err := syncNft(t, d, st.Nft); err != nil {
		return fmt.Errorf("nft: %w", err)
	}
	st.Nft = d.Nft
	return nil
}

// Down removes exactly what the group owns: nft table, rules, routes, sysctls (restored when no other
// group claims them), the VIP if we added it, the MTU if we changed it, and the TUN if it is ours and
// !KeepTUN. It goes on after an error and returns all of them; Down on nothing does no write.
func Down(d plan.Desired, o DownOptions) (Result, error) {
	if d.Group == "" || d.TUN.Name == "" {
		return Result{}, errors.New("down: Desired has no group or TUN name")
	}
	unlock, err := lock(o.Options)
	if err != nil {
		return Result{}, err
	}
	defer unlock()
	st, sst, err := loadStates(o.RunDir, d.Group)
	if err != nil {
		return Result{}, err
	}
	t := &txn{o: o.Options}
	var errs []error
	step := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	l, err := linkByName(d.TUN.Name)
	step("tun", err)
	if l != nil && !isTun(l) {
		l = nil // not a tun device: not ours to touch
	}
	tunIndex := 0
	if l != nil {
		tunIndex = l.Attrs().Index
	}
	step("nft", removeNft(t, d))
	step("rules", removeRules(t, d))
	step("mptcp", removeMPTCP(t, d))
	step("routes", removeRoutes(t, d, tunIndex))
	step("sysctls", releaseAllSysctls(t, d.Group, sst))

	deleteTUN := l != nil && l.Attrs().Alias == plan.LinkAlias && !o.KeepTUN
	if l != nil && !deleteTUN {
		if st.AddedVIP != "" {
			here, err := hasAddr(l, st.AddedVIP)
			step("vip", err)
			if here {
				a, err := vipAddr(st.AddedVIP)
				if err == nil {
					err = t.do("addresses", fmt.Sprintf("delete address %s dev %s", st.AddedVIP, d.TUN.Name),
						func() error { return netlink.AddrDel(l, a) }, nil)
				}
				step("vip", err)
			}
		}
		if st.OrigMTU != 0 && l.Attrs().MTU != st.OrigMTU {
			step("tun", t.do("link", fmt.Sprintf("restore %s mtu %d", d.TUN.Name, st.OrigMTU),
				func() error { return netlink.LinkSetMTU(l, st.OrigMTU) }, nil))
		}
	}
	if deleteTUN {
		step("tun", t.do("link", "delete tun device "+d.TUN.Name,
			func() error { return netlink.LinkDel(l) }, nil))
	}
	if len(errs) == 0 {
		st = groupState{Group: d.Group}
	} else {
		st.Nft = nil
	}
	step("state", saveGroupState(o.RunDir, st))
	step("state", saveSysctlState(o.RunDir, sst))
	if len(errs) > 0 {
		return t.result(), fmt.Errorf("down %s: %w", d.Group, errors.Join(errs...))
	}
	return t.result(), nil
}

// Report compares the kernel with a plan.
type Report struct {
	Group     string
	TUN       TUNStatus
	Kinds     []Kind   // tun, addresses, sysctls, routes, rules, nft
	Drift     []string // every change Apply would make, in order
	Converged bool
	MPTCP     *MPTCPStatus // mode mptcp/hybrid: endpoints and limits as found
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
}

// Kind counts one kind of object: desired, present of those desired, and owned but not desired.
type Kind struct {
	Kind    string
	Desired int
	Present int
	Extra   int
	Drift   []string
}

// Status compares the kernel with d without writing (sysctl claims of other groups are not considered).
func Status(d plan.Desired) (Report, error) {
	r := Report{Group: d.Group, TUN: TUNStatus{Name: d.TUN.Name}}
	l, err := linkByName(d.TUN.Name)
	if err != nil {
		return r, err
	}
	if l != nil {
		a := l.Attrs()
		r.TUN = TUNStatus{Name: a.Name, Exists: true, IsTun: isTun(l), Ours: a.Alias == plan.LinkAlias,
			Up: a.Flags&net.FlagUp != 0, Carrier: a.OperState == netlink.OperUp, MTU: a.MTU}
	}
	t := &txn{dry: true}
	st := groupState{Group: d.Group}
	if err := converge(t, d, &st, sysctlState{}); err != nil {
		return r, err
	}
	if r.MPTCP, err = mptcpStatus(d); err != nil {
		return r, err
	}
	order := []string{"tun", "link", "addresses", "sysctls", "routes", "rules", "mptcp", "nft"}
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
		fmt.Fprintf(&b, " up=%v carrier=%v ours=%v mtu=%d", r.TUN.Up, r.TUN.Carrier, r.TUN.Ours, r.TUN.MTU)
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
	return b.String()
}

// loadStates reads the group's state file and the shared sysctl claims.
func loadStates(dir, group string) (groupState, sysctlState, error) {
	st, err := loadGroupState(dir, group)
	if err != nil {
		return groupState{}, nil, err
	}
	sst, err := loadSysctlState(dir)
	return st, sst, err
}
