package apply

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/plan"
)

const dumpRetries = 5

// retry repeats a netlink dump interrupted by a concurrent change (NLM_F_DUMP_INTR).
func retry[T any](f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range dumpRetries {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, fmt.Errorf("netlink dump interrupted %d times: %w", dumpRetries, err)
}

// Links is a snapshot of the host's links for the planner.
func (s *Session) Links() ([]plan.Local, error) {
	links, err := s.linkList()
	if err != nil {
		return nil, fmt.Errorf("listing links: %w", err)
	}
	var out []plan.Local
	for _, l := range links {
		a := l.Attrs()
		loc := plan.Local{
			Name:    a.Name,
			Up:      a.Flags&net.FlagUp != 0,
			Carrier: a.Flags&net.FlagUp != 0 && (a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown),
		}
		if k := l.Type(); k != "device" {
			loc.Kind = k
		}
		if loc.Carrier && a.Name != "lo" {
			loc.Speed = linkSpeed(a.Name)
		}
		addrs, err := s.addrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if ad.Scope != unix.RT_SCOPE_UNIVERSE || ad.IPNet == nil {
				continue
			}
			if p, ok := ipnetPrefix(ad.IPNet); ok {
				loc.Addrs = append(loc.Addrs, p)
			}
		}
		out = append(out, loc)
	}
	return out, nil
}

func ipnetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	a := p.Addr()
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

func addrIP(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return net.IP(a.AsSlice())
}

func ipAddr(ip net.IP) netip.Addr {
	if ip == nil {
		return netip.Addr{}
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

// isTun tells whether l is a tun (not tap) device.
func isTun(l netlink.Link) bool {
	t, ok := l.(*netlink.Tuntap)
	return ok && (t.Mode == netlink.TUNTAP_MODE_TUN || t.Mode == 0)
}

func linkKind(l netlink.Link) string {
	if t, ok := l.(*netlink.Tuntap); ok && t.Mode == netlink.TUNTAP_MODE_TAP {
		return "tap"
	}
	return l.Type()
}

func checkTunDevice() error {
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("/dev/net/tun is missing (load the tun module, or give the container the device): %w", err)
	}
	return nil
}

func tunCreateError(name string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return fmt.Errorf("permission denied (needs CAP_NET_ADMIN and access to /dev/net/tun): %w", err)
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO):
		return fmt.Errorf("/dev/net/tun is missing or the tun module is not loaded: %w", err)
	}
	return err
}

// createTUN makes a persistent TUN with our alias.
func (s *Session) createTUN(name string) error {
	if err := checkTunDevice(); err != nil {
		return err
	}
	tt := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode:      netlink.TUNTAP_MODE_TUN,
		Flags:     netlink.TUNTAP_NO_PI,
	}
	if err := s.nl.LinkAdd(tt); err != nil {
		return tunCreateError(name, err)
	}
	l, err := s.nl.LinkByName(name)
	if err == nil {
		err = s.nl.LinkSetAlias(l, plan.LinkAlias)
	}
	if err != nil {
		if l != nil {
			_ = s.nl.LinkDel(l)
		}
		return fmt.Errorf("setting alias of %s: %w", name, err)
	}
	return nil
}

func (s *Session) deleteLinkByName(name string) error {
	l, err := s.linkByName(name)
	if err != nil || l == nil {
		return err
	}
	return s.nl.LinkDel(l)
}

// ensureTUN is the TUN step shared by EnsureTUN and Apply: the link exists and is a tun device.
func ensureTUN(t *txn, name string) (netlink.Link, error) {
	s := t.s
	l, err := s.linkByName(name)
	if err != nil {
		return nil, err
	}
	// the marker says "we are creating this TUN": a run killed between creating the device and setting its
	// alias leaves it, and the next run adopts the device instead of taking it for the user's
	marker := s.marker(name)
	if l != nil {
		if !isTun(l) {
			return nil, fmt.Errorf("%s exists and is a %s, not a tun device", name, linkKind(l))
		}
		if !t.dry && l.Attrs().Alias != plan.LinkAlias && s.hasMarker(name) {
			if err := t.do("link", fmt.Sprintf("adopt tun device %s (created by an interrupted run)", name),
				func() error { return s.nl.LinkSetAlias(l, plan.LinkAlias) }, nil); err != nil {
				return nil, err
			}
			_ = s.dir.Remove(marker)
			return s.linkByName(name)
		}
		return l, nil
	}
	err = t.do("link", fmt.Sprintf("create tun device %s", name),
		func() error {
			if s.dir != nil {
				if err := s.dir.Write(marker, nil); err != nil {
					return err
				}
				defer s.dir.Remove(marker)
			}
			return s.createTUN(name)
		},
		func() error { return s.deleteLinkByName(name) })
	if err != nil || t.dry {
		return nil, err
	}
	return s.linkByName(name)
}

// EnsureTUN is ifupdown's pre-up: create the TUN if missing. An existing TUN is used as is.
func (s *Session) EnsureTUN(tun plan.TUN) (Result, error) {
	t := s.txn(false)
	existed, err := s.linkByName(tun.Name)
	if err != nil {
		return Result{}, err
	}
	l, err := ensureTUN(t, tun.Name)
	if err == nil && existed == nil && tun.MTU != 0 && l.Attrs().MTU != tun.MTU {
		err = t.do("link", fmt.Sprintf("set %s mtu %d", tun.Name, tun.MTU),
			func() error { return s.nl.LinkSetMTU(l, tun.MTU) }, nil)
	}
	if err != nil {
		if rerr := t.rollback(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return Result{}, err
	}
	return t.result(), nil
}

// EnsureTUN is Session.EnsureTUN in a session of its own.
func EnsureTUN(tun plan.TUN, o Options) (Result, error) {
	s, err := Open(o)
	if err != nil {
		return Result{}, err
	}
	defer s.Close()
	return s.EnsureTUN(tun)
}
