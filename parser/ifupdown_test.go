package parser

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// What ifupdown reads, linkagg reads: `inherits` lends a template's options (the template is no group
// of its own, whatever it holds), option names in any case (ifupdown hands them to hooks in upper case
// anyway), and source-directory with shell wildcards in its path.
func TestInherits(t *testing.T) {
	text := `iface agg inet static
    fakenet 10.99.255.0/24
    table 10000 10001
    speed 1000 1000
    rspec 10.99.255.20:10.99.0.20:10.99.1.20

iface tun0 inet static inherits agg
    address 10.99.255.10
    netmask 255.255.255.255
    speed 1000 250
    rspec 10.99.255.10:10.99.0.10:10.99.1.10
`
	gs, err := ParseInterfaces("interfaces", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 1 || gs[0].Iface != "tun0" {
		t.Fatalf("groups %+v: want tun0 alone (agg is its template)", gs)
	}
	g := gs[0]
	if !slices.Equal(g.Tables, []int{10000, 10001}) || !slices.Equal(g.Speeds, []int{1000, 250}) || len(g.Peers) != 1 ||
		g.Peers[0].VIP != netip.MustParseAddr("10.99.255.20") || g.Own[1] != netip.MustParseAddr("10.99.1.10") {
		t.Errorf("tun0 from its template: tables %v speeds %v (its own wins) peers %+v own %v", g.Tables, g.Speeds, g.Peers, g.Own)
	}
	// errors name the line they are on: the template's own line for what the template wrote
	bad := strings.Replace(text, "table 10000 10001", "table 10000 10000", 1)
	if _, err := ParseInterfaces("interfaces", []byte(bad)); err == nil || err.Error() != "interfaces:3: table 10000 is listed twice: each path needs its own table" {
		t.Errorf("a template's bad table: %v", err)
	}
	// a template that is not read before, or of another family
	for _, tc := range []struct{ text, want string }{
		{"iface tun0 inet static inherits nosuch\n    address 10.99.255.10\n    fakenet 10.99.255.0/24\n", "interfaces:1: iface tun0 inherits nosuch: no iface nosuch inet stanza is read before it"},
		{strings.Replace(text, "iface agg inet static", "iface agg inet6 static", 1), "interfaces:7: iface tun0 inherits agg: no iface agg inet stanza is read before it"},
		{strings.Replace(text, "inherits agg", "inherit agg", 1), `interfaces:1: missing option "address" (a linkagg group needs address, fakenet, table and rspec)`},
	} {
		if _, err := ParseInterfaces("interfaces", []byte(tc.text)); err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.text[:40], err, tc.want)
		}
	}
	// two levels: a template of a template
	two := "iface base inet static\n    fakenet 10.99.255.0/24\n\niface agg inet static inherits base\n    table 10000 10001\n\n" +
		"iface tun0 inet static inherits agg\n    address 10.99.255.10/32\n    rspec 10.99.255.10:10.99.0.10:10.99.1.10\n"
	if gs, err := ParseInterfaces("interfaces", []byte(two)); err != nil || len(gs) != 1 || gs[0].Iface != "tun0" || len(gs[0].Fakenets) != 1 {
		t.Errorf("two levels: %v %+v", err, gs)
	}
}

func TestOptionCase(t *testing.T) {
	text := "iface tun0 inet static\n    address 10.99.255.10/32\n    Fakenet 10.99.255.0/24\n    TABLE 10000 10001\n" +
		"    Rspec 10.99.255.10:10.99.0.10:10.99.1.10\n    rspec 10.99.255.20:10.99.0.20:10.99.1.20\n    Weight 3 2\n"
	g, err := parseOne(t, text)
	if err != nil || len(g.Tables) != 2 || len(g.Peers) != 1 || !slices.Equal(g.Weights, []int{3, 2}) {
		t.Errorf("upper-case options: %v %+v", err, g)
	}
	if _, err := parseOne(t, text+"    TABLE 10002\n"); err == nil || !strings.Contains(err.Error(), "option table given twice") {
		t.Errorf("table and TABLE: %v", err)
	}
}

func TestSourceDirectoryGlob(t *testing.T) {
	files := map[string]string{
		"interfaces":             "source-directory interfaces.*.d\n",
		"interfaces.a.d/tun0":    base,
		"interfaces.b.d/tun1":    tun1,
		"interfaces.b.d/x.dpkg~": "garbage",
	}
	dir := writeTree(t, files, nil)
	cfg, err := loadTree(dir, files, true)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, g := range cfg.Groups {
		ids = append(ids, g.ID())
	}
	if strings.Join(ids, " ") != "tun0 tun1" {
		t.Errorf("groups %v, want tun0 tun1", ids)
	}
}

// A manual stanza leaves the address to us (ifup sets none), so it needs no prefix length.
func TestManualAddressNoPrefix(t *testing.T) {
	text := strings.Replace(strings.Replace(base, "inet static", "inet manual", 1), "    netmask 255.255.255.255\n", "", 1)
	if _, err := parseOne(t, text); err != nil {
		t.Errorf("manual without netmask: %v", err)
	}
}
