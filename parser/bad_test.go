package parser

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// base is the smallest valid group; the bad cases change one line of it. Its lines:
//
//	1 iface  2 address  3 netmask  4 fakenet  5 table  6 rspec (own)  7 rspec (peer .20)
const base = `iface tun0 inet static
    address 10.99.255.10
    netmask 255.255.255.255
    fakenet 10.99.255.0/24
    table 10000 10001
    rspec 10.99.255.10:10.99.0.10:10.99.1.10
    rspec 10.99.255.20:10.99.0.20:10.99.1.20
`

// tun1 is a second valid group, lines 8.. after base: 8 iface 9 address 10 fakenet 11 table 12 rspec.
const tun1 = `iface tun1 inet static
    address 10.98.255.10/32
    fakenet 10.98.255.0/24
    table 10100 10101
    rspec 10.98.255.10:10.99.0.10:10.99.1.10
`

// with rewrites base: each pair replaces line N (1-based) of base; N past the end appends.
func with(pairs ...any) string {
	lines := strings.Split(strings.TrimSuffix(base, "\n"), "\n")
	for i := 0; i < len(pairs); i += 2 {
		n, s := pairs[i].(int), pairs[i+1].(string)
		if n > len(lines) {
			lines = append(lines, s)
		} else {
			lines[n-1] = s
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// v6base is an inet6 group, lines: 1 iface 2 address 3 fakenet 4 table 5 rspec (own) 6 rspec (peer ::20).
func v6base(pairs ...any) string {
	text := `iface tun0 inet6 static
    address fd99::10/128
    fakenet fd99::/64
    table 20000 20001
    rspec [fd99::10]:[fd00:1::10]:[fd00:2::10]
    rspec [fd99::20]:[fd00:1::20]:[fd00:2::20]
`
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	for i := 0; i < len(pairs); i += 2 {
		n, s := pairs[i].(int), pairs[i+1].(string)
		if n > len(lines) {
			lines = append(lines, s)
		} else {
			lines[n-1] = s
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// manyPeers is a group of paths paths and peers peers (fakenet 10.0.0.0/8, NICs in 192.168/16), lines:
// 1 iface 2 address 3 fakenet 4 the extra line (weight) 5 table 6 own entry, 7.. peers.
func manyPeers(paths, peers int, extra string) string {
	var b strings.Builder
	b.WriteString("iface tun0 inet static\n    address 10.0.0.1/32\n    fakenet 10.0.0.0/8\n" + extra + "\n    table")
	for i := range paths {
		fmt.Fprintf(&b, " %d", 1000+i)
	}
	b.WriteString("\n    rspec 10.0.0.1")
	for i := range paths {
		fmt.Fprintf(&b, ":192.168.%d.1", i)
	}
	for k := range peers {
		fmt.Fprintf(&b, "\n    rspec 10.%d.%d.%d", 1+k/62500, k/250%250, k%250+2)
		for i := range paths {
			fmt.Fprintf(&b, ":192.168.%d.%d", i, 2+k%250)
		}
	}
	return b.String() + "\n"
}

// tun1With is tun1 (lines 8.. after base: 8 iface 9 address 10 fakenet 11 table 12 rspec) with another
// address, fakenet and own rspec entry.
func tun1With(address, fakenet, own string) string {
	return "iface tun1 inet static\n    address " + address + "/32\n    fakenet " + fakenet + "\n    table 10100 10101\n    rspec " + own + "\n"
}

const baseTOML = `[tun0]
address = "10.99.255.10"
fakenet = ["10.99.255.0/24"]
table = [10000, 10001]
rspec = [
  "10.99.255.10:10.99.0.10:10.99.1.10",
  "10.99.255.20:10.99.0.20:10.99.1.20",
]
`

type badCase struct {
	name   string
	files  map[string]string // under a temp dir: "interfaces", "interfaces.d/x", "linkagg/x.toml"
	modes  map[string]os.FileMode
	owners map[string]int    // chown to this uid (needs root)
	links  map[string]string // symlink name -> target (relative to the temp dir unless absolute)
	fifos  []string          // named pipes to make
	socks  []string          // unix sockets to make
	perms  bool              // LoadOptions.CheckPerms
	pos    string            // expected position, file relative to the temp dir
	phrase string            // expected part of the message
}

func ifaces(s string) map[string]string { return map[string]string{"interfaces": s} }
func tomls(s string) map[string]string  { return map[string]string{"linkagg/a.toml": s} }

func badCases() []badCase {
	big := "# padding\n" + strings.Repeat("#"+strings.Repeat("x", 1023)+"\n", 1024)
	return []badCase{
		// addresses and prefixes
		{name: "malformed prefix", files: ifaces(with(4, "    fakenet 10.99.255.0/33")), pos: "interfaces:4", phrase: `fakenet "10.99.255.0/33": bad prefix: expected IPv4 prefix like 10.99.255.0/24`},
		{name: "prefix host bits", files: ifaces(with(4, "    fakenet 10.99.255.1/24")), pos: "interfaces:4", phrase: "host bits set: expected 10.99.255.0/24"},
		{name: "IPv6 fakenet in inet", files: ifaces(with(4, "    fakenet fd99::/64")), pos: "interfaces:4", phrase: "expected IPv4 prefix"},
		{name: "fakenets overlap", files: ifaces(with(8, "    fakenet 10.99.0.0/16")), pos: "interfaces:8", phrase: "fakenet 10.99.0.0/16 overlaps fakenet 10.99.255.0/24"},
		{name: "malformed address", files: ifaces(with(2, "    address 10.99.255")), pos: "interfaces:2", phrase: `address "10.99.255": expected IPv4 address`},
		{name: "bad netmask", files: ifaces(with(3, "    netmask 255.0.255.0")), pos: "interfaces:3", phrase: "expected a contiguous netmask"},
		// a VIP with a shorter prefix: ifup would make a kernel route for it that nobody owns (issue 21 #8)
		{name: "address with /24", files: ifaces(with(2, "    address 10.99.255.10/24", 3, "")), pos: "interfaces:2", phrase: `address "10.99.255.10/24": a VIP is one address: expected /32 (fakenet is the subnet)`},
		{name: "address /24 and netmask /32", files: ifaces(with(2, "    address 10.99.255.10/24")), pos: "interfaces:2", phrase: "a VIP is one address"},
		// ifup gives an address without prefix its class's: 10.99.255.10 would be 10.0.0.0/8 into the TUN
		{name: "static address without prefix", files: ifaces(with(3, "")), pos: "interfaces:2", phrase: `address "10.99.255.10" has no prefix length: ifup would give it its class's or /64, a route into tun0 for all of that: expected 10.99.255.10/32 or netmask 255.255.255.255`},
		{name: "inet6 static address without prefix", files: ifaces(v6base(2, "    address fd99::10")), pos: "interfaces:2", phrase: `expected fd99::10/128 or netmask 128`},
		{name: "netmask /24", files: ifaces(with(3, "    netmask 255.255.255.0")), pos: "interfaces:3", phrase: `netmask "255.255.255.0": a VIP is one address: expected 255.255.255.255 or 32`},
		{name: "netmask 24", files: ifaces(with(3, "    netmask 24")), pos: "interfaces:3", phrase: `netmask "24": a VIP is one address`},
		{name: "inet6 address /64", files: ifaces(v6base(2, "    address fd99::10/64")), pos: "interfaces:2", phrase: `address "fd99::10/64": a VIP is one address: expected /128`},
		{name: "inet6 netmask 64", files: ifaces(v6base(2, "    address fd99::10", 7, "    netmask 64")), pos: "interfaces:7", phrase: `netmask "64": a VIP is one address: expected 128`},
		{name: "malformed rspec address", files: ifaces(with(7, "    rspec 10.99.255.x:10.3.23.1")), pos: "interfaces:7", phrase: `rspec entry "10.99.255.x:10.3.23.1": bad address "10.99.255.x": expected IPv4 address`},
		{name: "rspec without gateway", files: ifaces(with(7, "    rspec 10.99.255.20")), pos: "interfaces:7", phrase: "expected VIP:GW1[:GW2…]"},
		{name: "VIP outside fakenet", files: ifaces(with(2, "    address 10.98.255.10", 6, "    rspec 10.98.255.10:10.99.0.10:10.99.1.10")), pos: "interfaces:2", phrase: "address 10.98.255.10 is outside every fakenet (10.99.255.0/24)"},
		{name: "peer VIP outside fakenet", files: ifaces(with(7, "    rspec 10.98.255.20:10.99.0.20")), pos: "interfaces:7", phrase: "rspec entry for 10.98.255.20: VIP is outside every fakenet"},
		{name: "more gateways than tables", files: ifaces(with(7, "    rspec 10.99.255.20:10.99.0.20:10.99.1.20:10.99.2.20")), pos: "interfaces:7", phrase: "rspec entry for 10.99.255.20 has 3 gateways but table has 2 paths"},
		{name: "duplicate VIP", files: ifaces(with(8, "    rspec 10.99.255.20:10.99.0.21")), pos: "interfaces:8", phrase: "VIP 10.99.255.20 already has an entry at"},
		{name: "own entry missing", files: ifaces(with(6, "")), pos: "interfaces:7", phrase: "own address 10.99.255.10 (the stanza's address) has no rspec entry"},
		{name: "entry on a continued line", files: ifaces(with(7, "    rspec 10.99.255.20:10.99.0.20 \\", 8, "      10.99.255.30:10.99.0.x")), pos: "interfaces:8", phrase: `bad address "10.99.0.x"`},
		{name: "IPv4 gateway in inet6", files: ifaces(`iface tun0 inet6 static
    address fd99::10/128
    fakenet fd99::/64
    table 20000 20001
    rspec [fd99::10]:[fd00:1::10]:[fd00:2::10]
    rspec [fd99::20]:[fd00:1::20]:10.99.1.20
`), pos: "interfaces:6", phrase: `bad address "10.99.1.20": expected IPv6 address`},
		{name: "unbracketed IPv6", files: ifaces(`iface tun0 inet6 static
    address fd99::10/128
    fakenet fd99::/64
    table 20000
    rspec fd99::10
`), pos: "interfaces:5", phrase: `rspec entry "fd99::10": "fd99" is not bracketed: expected IPv6 addresses in brackets`},

		// tables, weights, marks
		{name: "reserved table 0", files: ifaces(with(5, "    table 0 10001")), pos: "interfaces:5", phrase: "table 0 is reserved (unspec)"},
		{name: "reserved table 253", files: ifaces(with(5, "    table 253 10001")), pos: "interfaces:5", phrase: "table 253 is reserved (default)"},
		{name: "reserved table 254", files: ifaces(with(5, "    table 10000 254")), pos: "interfaces:5", phrase: "table 254 is reserved (main)"},
		{name: "reserved table 255", files: ifaces(with(5, "    table 255 10001")), pos: "interfaces:5", phrase: "table 255 is reserved (local)"},
		{name: "too many tables", files: ifaces(with(5, "    table"+strings.Repeat(" 1", 257))), pos: "interfaces:5", phrase: "table has 257 values: expected 1..256 routing tables"},
		{name: "table too big", files: ifaces(with(5, "    table 10000 2147483648")), pos: "interfaces:5", phrase: "table 2147483648: expected an integer 1..2147483647"},
		{name: "table not a number", files: ifaces(with(5, "    table 10000 main")), pos: "interfaces:5", phrase: `table "main": expected an integer`},
		{name: "duplicate table in group", files: ifaces(with(5, "    table 10000 10000")), pos: "interfaces:5", phrase: "table 10000 is listed twice"},
		{name: "duplicate table across groups", files: ifaces(base + strings.Replace(tun1, "10100 10101", "10100 10001", 1)), pos: "interfaces:11", phrase: "table 10001 is also used by group tun0 at "},
		{name: "weight 0", files: ifaces(with(8, "    weight 0 1")), pos: "interfaces:8", phrase: `weight "0": expected a positive integer`},
		{name: "weight negative", files: ifaces(with(8, "    weight 1 -2")), pos: "interfaces:8", phrase: `weight "-2": expected a positive integer`},
		{name: "weight not a number", files: ifaces(with(8, "    weight 1 two")), pos: "interfaces:8", phrase: `weight "two": expected a positive integer`},
		{name: "weight count", files: ifaces(with(8, "    weight 3 2 1")), pos: "interfaces:8", phrase: "weight has 3 values but table has 2"},
		{name: "fwmark count", files: ifaces(with(8, "    fwmark 0x1000000")), pos: "interfaces:8", phrase: "fwmark has 1 value but table has 2"},
		{name: "fwmark duplicate in group", files: ifaces(with(8, "    fwmark 0x1000000 0x1000000")), pos: "interfaces:8", phrase: "duplicate mark 0x1000000: paths 1 and 2 (tables 10000 and 10001)"},
		{name: "default marks collide", files: ifaces(with(5, "    table 10000 10256")), pos: "interfaces:5", phrase: "duplicate mark 0x10000000: paths 1 and 2 (tables 10000 and 10256) (marks derived from table; give fwmark explicitly)"},
		{name: "fwmark duplicate across groups", files: ifaces(base + tun1 + "    fwmark 0x10000000 0x2000000\n"), pos: "interfaces:13", phrase: "duplicate mark 0x10000000: also used by group tun0 at "},
		{name: "fwmark outside mask", files: ifaces(with(8, "    fwmark 0x1000000 0x10")), pos: "interfaces:8", phrase: "mark 0x10 of path 2 is outside fwmark-mask 0xff000000"},
		{name: "fwmark zero", files: ifaces(with(8, "    fwmark 0 0x1000000")), pos: "interfaces:8", phrase: "mark of path 1 is 0"},
		{name: "fwmark not a number", files: ifaces(with(8, "    fwmark 0x1000000 0o7")), pos: "interfaces:8", phrase: `fwmark "0o7": expected a 32-bit number (decimal or 0x hex)`},
		{name: "no default mark", files: ifaces(with(5, "    table 10240 10001")), pos: "interfaces:5", phrase: "table 10240: no default mark inside fwmark-mask 0xff000000"},
		{name: "fwmark-mask zero", files: ifaces(with(8, "    fwmark-mask 0")), pos: "interfaces:8", phrase: "fwmark-mask \"0\": expected a non-zero"},
		{name: "rule-priority 0", files: ifaces(with(8, "    rule-priority 0")), pos: "interfaces:8", phrase: `rule-priority "0": expected an integer 1..32765`},
		{name: "rule-priority 32766", files: ifaces(with(8, "    rule-priority 32766")), pos: "interfaces:8", phrase: "expected an integer 1..32765"},
		{name: "rule-priority 32764 mptcp", files: ifaces(with(8, "    mode mptcp\n    rule-priority 32764")), pos: "interfaces:9", phrase: "rule-priority 32764: expected 1..32763 in mode mptcp"},
		{name: "rule-priority 32765 hybrid", files: ifaces(with(8, "    rule-priority 32765\n    mode hybrid")), pos: "interfaces:8", phrase: "expected 2..32764 in mode hybrid"},
		{name: "rule-priority 1 hybrid", files: ifaces(with(8, "    mode hybrid\n    rule-priority 1")), pos: "interfaces:9", phrase: "rule-priority 1: expected 2..32764 in mode hybrid (its path rules take PRIORITY-1"},
		{name: "TOML rule-priority 1 hybrid", files: tomls(baseTOML + "mode = \"hybrid\"\nrule-priority = 1\n"), pos: "linkagg/a.toml:10 (tun0.rule-priority)", phrase: "rule-priority 1: expected 2..32764 in mode hybrid"},
		{name: "weights too long a sequence", files: ifaces(with(8, "    weight 1000 999")), pos: "interfaces:8", phrase: "weights reduce to a sequence of 1999 entries; at most 1024 fit in one nftables transaction (1 fakenet, 2 paths, 1 peer)"},
		{name: "weights too long for 4 fakenets", files: ifaces(with(4, "    fakenet 10.99.255.0/26 10.99.255.64/26 10.99.255.128/26 10.99.255.192/26", 8, "    weight 400 399")), pos: "interfaces:8", phrase: "weights reduce to a sequence of 799 entries; at most 764 fit in one nftables transaction (4 fakenets, 2 paths, 1 peer)"},
		{name: "weights too long for 254 peers on 8 paths", files: ifaces(manyPeers(8, 254, "    weight 100 99 98 97 96 95 94 93")), pos: "interfaces:4", phrase: "weights reduce to a sequence of 772 entries; at most 230 fit in one nftables transaction (1 fakenet, 8 paths, 254 peers)"},
		{name: "too many peers", files: ifaces(manyPeers(2, 1025, "")), pos: "interfaces:6", phrase: "rspec has 1025 peers: at most 1024 fit the nftables map of peers that lost a path"},
		{name: "TOML weights too long a sequence", files: tomls(baseTOML + "weight = [1000, 999]\n"), pos: "linkagg/a.toml:9 (tun0.weight)", phrase: "weights reduce to a sequence of 1999 entries; at most 1024"},

		// fakenets that would take traffic the host needs elsewhere
		{name: "fakenet default route", files: ifaces(with(4, "    fakenet 0.0.0.0/0")), pos: "interfaces:4", phrase: `fakenet "0.0.0.0/0": the default route: expected a prefix of /8 or longer`},
		{name: "fakenet shorter than /8", files: ifaces(with(8, "    fakenet 8.0.0.0/7")), pos: "interfaces:8", phrase: `fakenet "8.0.0.0/7": expected a prefix of /8 or longer (a fakenet holds the groups' VIPs)`},
		{name: "fakenet in loopback", files: ifaces(with(8, "    fakenet 127.0.0.0/24")), pos: "interfaces:8", phrase: `fakenet "127.0.0.0/24": overlaps the loopback range 127.0.0.0/8: expected a prefix outside`},
		{name: "fakenet holding loopback", files: ifaces(with(4, "    fakenet 96.0.0.0/3")), pos: "interfaces:4", phrase: `fakenet "96.0.0.0/3": expected a prefix of /8 or longer`},
		{name: "fakenet link-local", files: ifaces(with(8, "    fakenet 169.254.0.0/16")), pos: "interfaces:8", phrase: "overlaps the link-local range 169.254.0.0/16"},
		{name: "fakenet multicast", files: ifaces(with(8, "    fakenet 239.1.0.0/16")), pos: "interfaces:8", phrase: "overlaps the multicast range 224.0.0.0/4"},
		{name: "fakenet this-network", files: ifaces(with(8, "    fakenet 0.0.0.0/8")), pos: "interfaces:8", phrase: `overlaps the "this network" range 0.0.0.0/8`},
		{name: "inet6 fakenet default route", files: ifaces(v6base(3, "    fakenet ::/0")), pos: "interfaces:3", phrase: `fakenet "::/0": the default route: expected a prefix of /16 or longer`},
		{name: "inet6 fakenet shorter than /16", files: ifaces(v6base(3, "    fakenet fc00::/7")), pos: "interfaces:3", phrase: `fakenet "fc00::/7": expected a prefix of /16 or longer`},
		{name: "inet6 fakenet link-local", files: ifaces(v6base(7, "    fakenet fe80::/64")), pos: "interfaces:7", phrase: "overlaps the link-local range fe80::/10"},
		{name: "inet6 fakenet multicast", files: ifaces(v6base(7, "    fakenet ff02::/16")), pos: "interfaces:7", phrase: "overlaps the multicast range ff00::/8"},
		{name: "inet6 fakenet unspecified", files: ifaces(v6base(7, "    fakenet ::/64")), pos: "interfaces:7", phrase: "overlaps the unspecified range ::/128"},
		{name: "inet6 fakenet loopback", files: ifaces(v6base(7, "    fakenet ::1/128")), pos: "interfaces:7", phrase: "overlaps the loopback range ::1/128"},
		{name: "TOML fakenet default route", files: tomls(strings.Replace(baseTOML, "10.99.255.0/24", "0.0.0.0/0", 1)), pos: "linkagg/a.toml:3 (tun0.fakenet[0])", phrase: "the default route: expected a prefix of /8 or longer"},

		// gateways that route nowhere
		{name: "gateway is own address", files: ifaces(with(7, "    rspec 10.99.255.20:10.99.0.10:10.99.1.20")), pos: "interfaces:7", phrase: "rspec entry for 10.99.255.20: gateway 10.99.0.10 of path 1 is this host's own address on path 1: expected the peer's address on that path"},
		{name: "gateway is own address of another path", files: ifaces(with(7, "    rspec 10.99.255.20:10.99.0.20:10.99.0.10")), pos: "interfaces:7", phrase: "gateway 10.99.0.10 of path 2 is this host's own address on path 1"},
		{name: "gateway is the VIP", files: ifaces(with(7, "    rspec 10.99.255.20:10.99.255.10:10.99.1.20")), pos: "interfaces:7", phrase: "gateway 10.99.255.10 of path 1 is this group's VIP: expected the peer's address on that path"},
		{name: "gateway is a peer VIP", files: ifaces(with(8, "    rspec 10.99.255.30:10.99.255.20:10.99.1.30")), pos: "interfaces:8", phrase: "gateway 10.99.255.20 of path 1 is the VIP of peer 10.99.255.20 (at interfaces:7)"},
		{name: "gateway in the fakenet", files: ifaces(with(7, "    rspec 10.99.255.20:10.99.0.20:10.99.255.99")), pos: "interfaces:7", phrase: "gateway 10.99.255.99 of path 2 is inside fakenet 10.99.255.0/24: expected an address on a member NIC's subnet"},
		{name: "gateway link-local", files: ifaces(with(7, "    rspec 10.99.255.20:169.254.7.1:10.99.1.20")), pos: "interfaces:7", phrase: "gateway 169.254.7.1 of path 1 is link-local: expected an address on a member NIC's subnet (a link-local gateway names no NIC)"},
		{name: "gateway loopback", files: ifaces(with(7, "    rspec 10.99.255.20:127.0.0.2:10.99.1.20")), pos: "interfaces:7", phrase: "gateway 127.0.0.2 of path 1 is a loopback address: expected an address on a member NIC's subnet"},
		{name: "gateway multicast", files: ifaces(with(7, "    rspec 10.99.255.20:224.0.0.9:10.99.1.20")), pos: "interfaces:7", phrase: `bad address "224.0.0.9": expected a unicast IPv4 address`},
		{name: "gateway unspecified", files: ifaces(with(7, "    rspec 10.99.255.20:0.0.0.0:10.99.1.20")), pos: "interfaces:7", phrase: `bad address "0.0.0.0": expected a unicast IPv4 address`},
		{name: "inet6 gateway link-local", files: ifaces(v6base(6, "    rspec [fd99::20]:[fe80::1]:[fd00:2::20]")), pos: "interfaces:6", phrase: "gateway fe80::1 of path 1 is link-local"},
		{name: "inet6 gateway loopback", files: ifaces(v6base(6, "    rspec [fd99::20]:[fd00:1::20]:[::1]")), pos: "interfaces:6", phrase: "gateway ::1 of path 2 is a loopback address"},
		{name: "TOML gateway is own address", files: tomls(strings.Replace(baseTOML, "10.99.255.20:10.99.0.20", "10.99.255.20:10.99.0.10", 1)), pos: "linkagg/a.toml:7 (tun0.rspec[1])", phrase: "gateway 10.99.0.10 of path 1 is this host's own address on path 1"},

		// VIPs and path addresses mixed up
		{name: "VIP is a path address", files: ifaces(with(6, "    rspec 10.99.255.10:10.99.255.10:10.99.1.10")), pos: "interfaces:6", phrase: "own address 10.99.255.10 of path 1 is this group's VIP: expected this host's address on that path's NIC"},
		{name: "peer VIP is a path address", files: ifaces(with(6, "    rspec 10.99.255.10:10.99.0.10:10.99.255.20")), pos: "interfaces:6", phrase: "own address 10.99.255.20 of path 2 is the VIP of peer 10.99.255.20 (at interfaces:7)"},
		{name: "path address in the fakenet", files: ifaces(with(6, "    rspec 10.99.255.10:10.99.255.11:10.99.1.10")), pos: "interfaces:6", phrase: "own address 10.99.255.11 of path 1 is inside fakenet 10.99.255.0/24: expected this host's address on that path's NIC, outside the fakenets"},
		{name: "path address loopback", files: ifaces(with(6, "    rspec 10.99.255.10:127.0.0.1:10.99.1.10")), pos: "interfaces:6", phrase: "own address 127.0.0.1 of path 1 is a loopback address"},
		{name: "TOML VIP is a path address", files: tomls(strings.Replace(baseTOML, "10.99.255.10:10.99.0.10", "10.99.255.10:10.99.255.10", 1)), pos: "linkagg/a.toml:6 (tun0.rspec[0])", phrase: "own address 10.99.255.10 of path 1 is this group's VIP"},

		// groups whose addresses overlap: packets to the overlap would be marked by both
		{name: "fakenets of two groups equal", files: ifaces(base + tun1With("10.99.255.11", "10.99.255.0/24", "10.99.255.11:10.99.0.10:10.99.1.10")), pos: "interfaces:10", phrase: "fakenet 10.99.255.0/24 is also a fakenet of group tun0 (at interfaces:4): expected the groups' fakenets apart"},
		{name: "fakenets of two groups overlap", files: ifaces(base + tun1With("10.99.254.10", "10.99.0.0/16", "10.99.254.10:10.97.0.10")), pos: "interfaces:10", phrase: "fakenet 10.99.0.0/16 overlaps fakenet 10.99.255.0/24 of group tun0 (at interfaces:4)"},
		{name: "VIP of two groups", files: ifaces(base + tun1With("10.99.255.20", "10.99.255.0/24", "10.99.255.20:10.97.0.10")), pos: "interfaces:9", phrase: "address 10.99.255.20 is also the VIP of peer 10.99.255.20 of group tun0 (at interfaces:7): expected each VIP in one group"},
		{name: "peer VIP of two groups", files: ifaces(base + tun1With("10.99.255.11", "10.99.255.0/24", "10.99.255.11:10.97.0.10") + "    rspec 10.99.255.10:10.97.0.20\n"), pos: "interfaces:13", phrase: "rspec entry for 10.99.255.10: VIP is also the VIP of group tun0 (at interfaces:2)"},
		{name: "fakenet holds another group's path address", files: ifaces(base + tun1With("10.99.0.100", "10.99.0.0/24", "10.99.0.100:10.97.0.10")), pos: "interfaces:10", phrase: "fakenet 10.99.0.0/24 holds 10.99.0.10, the own address of path 1 of group tun0 (at interfaces:6)"},
		{name: "fakenet holds another group's gateway", files: ifaces(base + tun1With("10.99.0.17", "10.99.0.16/28", "10.99.0.17:10.97.0.10")), pos: "interfaces:10", phrase: "fakenet 10.99.0.16/28 holds 10.99.0.20, gateway of path 1 of peer 10.99.255.20 of group tun0 (at interfaces:7)"},
		{name: "gateway inside another group's fakenet", files: ifaces(base + tun1 + "    rspec 10.98.255.20:10.99.255.77\n"), pos: "interfaces:13", phrase: "rspec entry for 10.98.255.20: gateway 10.99.255.77 of path 1 is inside fakenet 10.99.255.0/24 of group tun0 (at interfaces:4)"},
		{name: "TOML fakenets of two groups overlap", files: tomls(baseTOML + "[tun1]\naddress = \"10.99.254.10\"\nfakenet = [\"10.99.0.0/16\"]\ntable = [10100, 10101]\nrspec = [\"10.99.254.10:10.97.0.10\"]\n"), pos: "linkagg/a.toml:11 (tun1.fakenet[0])", phrase: "fakenet 10.99.0.0/16 overlaps fakenet 10.99.255.0/24 of group tun0 (at linkagg/a.toml:3 (tun0.fakenet[0]))"},
		{name: "stanza and TOML fakenets equal", files: map[string]string{"interfaces": base, "linkagg/a.toml": strings.NewReplacer("[tun0]", "[tun1]", "10000, 10001", "10100, 10101", "10.99.255.10", "10.99.255.11", "10.99.255.20:", "10.99.255.21:").Replace(baseTOML)}, pos: "linkagg/a.toml:3 (tun1.fakenet[0])", phrase: "fakenet 10.99.255.0/24 is also a fakenet of group tun0 (at interfaces:4)"},

		// scalars and stanza syntax
		{name: "mtu too small", files: ifaces(with(8, "    mtu 67")), pos: "interfaces:8", phrase: `mtu "67": expected an integer 68..65535`},
		{name: "mtu too big", files: ifaces(with(8, "    mtu 65536")), pos: "interfaces:8", phrase: "expected an integer 68..65535"},
		{name: "inet6 mtu", files: ifaces("iface tun0 inet6 static\n    mtu 1279\n    address fd99::10/128\n    fakenet fd99::/64\n    table 2\n    rspec [fd99::10]:[fd00::1]\n"), pos: "interfaces:2", phrase: "expected an integer 1280..65535"},
		{name: "unknown mode", files: ifaces(with(8, "    mode fast")), pos: "interfaces:8", phrase: `mode "fast": expected packet, mptcp or hybrid`},
		{name: "single option twice", files: ifaces(with(8, "    table 10002 10003")), pos: "interfaces:8", phrase: "option table given twice (first at "},
		{name: "address twice", files: ifaces(with(8, "    address 10.99.255.11")), pos: "interfaces:8", phrase: "option address given twice"},
		{name: "mode with two words", files: ifaces(with(8, "    mode packet mptcp")), pos: "interfaces:8", phrase: "mode: expected one value, got 2"},
		{name: "option without value", files: ifaces(with(8, "    fakenet")), pos: "interfaces:8", phrase: "fakenet: expected a value"},
		{name: "missing fakenet", files: ifaces(with(4, "")), pos: "interfaces:1", phrase: `missing option "fakenet" (a linkagg group needs address, fakenet, table and rspec)`},
		{name: "missing address", files: ifaces(with(2, "")), pos: "interfaces:1", phrase: `missing option "address"`},
		{name: "broken continuation", files: ifaces(with(7, "    rspec 10.99.255.20:10.99.0.20 \\ ", 8, "      10.99.255.30:10.99.0.30")), pos: "interfaces:8", phrase: `option "10.99.255.30:10.99.0.30" looks like the continuation of the previous line`},
		{name: "misspelled option", files: ifaces(with(8, "    weights 1 1")), pos: "interfaces:8", phrase: `unknown option "weights": did you mean "weight"?`},
		{name: "non-UTF-8", files: ifaces(with(8, "    pre-up echo \xff\xfe")), pos: "interfaces:8", phrase: "invalid UTF-8"},
		{name: "non-UTF-8 in continuation", files: ifaces(with(7, "    rspec 10.99.255.20:10.99.0.20 \\", 8, "  10.99.255.3\xff:10.99.0.3")), pos: "interfaces:8", phrase: "invalid UTF-8"},
		{name: "family ipx", files: ifaces("iface tun0 ipx static\n    table 1\n"), pos: "interfaces:1", phrase: "linkagg options need family inet or inet6"},
		{name: "iface line too short", files: ifaces("iface tun0 inet\n    table 1\n"), pos: "interfaces:1", phrase: `expected "iface NAME inet|inet6 METHOD [inherits TEMPLATE]"`},
		{name: "iface name too long", files: ifaces(strings.Replace(base, "tun0", "tun0123456789abc", 1)), pos: "interfaces:1", phrase: `interface name "tun0123456789abc": expected 1..15`},
		{name: "file too large", files: ifaces(big), pos: "interfaces", phrase: "file too large ("},

		// sources
		{name: "error in a sourced file", files: map[string]string{"interfaces": "source interfaces.d/*\n", "interfaces.d/tun0": with(5, "    table 1 1")}, pos: "interfaces.d/tun0:5", phrase: "table 1 is listed twice"},
		{name: "error via source-directory", files: map[string]string{"interfaces": "source-directory interfaces.d\n", "interfaces.d/tun0": with(5, "    table 1 1"), "interfaces.d/skip.me": "garbage\xff fakenet"}, pos: "interfaces.d/tun0:5", phrase: "table 1 is listed twice"},
		{name: "include loop", files: map[string]string{"interfaces": "source interfaces.d/a\n", "interfaces.d/a": "auto x\nsource b\n", "interfaces.d/b": "source a\n"}, pos: "interfaces.d/b:1", phrase: "include loop"},
		{name: "same group in two sourced files", files: map[string]string{"interfaces": "source interfaces.d/*\n", "interfaces.d/a": base, "interfaces.d/b": "\n" + base}, pos: "interfaces.d/b:2", phrase: "group tun0 (inet) is defined twice: also at "},

		// TOML
		{name: "unknown TOML key", files: tomls(baseTOML + "tabel = [1]\n"), pos: "linkagg/a.toml:9 (tun0.tabel)", phrase: `unknown key "tabel": expected one of family, address`},
		{name: "unknown TOML subtable", files: tomls(baseTOML + "[tun0.extra]\nx = 1\n"), pos: "linkagg/a.toml:9 (tun0.extra)", phrase: `unknown key "extra"`},
		{name: "TOML top-level value", files: tomls("debug = true\n" + baseTOML), pos: "linkagg/a.toml:1 (debug)", phrase: `key "debug": expected a table [debug] describing a group`},
		{name: "TOML unknown key via dotted table", files: tomls("[tun0.extra]\nx = 1\n"), pos: "linkagg/a.toml:1 (tun0.extra)", phrase: `unknown key "extra"`},
		{name: "TOML array of tables", files: tomls("[[tun0]]\naddress = \"10.99.255.10\"\n"), pos: "linkagg/a.toml:1 (tun0)", phrase: `key "tun0": expected a table [tun0] describing a group`},
		{name: "TOML wrong type", files: tomls(strings.Replace(baseTOML, "table = [10000, 10001]", `table = "10000"`, 1)), pos: "linkagg/a.toml:4 (tun0.table)", phrase: "expected an array of integers, got a string"},
		{name: "TOML wrong element type", files: tomls(strings.Replace(baseTOML, "table = [10000, 10001]", `table = [10000, "10001"]`, 1)), pos: "linkagg/a.toml:4 (tun0.table[1])", phrase: "expected an integer, got a string"},
		{name: "TOML bad rspec entry", files: tomls(strings.Replace(baseTOML, "10.99.255.20:10.99.0.20", "10.99.255.20:10.99.0.x", 1)), pos: "linkagg/a.toml:7 (tun0.rspec[1])", phrase: `bad address "10.99.0.x"`},
		{name: "TOML syntax", files: tomls("[tun0]\naddress = \n"), pos: "linkagg/a.toml:2", phrase: "TOML syntax"},
		{name: "TOML bad family", files: tomls(baseTOML + "family = \"ipv4\"\n"), pos: "linkagg/a.toml:9 (tun0.family)", phrase: `family "ipv4": expected "inet" or "inet6"`},
		{name: "TOML missing key", files: tomls("[tun0]\naddress = \"10.99.255.10\"\n"), pos: "linkagg/a.toml:1 (tun0)", phrase: `missing key "fakenet"`},
		{name: "TOML own entry missing", files: tomls(strings.Replace(baseTOML, "10.99.255.10:", "10.99.255.11:", 1)), pos: "linkagg/a.toml:5 (tun0.rspec)", phrase: "own address 10.99.255.10 (the group's address) has no rspec entry"},
		{name: "group in stanza and TOML", files: map[string]string{"interfaces": base, "linkagg/a.toml": baseTOML}, pos: "linkagg/a.toml:1 (tun0)", phrase: "group tun0 (inet) is defined twice: also at "},
		{name: "group in two TOML files", files: map[string]string{"linkagg/a.toml": baseTOML, "linkagg/b.toml": strings.Replace(baseTOML, "10000, 10001", "10002, 10003", 1)}, pos: "linkagg/b.toml:1 (tun0)", phrase: "defined twice"},
		{name: "TOML file too large", files: tomls(big), pos: "linkagg/a.toml", phrase: "file too large"},

		// permissions
		{name: "world-writable interfaces", files: ifaces(base), modes: map[string]os.FileMode{"interfaces": 0o666}, perms: true, pos: "interfaces", phrase: "is writable by group/others (mode 0666): refusing (root runs this)"},
		{name: "group-writable TOML", files: tomls(baseTOML), modes: map[string]os.FileMode{"linkagg/a.toml": 0o664}, perms: true, pos: "linkagg/a.toml", phrase: "(mode 0664): refusing"},
		{name: "group-writable TOML dir", files: tomls(baseTOML), modes: map[string]os.FileMode{"linkagg": 0o775}, perms: true, pos: "linkagg", phrase: "directory "},
		{name: "writable sourced file", files: map[string]string{"interfaces": "source interfaces.d/*\n", "interfaces.d/x": base}, modes: map[string]os.FileMode{"interfaces.d/x": 0o646}, perms: true, pos: "interfaces.d/x", phrase: "writable by group/others (mode 0646)"},

		// owners: root acts on these files, so nobody but root (or the user running linkagg) may own them
		{name: "interfaces of another user", files: ifaces(base), owners: map[string]int{"interfaces": 4321}, perms: true, pos: "interfaces", phrase: "file interfaces is owned by uid 4321: expected root"},
		{name: "TOML of another user", files: tomls(baseTOML), owners: map[string]int{"linkagg/a.toml": 4321}, perms: true, pos: "linkagg/a.toml", phrase: "is owned by uid 4321: expected root"},
		{name: "TOML dir of another user", files: tomls(baseTOML), owners: map[string]int{"linkagg": 4321}, perms: true, pos: "linkagg", phrase: "directory linkagg is owned by uid 4321: expected root"},
		{name: "sourced file of another user", files: map[string]string{"interfaces": "source interfaces.d/*\n", "interfaces.d/x": base}, owners: map[string]int{"interfaces.d/x": 4321}, perms: true, pos: "interfaces.d/x", phrase: "is owned by uid 4321"},
		{name: "source-directory of another user", files: map[string]string{"interfaces": "source-directory interfaces.d\n", "interfaces.d/x": base}, owners: map[string]int{"interfaces.d": 4321}, perms: true, pos: "interfaces.d", phrase: "directory interfaces.d is owned by uid 4321"},
		{name: "symlink to a file of another user", files: map[string]string{"real/interfaces": base}, links: map[string]string{"interfaces": "real/interfaces"}, owners: map[string]int{"real/interfaces": 4321}, perms: true, pos: "interfaces", phrase: "file interfaces (symlink to real/interfaces) is owned by uid 4321: expected root"},
		{name: "symlink to a writable file", files: map[string]string{"real/a.toml": baseTOML}, links: map[string]string{"linkagg/a.toml": "../real/a.toml"}, modes: map[string]os.FileMode{"real/a.toml": 0o666}, perms: true, pos: "linkagg/a.toml", phrase: "file linkagg/a.toml (symlink to real/a.toml) is writable by group/others (mode 0666)"},
		{name: "symlink into a writable directory", files: map[string]string{"shared/interfaces": base}, links: map[string]string{"interfaces": "shared/interfaces"}, modes: map[string]os.FileMode{"shared": 0o777}, perms: true, pos: "shared", phrase: "directory shared (holding interfaces's target) is writable by group/others (mode 0777)"},

		// only regular files are read: a FIFO would block the open forever, a device is not a configuration
		{name: "FIFO as interfaces", files: map[string]string{}, fifos: []string{"interfaces"}, perms: true, pos: "interfaces", phrase: "is a named pipe (FIFO): expected a regular file"},
		{name: "FIFO named .toml", files: tomls(baseTOML), fifos: []string{"linkagg/b.toml"}, perms: true, pos: "linkagg/b.toml", phrase: "is a named pipe (FIFO): expected a regular file"},
		{name: "FIFO via source", files: map[string]string{"interfaces": "source interfaces.d/*\n", "interfaces.d/a": base}, fifos: []string{"interfaces.d/b"}, perms: true, pos: "interfaces.d/b", phrase: "is a named pipe (FIFO): expected a regular file"},
		{name: "FIFO via source-directory", files: map[string]string{"interfaces": "source-directory interfaces.d\n"}, fifos: []string{"interfaces.d/tun0"}, pos: "interfaces.d/tun0", phrase: "is a named pipe (FIFO)"},
		{name: "socket named .toml", files: map[string]string{}, socks: []string{"linkagg/s.toml"}, perms: true, pos: "linkagg/s.toml", phrase: "is a socket: expected a regular file"},
		{name: "symlink to a device", files: map[string]string{}, links: map[string]string{"interfaces": "/dev/null"}, perms: true, pos: "interfaces", phrase: "file interfaces (symlink to /dev/null) is a character device: expected a regular file"},
		{name: "symlink to a FIFO", files: map[string]string{}, fifos: []string{"real/pipe"}, links: map[string]string{"linkagg/a.toml": "../real/pipe"}, pos: "linkagg/a.toml", phrase: "(symlink to real/pipe) is a named pipe (FIFO)"},
	}
}

func writeTree(t *testing.T, files map[string]string, modes map[string]os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "linkagg"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, m := range modes {
		if err := os.Chmod(filepath.Join(dir, name), m); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writeSpecial adds a case's symlinks, named pipes, sockets and owners to the tree.
func writeSpecial(t *testing.T, dir string, tc badCase) {
	t.Helper()
	mkdir := func(p string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range tc.links {
		p := filepath.Join(dir, name)
		mkdir(p)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range tc.fifos {
		p := filepath.Join(dir, name)
		mkdir(p)
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range tc.socks {
		p := filepath.Join(dir, name)
		mkdir(p)
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, uid := range tc.owners {
		if err := os.Lchown(filepath.Join(dir, name), uid, uid); err != nil {
			t.Fatal(err)
		}
	}
}

func loadTree(dir string, files map[string]string, perms bool) (*Config, error) {
	o := LoadOptions{ConfDir: filepath.Join(dir, "linkagg"), CheckPerms: perms}
	if _, ok := files["interfaces"]; ok {
		o.Interfaces = filepath.Join(dir, "interfaces")
	}
	return Load(o)
}

func TestBadConfigs(t *testing.T) {
	for _, tc := range badCases() {
		t.Run(tc.name, func(t *testing.T) {
			if tc.owners != nil && os.Geteuid() != 0 {
				if os.Getenv("CI") == "true" {
					t.Fatal("files of another owner need root to make (CI=true: not skipping)")
				}
				t.Skip("files of another owner need root to make")
			}
			dir := writeTree(t, tc.files, tc.modes)
			writeSpecial(t, dir, tc)
			files := tc.files
			if slices.Contains(append(tc.fifos, tc.socks...), "interfaces") || tc.links["interfaces"] != "" {
				files = maps.Clone(files)
				files["interfaces"] = ""
			}
			_, err := loadTree(dir, files, tc.perms)
			if err == nil {
				t.Fatalf("no error, want %s: %s", tc.pos, tc.phrase)
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T (%v) is not *parser.Error", err, err)
			}
			msg := strings.ReplaceAll(err.Error(), dir+"/", "")
			if !strings.HasPrefix(msg, tc.pos+": ") {
				t.Errorf("error %q\nwant position %q", msg, tc.pos)
			}
			if !strings.Contains(msg, tc.phrase) {
				t.Errorf("error %q\nwant phrase %q", msg, tc.phrase)
			}
			// Deterministic: the same input gives the same first error.
			if _, err2 := loadTree(dir, files, tc.perms); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("second load: %v", err2)
			}
		})
	}
}
