package parser

import (
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
)

// Both sources are reduced to the same raw form (option name → words, each word with its position), so
// the two syntaxes share one interpretation and cannot drift apart.
type word struct {
	s   string
	pos Pos
}

type option struct {
	name  string
	pos   Pos
	words []word
}

type rawGroup struct {
	iface   string
	family  Family
	method  string
	source  string
	pos     Pos
	opts    []option
	missing func(name string) string // phrasing of "option X is missing" in this source's terms
}

// The options we interpret; in a stanza any other option belongs to ifupdown or another package.
const (
	optAddress  = "address"
	optNetmask  = "netmask"
	optMTU      = "mtu"
	optFakenet  = "fakenet"
	optTable    = "table"
	optRspec    = "rspec"
	optWeight   = "weight"
	optMode     = "mode"
	optFwmark   = "fwmark"
	optMarkMask = "fwmark-mask"
	optPriority = "rule-priority"
	optARP      = "arp-isolation"
	optGSO      = "gso-max-size"
	optMinRTT   = "tcp-min-rtt-wlen"
	optSpeed    = "speed"
	optFamily   = "family" // TOML only: a stanza says it in its iface line
)

// Options that may be given several times, their values adding up.
var repeatable = map[string]bool{optFakenet: true, optRspec: true}

// Options whose presence makes a stanza ours.
var ownership = []string{optFakenet, optTable, optRspec}

var ourOptions = map[string]bool{
	optAddress: true, optNetmask: true, optMTU: true, optFakenet: true, optTable: true, optRspec: true,
	optWeight: true, optMode: true, optFwmark: true, optMarkMask: true, optPriority: true, optARP: true,
	optGSO: true, optMinRTT: true, optSpeed: true,
}

// The caps on paths and fakenets keep the pairwise checks cheap; real groups are far below them (a path
// is a NIC, and the default marks give at most 255 distinct paths anyway).
const (
	maxPaths    = 256
	maxFakenets = 256
	maxTable    = 1<<31 - 1
	maxWeight   = 1000 // weights become a packet sequence of length sum(weights); keep it short
)

// checkTable returns what is wrong with a routing table number, or "".
func checkTable(t int64) string {
	if name, ok := reservedTables[int(t)]; ok && t >= 0 && t <= 255 {
		return fmt.Sprintf("table %d is reserved (%s): expected 1..%d without 253, 254, 255", t, name, maxTable)
	}
	if t < 1 || t > maxTable {
		return fmt.Sprintf("table %d: expected an integer 1..%d", t, maxTable)
	}
	return ""
}

// Reserved routing tables: unspec, default, main, local.
var reservedTables = map[int]string{0: "unspec", 253: "default", 254: "main", 255: "local"}

func (r *rawGroup) get(name string) (option, bool) {
	var out option
	found := false
	for _, o := range r.opts {
		if o.name != name {
			continue
		}
		if !found {
			out = option{name: o.name, pos: o.pos}
			found = true
		}
		out.words = append(out.words, o.words...)
	}
	return out, found
}

