package parser

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParseRspecEntry parses one rspec entry "VIP:GW1:GW2:…". IPv6 addresses are bracketed
// ("[fd99::10]:[fd00:1::10]") because their own colons would make the entry ambiguous; brackets around
// IPv4 addresses are tolerated. Every address must be of family fam. The error text has no position:
// the caller knows where the entry was written.
func ParseRspecEntry(s string, fam Family) (vip netip.Addr, addrs []netip.Addr, err error) {
	parts, err := splitRspec(s)
	if err != nil {
		return netip.Addr{}, nil, err
	}
	if len(parts) < 2 {
		return netip.Addr{}, nil, fmt.Errorf("expected VIP:GW1[:GW2…] (at least one gateway)")
	}
	out := make([]netip.Addr, 0, len(parts))
	for _, p := range parts {
		if a, err := netip.ParseAddr(p.text); fam == Inet6 && !p.bracketed && (err != nil || !a.Is4()) {
			return netip.Addr{}, nil, fmt.Errorf("%q is not bracketed: expected IPv6 addresses in brackets, e.g. [fd99::10]:[fd00:1::10]", p.text)
		}
		a, err := parseHostAddr(p.text, fam)
		if err != nil {
			return netip.Addr{}, nil, err
		}
		out = append(out, a)
	}
	return out[0], out[1:], nil
}

type rspecPart struct {
	text      string
	bracketed bool
}

func splitRspec(s string) ([]rspecPart, error) {
	var parts []rspecPart
	for {
		var p rspecPart
		if strings.HasPrefix(s, "[") {
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return nil, fmt.Errorf("missing ] after %q", s)
			}
			p = rspecPart{text: s[1:end], bracketed: true}
			s = s[end+1:]
			if s != "" && s[0] != ':' {
				return nil, fmt.Errorf("expected : after [%s], found %q", p.text, s)
			}
		} else {
			end := strings.IndexByte(s, ':')
			if end < 0 {
				end = len(s)
			}
			p = rspecPart{text: s[:end]}
			s = s[end:]
		}
		parts = append(parts, p)
		if s == "" {
			return parts, nil
		}
		s = s[1:] // the ':'
	}
}

// parseHostAddr accepts a plain unicast-looking address of family fam: no zone, no prefix, no IPv4-mapped
// IPv6, none of the unspecified/multicast/broadcast addresses a route can't point at.
func parseHostAddr(s string, fam Family) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("bad address %q: expected %s address", s, famWord(fam))
	}
	if (fam == Inet) != a.Is4() {
		return netip.Addr{}, fmt.Errorf("bad address %q: expected %s address (this is an %s group)", s, famWord(fam), fam)
	}
	if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("bad address %q: expected a unicast %s address", s, famWord(fam))
	}
	return a, nil
}

func famWord(f Family) string {
	if f == Inet6 {
		return "IPv6"
	}
	return "IPv4"
}

// cycle stretches an entry's address list to n paths: a host reachable on fewer subnets than there are
// paths (a router on one subnet) reuses its list from the start.
func cycle(addrs []netip.Addr, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = addrs[i%len(addrs)]
	}
	return out
}
