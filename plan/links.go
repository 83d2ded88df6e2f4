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
