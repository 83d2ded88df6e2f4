package parser

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// seed is the configuration the product is specified by; it must parse exactly like this.
const seed = `auto tun0
iface tun0 inet static
    address 10.99.255.10
    netmask 255.255.255.255
    mtu 9000
    fakenet 10.99.255.0/24
    table 10000 10001 10002 10003
    rspec 10.99.255.1:10.3.23.1:10.3.23.1:10.3.23.1 \
          10.99.255.10:10.99.0.10:10.99.1.10:10.99.2.10:10.3.23.10 \
          10.99.255.20:10.99.0.20:10.99.1.20:10.99.2.20:10.3.23.20 \
          10.99.255.30:10.99.0.30:10.99.1.30:10.99.2.30:10.3.23.30
    pre-up ip tuntap add mode tun tun0
    post-down ip tuntap del mode tun tun
`

const seedTOML = `# the seed as a drop-in
[tun0]
address = "10.99.255.10/32"
mtu = 9000
fakenet = ["10.99.255.0/24"]
table = [10000, 10001, 10002, 10003]
rspec = [
  "10.99.255.1:10.3.23.1:10.3.23.1:10.3.23.1",
  "10.99.255.10:10.99.0.10:10.99.1.10:10.99.2.10:10.3.23.10",
  "10.99.255.20:10.99.0.20:10.99.1.20:10.99.2.20:10.3.23.20",
  "10.99.255.30:10.99.0.30:10.99.1.30:10.99.2.30:10.3.23.30",
]
`

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func rep(s string, n int) []netip.Addr {
	var out []netip.Addr
	for range n {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func seedGroup() Group {
	return Group{
		Iface: "tun0", Family: Inet, Source: "interfaces", Method: "static",
		VIP: netip.MustParseAddr("10.99.255.10"), MTU: 9000,
		Fakenets: []netip.Prefix{netip.MustParsePrefix("10.99.255.0/24")},
		Tables:   []int{10000, 10001, 10002, 10003},
		Marks:    []uint32{0x10000000, 0x11000000, 0x12000000, 0x13000000},
		Own:      addrs("10.99.0.10", "10.99.1.10", "10.99.2.10", "10.3.23.10"),
		MarkMask: 0xff000000, RulePriority: 1000, Mode: ModePacket,
		Peers: []Peer{
			{VIP: netip.MustParseAddr("10.99.255.1"), Gateways: rep("10.3.23.1", 4)},
			{VIP: netip.MustParseAddr("10.99.255.20"), Gateways: addrs("10.99.0.20", "10.99.1.20", "10.99.2.20", "10.3.23.20")},
			{VIP: netip.MustParseAddr("10.99.255.30"), Gateways: addrs("10.99.0.30", "10.99.1.30", "10.99.2.30", "10.3.23.30")},
		},
	}
}

// content strips where things were written, to compare what was configured.
func content(g Group) Group {
	g.Pos, g.OptPos, g.FakenetPos, g.OwnPos = Pos{}, nil, nil, Pos{}
	g.Peers = append([]Peer(nil), g.Peers...)
	for i := range g.Peers {
		g.Peers[i].Pos = Pos{}
	}
	return g
}

func mustParse(t *testing.T, name, text string) []Group {
	t.Helper()
	var gs []Group
	var err error
	if strings.Contains(name, ".toml") {
		gs, err = ParseTOML(name, []byte(text))
	} else {
		gs, err = ParseInterfaces(name, []byte(text))
	}
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	if err := Validate(gs); err != nil {
		t.Fatalf("validate %s: %v", name, err)
	}
	return gs
}

func TestSeed(t *testing.T) {
	gs := mustParse(t, "/etc/network/interfaces", seed)
	if len(gs) != 1 {
		t.Fatalf("got %d groups, want 1", len(gs))
	}
	g := gs[0]
	if got, want := content(g), seedGroup(); !reflect.DeepEqual(got, want) {
		t.Errorf("seed:\n got %+v\nwant %+v", got, want)
	}
	if g.ID() != "tun0" || g.Pos.String() != "/etc/network/interfaces:2" {
		t.Errorf("ID %q Pos %q", g.ID(), g.Pos)
	}
	wantPos := map[string]int{"address": 3, "netmask": 4, "mtu": 5, "fakenet": 6, "table": 7, "rspec": 8}
	if len(g.OptPos) != len(wantPos) {
		t.Errorf("OptPos = %v", g.OptPos)
	}
	for k, l := range wantPos {
		if p := g.OptPos[k]; p.Line != l || p.File != "/etc/network/interfaces" {
			t.Errorf("OptPos[%s] = %v, want line %d", k, p, l)
		}
	}
	for i, l := range []int{8, 10, 11} { // each entry's own physical line
		if g.Peers[i].Pos.Line != l {
			t.Errorf("peer %d at line %d, want %d", i, g.Peers[i].Pos.Line, l)
		}
	}
}

func TestGoodStanzas(t *testing.T) {
	seedOnly := []Group{seedGroup()}
	v6 := Group{
		Iface: "tun0", Family: Inet6, Source: "interfaces", Method: "static",
		VIP:      netip.MustParseAddr("fd99::10"),
		Fakenets: []netip.Prefix{netip.MustParsePrefix("fd99::/64")},
		Tables:   []int{20000, 20001}, Marks: []uint32{0x20000000, 0x21000000},
		Own:      addrs("fd00:1::10", "fd00:2::10"),
		MarkMask: DefaultMarkMask, RulePriority: DefaultRulePriority, Mode: ModePacket,
		Peers: []Peer{{VIP: netip.MustParseAddr("fd99::20"), Gateways: addrs("fd00:1::20", "fd00:2::20")}},
	}
	tests := []struct {
		name string
		text string
		want []Group
	}{
		{"seed", seed, seedOnly},
		{"repeated rspec lines, comments, CRLF, tabs", strings.ReplaceAll(`# header comment
auto lo tun0
iface lo inet loopback

iface tun0 inet static
	# a comment inside the stanza
	address 10.99.255.10/32
	mtu 9000
	fakenet 10.99.255.0/24
	table 10000 10001 10002 10003
	rspec 10.99.255.1:10.3.23.1:10.3.23.1:10.3.23.1
	rspec 10.99.255.10:10.99.0.10:10.99.1.10:10.99.2.10:10.3.23.10 10.99.255.20:10.99.0.20:10.99.1.20:10.99.2.20:10.3.23.20
	rspec 10.99.255.30:10.99.0.30:10.99.1.30:10.99.2.30:10.3.23.30
`, "\n", "\r\n"), seedOnly},
		{"router with one gateway, own entry short", `iface tun0 inet static
    address 10.99.255.10
    netmask 32
    mtu 9000
    fakenet 10.99.255.0/24
    table 10000 10001 10002 10003
    rspec 10.99.255.1:10.3.23.1 10.99.255.10:10.99.0.10:10.99.1.10:10.99.2.10:10.3.23.10
    rspec 10.99.255.20:10.99.0.20:10.99.1.20:10.99.2.20:10.3.23.20 \
      10.99.255.30:10.99.0.30:10.99.1.30:10.99.2.30:10.3.23.30
`, seedOnly},
		{"inet6 with brackets", `iface tun0 inet6 static
    address fd99::10/128
    fakenet fd99::/64
    table 20000 20001
    rspec [fd99::10]:[fd00:1::10]:[fd00:2::10] [fd99::20]:[fd00:1::20]:[fd00:2::20]
`, []Group{v6}},
		{"inet6 with netmask", `iface tun0 inet6 static
    address fd99::10
    netmask 128
    fakenet fd99::/64
    table 20000 20001
    rspec [fd99::10]:[fd00:1::10]:[fd00:2::10]
    rspec [fd99::20]:[fd00:1::20]:[fd00:2::20]
`, []Group{v6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gs := mustParse(t, "interfaces", tt.text)
			if len(gs) != len(tt.want) {
				t.Fatalf("got %d groups, want %d", len(gs), len(tt.want))
			}
			for i := range gs {
				if got := content(gs[i]); !reflect.DeepEqual(got, tt.want[i]) {
					t.Errorf("group %d:\n got %+v\nwant %+v", i, got, tt.want[i])
				}
			}
		})
	}
}

func TestOptions(t *testing.T) {
	text := `iface tun1 inet manual
    address 10.98.255.10
    fakenet 10.98.255.0/25
    fakenet 10.98.254.0/24 10.98.253.0/24
    table 10100 10101 10102
    weight 3 2 1
    mode hybrid
    fwmark-mask 0x00ff0000
    rule-priority 32763
    rspec 10.98.255.10:10.0.0.1:10.0.1.1:10.0.2.1 10.98.253.7:10.0.0.7:10.0.1.7:10.0.2.7
`
	g := mustParse(t, "interfaces", text)[0]
	if g.Method != "manual" || g.Mode != ModeHybrid || g.RulePriority != 32763 || g.MarkMask != 0xff0000 {
		t.Errorf("scalars: %+v", g)
	}
	if !reflect.DeepEqual(g.Weights, []int{3, 2, 1}) || len(g.Fakenets) != 3 {
		t.Errorf("weights %v fakenets %v", g.Weights, g.Fakenets)
	}
	// The table's low byte lands at the mask's lowest bit.
	if want := []uint32{0x740000, 0x750000, 0x760000}; !reflect.DeepEqual(g.Marks, want) {
		t.Errorf("marks %#x, want %#x", g.Marks, want)
	}

	explicit := strings.Replace(text, "    mode hybrid\n", "    mode mptcp\n    fwmark 65536 0x20000 0X30000\n", 1)
	g = mustParse(t, "interfaces", explicit)[0]
	if want := []uint32{0x10000, 0x20000, 0x30000}; !reflect.DeepEqual(g.Marks, want) || g.Mode != ModeMPTCP {
		t.Errorf("marks %#x, want %#x; mode %s", g.Marks, want, g.Mode)
	}
	if g.OptPos["fwmark"].Line != 8 {
		t.Errorf("OptPos[fwmark] = %v", g.OptPos["fwmark"])
	}
}

// Stanzas without fakenet, table or rspec are someone else's: nothing in them is judged.
func TestForeignStanzasIgnored(t *testing.T) {
	text := "auto eth0\niface eth0 inet static\n    address 10.0.0.x\n    weight 0\n    mode bogus\n    bad \xff\xfe\n" +
		"iface br0 ipx frame\n    table-ish 3\n" +
		"mapping eth1\n    script /bin/true\n    map fakenet 1\n" +
		"allow-hotplug eth2\nno-auto-down eth2\nno-scripts eth2\n" + seed[len("auto tun0\n"):]
	gs := mustParse(t, "interfaces", text)
	if len(gs) != 1 || gs[0].Iface != "tun0" {
		t.Fatalf("got %+v", gs)
	}
	if gs[0].Pos.Line != 15 {
		t.Errorf("tun0 at %v", gs[0].Pos)
	}
}

func TestTOMLEqualsStanza(t *testing.T) {
	st := mustParse(t, "interfaces", seed)[0]
	tm := mustParse(t, "/etc/linkagg/seed.toml", seedTOML)[0]
	if tm.Source != "toml" || tm.Method != "" {
		t.Errorf("Source %q Method %q", tm.Source, tm.Method)
	}
	st.Source, st.Method = "", ""
	tm.Source = ""
	if a, b := content(st), content(tm); !reflect.DeepEqual(a, b) {
		t.Errorf("stanza and TOML differ:\nstanza %+v\ntoml   %+v", a, b)
	}
	if got := tm.Pos.String(); got != "/etc/linkagg/seed.toml:2 (tun0)" {
		t.Errorf("Pos = %s", got)
	}
	if got := tm.OptPos["rspec"].String(); got != "/etc/linkagg/seed.toml:7 (tun0.rspec)" {
		t.Errorf("OptPos[rspec] = %s", got)
	}
	if got := tm.Peers[2].Pos.String(); got != "/etc/linkagg/seed.toml:11 (tun0.rspec[3])" {
		t.Errorf("peer pos = %s", got)
	}
}

func TestTOMLOptions(t *testing.T) {
	text := `[tun0]
family = "inet6"
address = "fd99::10"
fakenet = ["fd99::/64"]
table = [20000, 20001]
weight = [3, 2]
mode = "packet"
fwmark = [0x100, "0x200"]
fwmark-mask = "0xffff00"
rule-priority = 900
rspec = ["[fd99::10]:[fd00:1::10]:[fd00:2::10]"]

[tun1]
address = "10.98.255.10"
fakenet = ["10.98.255.0/24"]
table = [10100]
rspec = ["10.98.255.10:10.0.0.1"]
`
	gs := mustParse(t, "a.toml", text)
	if len(gs) != 2 || gs[0].ID() != "tun0/inet6" || gs[1].ID() != "tun1" {
		t.Fatalf("got %d groups", len(gs))
	}
	g := gs[0]
	if !reflect.DeepEqual(g.Marks, []uint32{0x100, 0x200}) || g.MarkMask != 0xffff00 || g.RulePriority != 900 || !reflect.DeepEqual(g.Weights, []int{3, 2}) {
		t.Errorf("got %+v", g)
	}
	if len(gs[1].Peers) != 0 || len(gs[1].Tables) != 1 {
		t.Errorf("tun1 %+v", gs[1])
	}
}

// Inline tables and dotted keys are the same TOML as [tun0] tables.
func TestTOMLShapes(t *testing.T) {
	for _, text := range []string{
		`tun0 = { address = "10.99.255.10", fakenet = ["10.99.255.0/24"], table = [10000, 10001], rspec = ["10.99.255.10:10.0.0.1"] }`,
		"tun0.address = \"10.99.255.10\"\ntun0.fakenet = [\"10.99.255.0/24\"]\ntun0.table = [10000, 10001]\ntun0.rspec = [\"10.99.255.10:10.0.0.1\"]\n",
	} {
		gs := mustParse(t, "x.toml", text)
		if len(gs) != 1 || gs[0].Iface != "tun0" || gs[0].Pos.Line != 1 || gs[0].OptPos["table"].Line == 0 {
			t.Errorf("%q: %+v", text, gs)
		}
	}
}

func TestParseRspecEntry(t *testing.T) {
	tests := []struct {
		in      string
		fam     Family
		vip     string
		gws     []string
		wantErr string
	}{
		{"10.99.255.1:10.3.23.1", Inet, "10.99.255.1", []string{"10.3.23.1"}, ""},
		{"[10.99.255.1]:10.3.23.1:[10.3.24.1]", Inet, "10.99.255.1", []string{"10.3.23.1", "10.3.24.1"}, ""},
		{"[fd99::10]:[fd00:1::10]:[fe80::1]", Inet6, "fd99::10", []string{"fd00:1::10", "fe80::1"}, ""},
		{"10.99.255.1", Inet, "", nil, "expected VIP:GW1[:GW2…]"},
		{"10.99.255.x:10.3.23.1", Inet, "", nil, `bad address "10.99.255.x": expected IPv4 address`},
		{"10.99.255.1::10.3.23.1", Inet, "", nil, `bad address "": expected IPv4 address`},
		{"10.99.255.1:10.3.23.1:", Inet, "", nil, `bad address ""`},
		{"[fd99::10]:[10.0.0.1]", Inet6, "", nil, `bad address "10.0.0.1": expected IPv6 address`},
		{"[fd99::10]:[fd00::1", Inet6, "", nil, "missing ]"},
		{"[fd99::10]x:[fd00::1]", Inet6, "", nil, "expected : after [fd99::10]"},
		{"fd99::10:fd00::1", Inet6, "", nil, `"fd99" is not bracketed`},
		{"[fd99::10]:10.0.0.1", Inet6, "", nil, `bad address "10.0.0.1": expected IPv6 address`},
		{"[fd99::10%eth0]:[fd00::1]", Inet6, "", nil, "bad address"},
		{"[::ffff:10.0.0.1]:[fd00::1]", Inet6, "", nil, "bad address"},
		{"10.99.255.1:0.0.0.0", Inet, "", nil, "expected a unicast IPv4 address"},
		{"10.99.255.1:224.0.0.1", Inet, "", nil, "unicast"},
		{"", Inet, "", nil, "expected VIP:GW1"},
	}
	for _, tt := range tests {
		vip, gws, err := ParseRspecEntry(tt.in, tt.fam)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || vip.String() != tt.vip || !reflect.DeepEqual(gws, addrs(tt.gws...)) {
			t.Errorf("%q: got %v %v %v", tt.in, vip, gws, err)
		}
	}
}

// Validate gives hand-built groups the checks parsed ones get.
func TestValidateHandBuilt(t *testing.T) {
	g := seedGroup()
	g.Weights = []int{1, 1}
	err := Validate([]Group{g})
	if err == nil || !strings.Contains(err.Error(), "weight has 2 values but table has 4") {
		t.Errorf("err = %v", err)
	}
	g = seedGroup()
	g.Peers[1].Gateways = g.Peers[1].Gateways[:3]
	if err := Validate([]Group{g}); err == nil || !strings.Contains(err.Error(), "has 3 gateways but table has 4 paths") {
		t.Errorf("err = %v", err)
	}
	h := seedGroup()
	h.Iface, h.Tables = "tun1", []int{1, 2, 3, 4}
	h.MarkMask, h.Marks = 0xf0000000, []uint32{0x10000000, 0x20000000, 0x30000000, 0x40000000}
	g = seedGroup()
	g.Marks = []uint32{0x11000000, 0x12000000, 0x13000000, 0x14000000}
	err = Validate([]Group{g, h})
	if err == nil || !strings.Contains(err.Error(), "mark 0x10000000/0xf0000000 overlaps mark 0x11000000/0xff000000 of group tun0") {
		t.Errorf("overlapping masks: err = %v", err)
	}
}

// The boundaries of the checks that keep a valid configuration working are themselves valid.
func TestLimitsAccepted(t *testing.T) {
	for _, tc := range []struct{ name, text string }{
		{"sequence of 1024 entries", with(8, "    weight 999 25")},
		{"long sequence in mode mptcp (no nftables map)", with(8, "    weight 1000 999\n    mode mptcp")},
		{"reduced by the gcd", with(8, "    weight 1000 998")},
		{"sequence of 764 entries with 4 fakenets", with(4, "    fakenet 10.99.255.0/26 10.99.255.64/26 10.99.255.128/26 10.99.255.192/26", 8, "    weight 401 363")},
		{"rule-priority 2 in mode hybrid", with(8, "    mode hybrid\n    rule-priority 2")},
		{"rule-priority 1 in mode mptcp", with(8, "    mode mptcp\n    rule-priority 1")},
		{"fakenet /8", "iface tun0 inet static\n    address 10.0.0.1/32\n    fakenet 10.0.0.0/8\n    table 1 2\n    rspec 10.0.0.1:192.168.0.10:192.168.1.10\n    rspec 10.0.0.2:192.168.0.20:192.168.1.20\n"},
		{"inet6 fakenet /16", v6base(3, "    fakenet fd99::/16")},
		{"two groups on the same NICs and gateways", base + tun1 + "    rspec 10.98.255.20:10.99.0.20:10.99.1.20\n"},
		{"a router on one subnet", with(7, "    rspec 10.99.255.1:10.3.23.1")},
		{"254 peers on 8 paths", manyPeers(8, 254, "    weight 30 29 28 27 26 25 24 21")},
		{"1024 peers", manyPeers(2, 1024, "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustParse(t, "interfaces", tc.text)
		})
	}
	for _, tc := range []struct{ paths, fakenets, peers, want int }{
		{2, 1, 1, MaxSequence},
		{2, 4, 1, 764},     // the bad corpus's case
		{256, 1, 1, 1024},  // 256 paths of weight 1..4 fit
		{2, 256, 1, 0},     // 256 fakenets: not even one entry each
		{8, 1, 254, 230},   // every one of the 246 subsets of 8 paths in use by some of the 254 peers
		{8, 1, 1, 1024},    // one peer: one peer map at most
		{4, 1, 254, 1024},  // 10 subsets
		{3, 16, 1000, 179}, // the default buffer bounds the everyday table first
	} {
		if got := MaxSequenceFor(tc.paths, tc.fakenets, tc.peers); got != tc.want {
			t.Errorf("MaxSequenceFor(%d paths, %d fakenets, %d peers) = %d, want %d", tc.paths, tc.fakenets, tc.peers, got, tc.want)
		}
	}
}

func TestSequenceLength(t *testing.T) {
	for _, tc := range []struct {
		w    []int
		want int
	}{{[]int{3, 2}, 5}, {[]int{999, 25}, 1024}, {[]int{1000, 24}, 128}, {[]int{4, 4, 4}, 3}, {[]int{7}, 1}, {nil, 0}} {
		if got := SequenceLength(tc.w); got != tc.want {
			t.Errorf("SequenceLength(%v) = %d, want %d", tc.w, got, tc.want)
		}
	}
}

// arp-isolation: on by default, `off` keeps the member NICs' ARP sysctls; anything else is one error line.
func TestARPIsolation(t *testing.T) {
	for _, c := range []struct {
		line string
		keep bool
	}{{"", false}, {"    arp-isolation on\n", false}, {"    arp-isolation off\n", true}} {
		g, err := parseOne(t, base+c.line)
		if err != nil {
			t.Fatal(err)
		}
		if g.KeepARP != c.keep {
			t.Errorf("%q: KeepARP = %v, want %v", c.line, g.KeepARP, c.keep)
		}
	}
	_, err := parseOne(t, base+"    arp-isolation maybe\n")
	if err == nil || err.Error() != `interfaces:8: arp-isolation "maybe": expected on or off` {
		t.Errorf("bad value: %v", err)
	}
	_, err = parseOne(t, base+"    arp_isolation off\n")
	if err == nil || !strings.Contains(err.Error(), `did you mean "arp-isolation"?`) {
		t.Errorf("misspelt option: %v", err)
	}
	gs, err := ParseTOML("a.toml", []byte("[tun0]\naddress = \"10.99.255.10\"\nfakenet = [\"10.99.255.0/24\"]\ntable = [10000, 10001]\n"+
		"arp-isolation = \"off\"\nrspec = [\"10.99.255.10:10.99.0.10:10.99.1.10\", \"10.99.255.20:10.99.0.20:10.99.1.20\"]\n"))
	if err != nil || len(gs) != 1 || !gs[0].KeepARP {
		t.Errorf("TOML arp-isolation = \"off\": %v %+v", err, gs)
	}
	_, err = ParseTOML("a.toml", []byte("[tun0]\naddress = \"10.99.255.10\"\nfakenet = [\"10.99.255.0/24\"]\ntable = [10000]\narp-isolation = \"no\"\nrspec = [\"10.99.255.10:10.99.0.10\"]\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "a.toml:5 (tun0.arp-isolation): ") {
		t.Errorf("TOML bad value: %v", err)
	}
}

// gso-max-size: bytes in MinGSOMaxSize..MaxGSOMaxSize, else one error line at its file:line.
func TestGSOMaxSize(t *testing.T) {
	g, err := parseOne(t, base+"    gso-max-size 8192\n")
	if err != nil || g.GSOMaxSize != 8192 {
		t.Fatalf("gso-max-size 8192: %v %d", err, g.GSOMaxSize)
	}
	if g, err := parseOne(t, base); err != nil || g.GSOMaxSize != 0 {
		t.Fatalf("default: %v %d", err, g.GSOMaxSize)
	}
	for _, v := range []string{"4095", "65537", "16k", "0"} {
		_, err := parseOne(t, base+"    gso-max-size "+v+"\n")
		if want := `interfaces:8: gso-max-size "` + v + `": expected bytes 4096..65536`; err == nil || err.Error() != want {
			t.Errorf("gso-max-size %s: %v, want %s", v, err, want)
		}
	}
	gs, err := ParseTOML("a.toml", []byte("[tun0]\naddress = \"10.99.255.10\"\nfakenet = [\"10.99.255.0/24\"]\ntable = [10000]\ngso-max-size = 32768\nrspec = [\"10.99.255.10:10.99.0.10\"]\n"))
	if err != nil || len(gs) != 1 || gs[0].GSOMaxSize != 32768 {
		t.Errorf("TOML gso-max-size = 32768: %v %+v", err, gs)
	}
}

// tcp-min-rtt-wlen: seconds 0..86400, unset by default; two groups may not ask for different values.
func TestTCPMinRTTWlen(t *testing.T) {
	g, err := parseOne(t, base+"    tcp-min-rtt-wlen 0\n")
	if err != nil || g.TCPMinRTTWlen == nil || *g.TCPMinRTTWlen != 0 {
		t.Fatalf("tcp-min-rtt-wlen 0: %v %v", err, g.TCPMinRTTWlen)
	}
	if g, _ := parseOne(t, base); g.TCPMinRTTWlen != nil {
		t.Errorf("set by default: %d", *g.TCPMinRTTWlen)
	}
	if _, err := parseOne(t, base+"    tcp-min-rtt-wlen -1\n"); err == nil || err.Error() != `interfaces:8: tcp-min-rtt-wlen "-1": expected seconds 0..86400 (net.ipv4.tcp_min_rtt_wlen)` {
		t.Errorf("-1: %v", err)
	}
	two := base + "    tcp-min-rtt-wlen 0\n" + strings.ReplaceAll(strings.ReplaceAll(tun1, "10.98.255.", "10.97.255."), "tun1", "tun1") + "    tcp-min-rtt-wlen 300\n"
	_, err = ParseInterfaces("interfaces", []byte(two))
	if err == nil {
		gs, _ := ParseInterfaces("interfaces", []byte(two))
		err = Validate(gs)
	}
	if err == nil || !strings.Contains(err.Error(), "tcp-min-rtt-wlen 300 differs from 0 of group tun0") {
		t.Errorf("two values: %v", err)
	}
}

// speed: per path Mbit/s (with M or G) or auto; nil when not written; bad values and a count other than
// the table's are one error line at file:line; TOML takes integers and strings.
func TestSpeed(t *testing.T) {
	for in, want := range map[string][]int{
		"1000 100":     {1000, 100},
		"1G 2.5G":      {1000, 2500},
		"100M auto":    {100, 0},
		"10G 1600000":  {10000, 1600000},
		"auto auto":    {0, 0},
		"0.1G 25G":     {100, 25000},
		"1000M 400000": {1000, 400000},
	} {
		g, err := parseOne(t, base+"    speed "+in+"\n")
		if err != nil || !slices.Equal(g.Speeds, want) {
			t.Errorf("speed %s: %v %v, want %v", in, err, g.Speeds, want)
		}
	}
	if g, err := parseOne(t, base); err != nil || g.Speeds != nil || g.Weights != nil {
		t.Errorf("default: %v speeds %v weights %v, want both nil", err, g.Speeds, g.Weights)
	}
	for _, v := range []string{"0", "-1", "1.5", "1e3", "G", "1T", "0x10", "+5", "1600001", "fast", "1_000"} {
		_, err := parseOne(t, base+"    speed "+v+" 1000\n")
		if want := `interfaces:8: speed "` + v + `": expected Mbit/s 1..1600000 (1000, 100M, 2.5G, 10G) or auto`; err == nil || err.Error() != want {
			t.Errorf("speed %s: %v, want %s", v, err, want)
		}
	}
	if _, err := parseOne(t, base+"    speed 1000\n"); err == nil || err.Error() != "interfaces:8: speed has 1 value but table has 2" {
		t.Errorf("one value for two paths: %v", err)
	}
	if _, err := parseOne(t, base+"    speeds 1000 1000\n"); err == nil || err.Error() != `interfaces:8: unknown option "speeds": did you mean "speed"?` {
		t.Errorf("misspelled: %v", err)
	}
	gs, err := ParseTOML("a.toml", []byte("[tun0]\naddress = \"10.99.255.10\"\nfakenet = [\"10.99.255.0/24\"]\ntable = [10000, 10001]\nspeed = [1000, \"10G\"]\nrspec = [\"10.99.255.10:10.99.0.10:10.99.1.10\"]\n"))
	if err != nil || len(gs) != 1 || !slices.Equal(gs[0].Speeds, []int{1000, 10000}) {
		t.Errorf("TOML speed = [1000, \"10G\"]: %v %+v", err, gs)
	}
	if _, err := ParseTOML("a.toml", []byte("[tun0]\naddress = \"10.99.255.10\"\nfakenet = [\"10.99.255.0/24\"]\ntable = [10000]\nspeed = [\"fast\"]\nrspec = [\"10.99.255.10:10.99.0.10\"]\n")); err == nil || !strings.HasPrefix(err.Error(), `a.toml:5 (tun0.speed[0]): speed "fast": expected`) {
		t.Errorf("TOML bad speed: %v", err)
	}
}
