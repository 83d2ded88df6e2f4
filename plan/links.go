package plan

import "net/netip"

// Holder is the link holding address a, or nil: which member NIC serves a path.
func Holder(links []Local, a netip.Addr) *Local {
	for i := range links {
		for _, p := range links[i].Addrs {
			if p.Addr() == a {
				return &links[i]
			}
		}
	}
	return nil
}

// Running tells whether the group whose TUN is iface runs: the TUN exists and is administratively up. A
// group whose TUN is down or gone was stopped by ifupdown, networkd or the admin; nothing brings it back
// but its own if-up.
func Running(links []Local, iface string) bool {
	for _, l := range links {
		if l.Name == iface {
			return l.Up
		}
	}
	return false
}

// GatewayLink is the link a route to gateway gw leaves by, for the path whose own address is own: that
// address's link when its subnet holds gw (so on one subnet shared by several member NICs each path keeps
// its own NIC), otherwise the link with the most specific subnet holding gw (a router on one subnet serves
// every table through that NIC); nil when no link's subnet holds it. Routes and gateway probes both use it,
// so a probe tests the link the path's packets take.
func GatewayLink(links []Local, own, gw netip.Addr) *Local {
	if l := Holder(links, own); l != nil {
		for _, p := range l.Addrs {
			if p.Addr() == own && p.Contains(gw) && gw != own {
				return l
			}
		}
	}
	var best *Local
	bestBits := -1
	for i := range links {
		for _, p := range links[i].Addrs {
			if p.Contains(gw) && p.Bits() > bestBits && p.Addr() != gw {
				best, bestBits = &links[i], p.Bits()
			}
		}
	}
	return best
}

// SourceOn is the address of link l in gw's subnet, the source of a probe to gw through l.
func SourceOn(l *Local, gw netip.Addr) (netip.Addr, bool) {
	var best netip.Prefix
	for _, p := range l.Addrs {
		if p.Contains(gw) && p.Addr() != gw && (!best.IsValid() || p.Bits() > best.Bits()) {
			best = p
		}
	}
	return best.Addr(), best.IsValid()
}