func errAt(p Pos, format string, args ...any) *Error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// build interprets the options of one group and then validates the result as a whole.
func build(r *rawGroup) (Group, error) {
	g := Group{
		Iface: r.iface, Family: r.family, Pos: r.pos, Source: r.source, Method: r.method,
		MarkMask: DefaultMarkMask, RulePriority: DefaultRulePriority, Mode: ModePacket,
		OptPos: map[string]Pos{},
	}
	for _, o := range r.opts {
		if _, ok := g.OptPos[o.name]; !ok {
			g.OptPos[o.name] = o.pos
		}
	}
	if err := checkIfaceName(r.iface, r.pos); err != nil {
		return g, err
	}
	if r.family != Inet && r.family != Inet6 {
		return g, errAt(r.pos, "linkagg options need an inet or inet6 group")
	}
	for _, name := range []string{optAddress, optFakenet, optTable, optRspec} {
		if _, ok := r.get(name); !ok {
			return g, errAt(r.pos, "%s (a linkagg group needs address, fakenet, table and rspec)", r.missing(name))
		}
	}
	for _, o := range r.opts {
		if len(o.words) == 0 {
			return g, errAt(o.pos, "%s: expected a value", o.name)
		}
	}

	// address and netmask
	w, _, err := r.single(optAddress)
	if err != nil {
		return g, err
	}
	vip, bitsFromAddr, err := parseVIP(w.s, r.family)
	if err != nil {
		return g, errAt(w.pos, "address %q: %v", w.s, err)
	}
	g.VIP = vip
	addr := w
	// The VIP is one address on the TUN: ifup gives the TUN the stanza's address with its prefix, and a
	// shorter prefix would make a second, kernel route for the fakenet that our teardown does not own
	// (ifup then fails with "Address already assigned" and ifdown finds the group not configured).
	host := 32
	if r.family == Inet6 {
		host = 128
	}
	if bitsFromAddr >= 0 && bitsFromAddr != host {
		return g, errAt(w.pos, "address %q: a VIP is one address: expected /%d (fakenet is the subnet)", w.s, host)
	}
	if w, ok, err := r.single(optNetmask); err != nil {
		return g, err
	} else if ok {
		n, err := parseNetmask(w.s, r.family)
		if err != nil {
			return g, errAt(w.pos, "netmask %q: %v", w.s, err)
		}
		if n != host {
			return g, errAt(w.pos, "netmask %q: a VIP is one address: expected %s (fakenet is the subnet)", w.s, hostMask(r.family))
		}
	} else if bitsFromAddr < 0 && r.source == "interfaces" && r.method == "static" {
		// ifup gives an address without a prefix length its class's (/8 for 10.x) or /64: a route into the
		// TUN for all of it
		return g, errAt(addr.pos, "address %q has no prefix length: ifup would give it its class's or /64, a route into %s for all of that: expected %s/%d or netmask %s", addr.s, r.iface, addr.s, host, strings.SplitN(hostMask(r.family), " ", 2)[0])
	}

	if w, ok, err := r.single(optMTU); err != nil {
		return g, err
	} else if ok {
		lo := 68
		if r.family == Inet6 {
			lo = 1280
		}
		n, err := strconv.Atoi(w.s)
		if err != nil || n < lo || n > 65535 {
			return g, errAt(w.pos, "mtu %q: expected an integer %d..65535", w.s, lo)
		}
		g.MTU = n
	}

	if w, ok, err := r.single(optGSO); err != nil {
		return g, err
	} else if ok {
		n, err := strconv.Atoi(w.s)
		if err != nil || n < MinGSOMaxSize || n > MaxGSOMaxSize {
			return g, errAt(w.pos, "gso-max-size %q: expected bytes %d..%d", w.s, MinGSOMaxSize, MaxGSOMaxSize)
		}
		g.GSOMaxSize = n
	}

	if w, ok, err := r.single(optMinRTT); err != nil {
		return g, err
	} else if ok {
		n, err := strconv.Atoi(w.s)
		if err != nil || n < 0 || n > 86400 {
			return g, errAt(w.pos, "tcp-min-rtt-wlen %q: expected seconds 0..86400 (net.ipv4.tcp_min_rtt_wlen)", w.s)
		}
		g.TCPMinRTTWlen = &n
	}

	o, _ := r.get(optFakenet)
	for _, w := range o.words {
		p, err := parseFakenet(w.s, r.family)
		if err != nil {
			return g, errAt(w.pos, "fakenet %q: %v", w.s, err)
		}
		g.Fakenets = append(g.Fakenets, p)
		g.FakenetPos = append(g.FakenetPos, w.pos)
	}

	o, _ = r.get(optTable)
	for _, w := range o.words {
		n, err := strconv.ParseInt(w.s, 10, 64)
		if err != nil {
			return g, errAt(w.pos, "table %q: expected an integer 1..%d", w.s, maxTable)
		}
		if msg := checkTable(n); msg != "" {
			return g, errAt(w.pos, "%s", msg)
		}
		g.Tables = append(g.Tables, int(n))
	}

	if o, ok := r.get(optWeight); ok {
		for _, w := range o.words {
			n, err := strconv.ParseInt(w.s, 10, 64)
			if err != nil || n < 1 || n > maxWeight {
				return g, errAt(w.pos, "weight %q: expected a positive integer 1..%d", w.s, maxWeight)
			}
			g.Weights = append(g.Weights, int(n))
		}
	}

	if o, ok := r.get(optSpeed); ok {
		for _, w := range o.words {
			n, err := parseSpeed(w.s)
			if err != nil {
				return g, errAt(w.pos, "speed %q: %v", w.s, err)
			}
			g.Speeds = append(g.Speeds, n)
		}
	}

	if w, ok, err := r.single(optMode); err != nil {
		return g, err
	} else if ok {
		switch m := Mode(w.s); m {
		case ModePacket, ModeMPTCP, ModeHybrid:
			g.Mode = m
		default:
			return g, errAt(w.pos, "mode %q: expected packet, mptcp or hybrid", w.s)
		}
	}

	if w, ok, err := r.single(optMarkMask); err != nil {
		return g, err
	} else if ok {
		m, err := parseMark(w.s)
		if err != nil || m == 0 {
			return g, errAt(w.pos, "fwmark-mask %q: expected a non-zero 32-bit number (decimal or 0x hex)", w.s)
		}
		g.MarkMask = m
	}

	if o, ok := r.get(optFwmark); ok {
		for _, w := range o.words {
			m, err := parseMark(w.s)
			if err != nil {
				return g, errAt(w.pos, "fwmark %q: expected a 32-bit number (decimal or 0x hex)", w.s)
			}
			g.Marks = append(g.Marks, m)
		}
	} else {
		for _, t := range g.Tables {
			m, ok := defaultMark(t, g.MarkMask)
			if !ok {
				return g, errAt(g.optPos(optTable), "table %d: no default mark inside fwmark-mask %#x (the mark is (table & 0xff) shifted into the mask); give fwmark explicitly", t, g.MarkMask)
			}
			g.Marks = append(g.Marks, m)
		}
	}

	if w, ok, err := r.single(optPriority); err != nil {
		return g, err
	} else if ok {
		n, err := strconv.Atoi(w.s)
		if err != nil || n < 1 || n > 32765 {
			return g, errAt(w.pos, "rule-priority %q: expected an integer 1..32765", w.s)
		}
		g.RulePriority = n
	}

	if w, ok, err := r.single(optARP); err != nil {
		return g, err
	} else if ok {
		switch w.s {
		case "on":
		case "off":
			g.KeepARP = true
		default:
			return g, errAt(w.pos, "arp-isolation %q: expected on or off", w.s)
		}
	}

	if err := buildMPTCP(r, &g); err != nil {
		return g, err
	}
	if err := buildRspec(r, &g); err != nil {
		return g, err
	}
	if err := validateGroup(&g); err != nil {
		return g, err
	}
	return g, nil
}

