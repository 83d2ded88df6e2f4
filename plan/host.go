package plan

import (
	"fmt"
	"slices"

	"github.com/linkagg/linkagg-hooks/parser"
)

// CheckHost refuses a group that the host's links make a black hole: an address of another link (a NIC,
// a bridge, lo) inside one of the group's fakenets. The fakenet route sends the fakenet into the TUN, so
// that subnet's traffic would vanish into it, or the VIP itself would be another link's address. The error
// is one line at the fakenet (or address) option. The group's own TUN is not another link.
func CheckHost(g parser.Group, links []Local) error {
	for _, l := range links {
		if l.Name == g.Iface {
			continue
		}
		for _, a := range l.Addrs {
			if a.Addr().Is4() != (g.Family == parser.Inet) {
				continue
			}
			if a.Addr() == g.VIP {
				return &parser.Error{Pos: g.OptionPos("address"), Msg: fmt.Sprintf("address %s (the VIP of %s) is also an address of %s: expected a VIP no link of this host has", g.VIP, g.ID(), l.Name)}
			}
			if i := slices.IndexFunc(g.Fakenets, a.Masked().Overlaps); i >= 0 {
				return &parser.Error{Pos: g.OptionPos("fakenet"), Msg: fmt.Sprintf("fakenet %s overlaps %s of %s: its route via %s would take that subnet's traffic; expected a fakenet no link of this host is on", g.Fakenets[i], a, l.Name, g.Iface)}
			}
		}
	}
	return nil
}
