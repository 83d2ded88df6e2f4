package tests

import (
	"fmt"
	"strings"
	"testing"
)

// TestHardeningOwnership: a host with the user's own ip rules, routes in other tables and in main, foreign
// nft tables (one writing mark bits outside our mask, as kube-proxy does), a foreign MPTCP endpoint and a
// wireguard-style fwmark setup goes through 3 `ifup -a` / `ifdown -a` cycles with the real ifupdown: every
// one of those reads back byte for byte unchanged after each cycle, and the group really came up each time.
func TestHardeningOwnership(t *testing.T) {
	l := NewLab(t, "hdo", 100, 100)
	l.In("A", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	var b strings.Builder
	for i := range 2 {
		fmt.Fprintf(&b, "auto %s\niface %s inet static\n    address 10.77.%d.10/24\n\n", l.Link("A", i), l.Link("A", i), i)
	}
	b.WriteString(`auto tun0
iface tun0 inet static
    address 10.76.255.10
    netmask 255.255.255.255
    fakenet 10.76.255.0/24
    table 36000 36001
    rspec 10.76.255.10:10.77.0.10:10.77.1.10
    rspec 10.76.255.20:10.77.0.20:10.77.1.20
`)
	l.WriteInterfaces("A", b.String())
	foreign := []string{
		// the user's own policy routing
		"ip rule add from 192.0.2.0/24 lookup 100 pref 500",
		"ip rule add to 198.51.100.0/24 lookup 200 pref 1000", // same pref as ours
		"ip route add blackhole 198.51.100.0/24 table 200",
		"ip route add 192.0.2.0/24 dev lo table 100",
		"ip route add unreachable 203.0.113.0/24",
		// wireguard (wg-quick): fwmark rule, suppress rule, a default route in table 51820
		"ip rule add not fwmark 51820 table 51820",
		"ip rule add table main suppress_prefixlength 0",
		"ip route add blackhole default table 51820",
		// foreign nft: kube-proxy-like mark bits outside 0xff000000, a wg-style ct mark restore, a plain filter
		"nft add table ip kube",
		"nft add chain ip kube out '{ type filter hook output priority -100; }'",
		"nft add rule ip kube out meta mark set meta mark or 0x4000",
		"nft add table inet wg",
		"nft add chain inet wg pre '{ type filter hook prerouting priority -150; }'",
		"nft add rule inet wg pre meta l4proto udp meta mark set ct mark",
		"nft add table inet filter",
		"nft add chain inet filter input '{ type filter hook input priority 0; policy accept; }'",
		"nft add rule inet filter input tcp dport 22 accept",
		// an MPTCP endpoint of the user's on a member NIC
		"ip mptcp endpoint add 10.77.0.99 dev " + l.Link("A", 0) + " subflow",
	}
	l.In("A", "sh", "-c", strings.Join(foreign, " && "))
	before := kernelSnapshot(t, l.NS("A"))
	for cycle := 1; cycle <= 3; cycle++ {
		l.MustIfupdown("A", "ifup", "-a")
		k := l.Kernel("A")
		if rules, routes := k.Ours(); len(rules) != 2 || len(routes) != 3 || !strings.Contains(k.Nft, "table ip linkagg_tun0") {
			t.Fatalf("cycle %d: the group did not come up: %d rules, %d routes of ours\n%s", cycle, len(rules), len(routes), k.Nft)
		}
		// lo is left alone: ifupdown >= 0.8 handles lo implicitly and `ifdown -a` would take it down
		l.MustIfupdown("A", "ifdown", "-a", "--exclude=lo")
		sameKernel(t, fmt.Sprintf("cycle %d", cycle), before, kernelSnapshot(t, l.NS("A")))
	}
}