func buildRspec(r *rawGroup, g *Group) error {
	o, _ := r.get(optRspec)
	n := len(g.Tables)
	seen := map[netip.Addr]Pos{}
	ownFound := false
	for _, w := range o.words {
		vip, addrs, err := ParseRspecEntry(w.s, g.Family)
		if err != nil {
			return errAt(w.pos, "rspec entry %q: %v", w.s, err)
		}
		if prev, dup := seen[vip]; dup {
			return errAt(w.pos, "rspec entry %q: VIP %s already has an entry at %s", w.s, vip, prev)
		}
		seen[vip] = w.pos
		if len(addrs) > n {
			return errAt(w.pos, "rspec entry for %s has %d gateways but table has %d paths", vip, len(addrs), n)
		}
		if vip == g.VIP {
			g.Own = cycle(addrs, n)
			g.OwnPos = w.pos
			ownFound = true
			continue
		}
		g.Peers = append(g.Peers, Peer{VIP: vip, Gateways: cycle(addrs, n), Pos: w.pos})
	}
	if !ownFound {
		return errAt(o.pos, "own address %s (the %s's address) has no rspec entry", g.VIP, r.groupWord())
	}
	return nil
}

// single returns the one value of a single-valued option; ok is false when the option is absent.
func (r *rawGroup) single(name string) (w word, ok bool, err error) {
	o, ok := r.get(name)
	if !ok {
		return word{}, false, nil
	}
	if len(o.words) != 1 {
		return word{}, false, errAt(o.pos, "%s: expected one value, got %d", name, len(o.words))
	}
	return o.words[0], true, nil
}

func (r *rawGroup) groupWord() string {
	if r.source == "toml" {
		return "group"
	}
	return "stanza"
}

// optPos is where an option was written, or the group itself for a default.
func (g *Group) optPos(name string) Pos {
	if p, ok := g.OptPos[name]; ok {
		return p
	}
	return g.Pos
}

