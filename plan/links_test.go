package plan

import (
	"net/netip"
	"testing"
)

// A path keeps its own NIC when that NIC's subnet holds the gateway, even when another member NIC has the
// same subnet (one switch, one subnet: issue 10); otherwise the most specific subnet wins (a router).
func TestGatewayLink(t *testing.T) {
	links := []Local{
		{Name: "eth0", Up: true, Addrs: []netip.Prefix{p("10.0.0.10/24")}},
		{Name: "eth1", Up: true, Addrs: []netip.Prefix{p("10.0.0.11/24")}},
		{Name: "eth2", Up: true, Addrs: []netip.Prefix{p("10.3.0.10/16"), p("10.3.23.10/24")}},
	}
	for _, tc := range []struct {
		own, gw string
		want    string
		src     string
	}{
		{"10.0.0.10", "10.0.0.20", "eth0", "10.0.0.10"},
		{"10.0.0.11", "10.0.0.21", "eth1", "10.0.0.11"},
		{"10.0.0.11", "10.0.0.20", "eth1", "10.0.0.11"},
		{"10.0.0.10", "10.3.23.1", "eth2", "10.3.23.10"}, // the router, most specific subnet
		{"10.0.0.10", "192.0.2.1", "", ""},
	} {
		l := GatewayLink(links, a(tc.own), a(tc.gw))
		if linkName(l) != tc.want {
			t.Errorf("GatewayLink(own %s, gw %s) = %q, want %q", tc.own, tc.gw, linkName(l), tc.want)
			continue
		}
		if l != nil {
			if src, _ := SourceOn(l, a(tc.gw)); src.String() != tc.src {
				t.Errorf("SourceOn(%s, %s) = %s, want %s", l.Name, tc.gw, src, tc.src)
			}
		}
	}
}