// parseVIP reads "ADDR" or "ADDR/BITS"; bits is -1 when absent.
func parseVIP(s string, fam Family) (netip.Addr, int, error) {
	b := -1
	if i := strings.IndexByte(s, '/'); i >= 0 {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, 0, fmt.Errorf("expected %s address or address/prefix-length", famWord(fam))
		}
		s, b = s[:i], p.Bits()
	}
	a, err := parseHostAddr(s, fam)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("expected %s address", famWord(fam))
	}
	return a, b, nil
}

func hostMask(f Family) string {
	if f == Inet6 {
		return "128"
	}
	return "255.255.255.255 or 32"
}

func parseNetmask(s string, fam Family) (int, error) {
	max := 32
	if fam == Inet6 {
		max = 128
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= max && !strings.HasPrefix(s, "+") {
		return n, nil
	}
	if fam == Inet {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			v := a.As4()
			m := uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
			if n := bits.LeadingZeros32(^m); m<<n == 0 {
				return n, nil
			}
			return 0, fmt.Errorf("expected a contiguous netmask like 255.255.255.255 or a prefix length 0..32")
		}
		return 0, fmt.Errorf("expected a netmask like 255.255.255.255 or a prefix length 0..32")
	}
	return 0, fmt.Errorf("expected a prefix length 0..128")
}

func parseFakenet(s string, fam Family) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		ex := "10.99.255.0/24"
		if fam == Inet6 {
			ex = "fd99::/64"
		}
		return netip.Prefix{}, fmt.Errorf("bad prefix: expected %s prefix like %s", famWord(fam), ex)
	}
	if (fam == Inet) != p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("expected %s prefix (this is an %s group)", famWord(fam), fam)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("host bits set: expected %s", p.Masked())
	}
	if msg := fakenetProblem(p); msg != "" {
		return netip.Prefix{}, errors.New(msg)
	}
	return p, nil
}

// parseSpeed reads a path's speed in Mbit/s: a number of Mbit/s as ethtool prints it ("1000"), with an M or
// G suffix ("100M", "2.5G", "10G"), or "auto" (0: what the path's NIC reports).
func parseSpeed(s string) (int, error) {
	if s == "auto" {
		return 0, nil
	}
	num, scale := s, 1.0
	switch {
	case strings.HasSuffix(s, "G"):
		num, scale = s[:len(s)-1], 1000
	case strings.HasSuffix(s, "M"):
		num = s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(num, 64)
	mbit := v * scale
	if err != nil || num == "" || strings.ContainsAny(num, "+-eExXpP_") || mbit != float64(int(mbit)) || mbit < 1 || mbit > MaxSpeed {
		return 0, fmt.Errorf("expected Mbit/s 1..%d (1000, 100M, 2.5G, 10G) or auto", MaxSpeed)
	}
	return int(mbit), nil
}

// parseMark reads decimal or 0x-hex, nothing else: ParseUint's base 0 would also take 0o/0b and "_".
func parseMark(s string) (uint32, error) {
	var v uint64
	var err error
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		v, err = strconv.ParseUint(s[2:], 16, 32)
	} else {
		v, err = strconv.ParseUint(s, 10, 32)
	}
	return uint32(v), err
}

// defaultMark puts the table's low byte at the lowest bit of the mask, so with the default mask the top
// byte of the packet mark names the path and the low 24 bits stay free for other software.
func defaultMark(table int, mask uint32) (uint32, bool) {
	shift := bits.TrailingZeros32(mask)
	v := uint64(table&0xff) << shift
	if v == 0 || v > 0xffffffff || uint32(v)&^mask != 0 {
		return 0, false
	}
	return uint32(v), true
}

// checkIfaceName applies the kernel's rule for device names (dev_valid_name): we create this device.
func checkIfaceName(name string, p Pos) error {
	bad := name == "" || name == "." || name == ".." || len(name) > 15
	for _, c := range []byte(name) {
		if c == '/' || c == ':' || c <= ' ' || c >= 0x7f {
			bad = true
		}
	}
	if bad {
		return errAt(p, "interface name %q: expected 1..15 printable ASCII characters, no '/', ':' or spaces", name)
	}
	return nil
}

// OptionPos tells where option name was written, or the group's own position when it was not.
func (g *Group) OptionPos(name string) Pos { return g.optPos(name) }
