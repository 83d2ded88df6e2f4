package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// What ifupdown reads but a parser of its own might not (issue 21, #8 and #12), through the real ifup and
// ifdown: a stanza that inherits its linkagg options from a template, option names in upper case, a
// source-directory with a wildcard, all build the group; ifup tun0=agg (a mapping), ifup -i of another
// file, and a VIP given a subnet's prefix (or none) fail pre-up with one line and leave the kernel as it
// was.

// stanzaNICs are host A's two member NICs on 10.79.0/24 and 10.79.1/24.
func stanzaNICs(l *Lab) string {
	var b strings.Builder
	for i := range 2 {
		fmt.Fprintf(&b, "auto %s\niface %s inet static\n    address 10.79.%d.10/24\n\n", l.Link("A", i), l.Link("A", i), i)
	}
	return b.String()
}

const stanzaTemplate = `iface agg inet static
    fakenet 10.79.255.0/24
    table 37000 37001
    rspec 10.79.255.20:10.79.0.20:10.79.1.20

`

// upAndDown brings everything of A up, checks the group is there (2 fwmark rules, 1 + 2 routes, the nft
// table, its TUN), takes everything down and checks nothing of ours is left.
func upAndDown(t *testing.T, l *Lab) {
	t.Helper()
	l.MustIfupdown("A", "ifup", "-a")
	k := l.Kernel("A")
	rules, routes := k.Ours()
	if len(rules) != 2 || len(routes) != 3 || !strings.Contains(k.Nft, "table ip linkagg_tun0") || !k.HasLink("tun0") {
		t.Errorf("after ifup -a: rules %v routes %v tun0 %v nft:\n%s", rules, routes, k.HasLink("tun0"), k.Nft)
	}
	l.MustIfupdown("A", "ifdown", "-a")
	k = l.Kernel("A")
	rules, routes = k.Ours()
	if len(rules)+len(routes) != 0 || strings.Contains(k.Nft, "linkagg") || k.HasLink("tun0") {
		t.Errorf("residue after ifdown -a: %v %v tun0 %v\n%s", rules, routes, k.HasLink("tun0"), k.Nft)
	}
}

func TestE2EStanzaInheritsCaseGlob(t *testing.T) {
	l := NewLab(t, "e2i", 100, 100)
	own := "    address 10.79.255.10/32\n    rspec 10.79.255.10:10.79.0.10:10.79.1.10\n"

	t.Run("inherits", func(t *testing.T) {
		l.WriteInterfaces("A", stanzaNICs(l)+stanzaTemplate+"auto tun0\niface tun0 inet static inherits agg\n"+own)
		upAndDown(t, l)
	})
	t.Run("upper-case options", func(t *testing.T) {
		l.WriteInterfaces("A", stanzaNICs(l)+"auto tun0\niface tun0 inet static\n    address 10.79.255.10/32\n    FAKENET 10.79.255.0/24\n    Table 37000 37001\n"+
			"    RSPEC 10.79.255.10:10.79.0.10:10.79.1.10\n    rspec 10.79.255.20:10.79.0.20:10.79.1.20\n")
		upAndDown(t, l)
	})
	t.Run("source-directory with a wildcard", func(t *testing.T) {
		l.WriteInterfaces("A", stanzaNICs(l)+"source-directory interfaces.*.d\n")
		dir := filepath.Join(l.Etc("A"), "interfaces.lab.d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		tun := "auto tun0\niface tun0 inet static\n    fakenet 10.79.255.0/24\n    table 37000 37001\n" + own + "    rspec 10.79.255.20:10.79.0.20:10.79.1.20\n"
		if err := os.WriteFile(filepath.Join(dir, "tun0"), []byte(tun), 0o644); err != nil {
			t.Fatal(err)
		}
		upAndDown(t, l)
	})
}

func TestE2EStanzaRefused(t *testing.T) {
	l := NewLab(t, "e2r", 100, 100)
	good := "iface tun0 inet static\n    address 10.79.255.10/32\n    fakenet 10.79.255.0/24\n    table 37000 37001\n" +
		"    rspec 10.79.255.10:10.79.0.10:10.79.1.10\n    rspec 10.79.255.20:10.79.0.20:10.79.1.20\n"
	for _, tc := range []struct {
		name, interfaces string
		other            string // /etc/network/other, for ifup -i
		args             []string
		line             string // the one line the hook prints (regexp); stanzaNICs takes lines 1-8, so tun0's stanza starts at 9
	}{
		{name: "ifup tun0=agg (a mapping)", interfaces: strings.Replace(good, "iface tun0", "iface agg", 1), args: []string{"ifup", "tun0=agg"},
			line: `linkagg-ifupdown: tun0 inet pre-up: ifupdown configures tun0 from the stanza agg \(a mapping, or ifup tun0=agg\): linkagg names a group by its TUN; write the stanza as iface tun0`},
		{name: "ifup -i a file with another tun0", interfaces: good, other: strings.Replace(good, "table 37000 37001", "table 37100 37101", 1),
			args: []string{"ifup", "-i", "/etc/network/other", "tun0"},
			line: `tun0 inet pre-up: /etc/network/interfaces:9: the stanza ifupdown read \(table 37100 37101, fakenet 10.79.255.0/24\) is not this one \(table 37000 37001, fakenet 10.79.255.0/24\): ifup -i FILE\?`},
		{name: "ifup -i a file linkagg does not read", interfaces: "", other: good, args: []string{"ifup", "-i", "/etc/network/other", "tun0"},
			line: `tun0 inet pre-up: ifupdown's stanza carries linkagg options, but /etc/network/interfaces and /etc/linkagg/\*.toml define no group tun0: ifup -i FILE\? linkagg reads only those`},
		{name: "a VIP with a subnet's prefix", interfaces: strings.Replace(good, "10.79.255.10/32", "10.79.255.10/24", 1), args: []string{"ifup", "tun0"},
			line: `/etc/network/interfaces:10: address "10.79.255.10/24": a VIP is one address: expected /32 \(fakenet is the subnet\)`},
		{name: "a netmask of a subnet", interfaces: strings.Replace(good, "10.79.255.10/32\n", "10.79.255.10\n    netmask 255.255.255.0\n", 1), args: []string{"ifup", "tun0"},
			line: `/etc/network/interfaces:11: netmask "255.255.255.0": a VIP is one address: expected 255.255.255.255 or 32`},
		{name: "no prefix at all (ifup would make it a /8)", interfaces: strings.Replace(good, "10.79.255.10/32\n", "10.79.255.10\n", 1), args: []string{"ifup", "tun0"},
			line: `/etc/network/interfaces:10: address "10.79.255.10" has no prefix length: ifup would give it its class's or /64, a route into tun0 for all of that: expected 10.79.255.10/32 or netmask 255.255.255.255`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l.WriteInterfaces("A", stanzaNICs(l)+tc.interfaces)
			other := filepath.Join(l.Etc("A"), "other")
			os.Remove(other)
			if tc.other != "" {
				if err := os.WriteFile(other, []byte(stanzaNICs(l)+tc.other), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 2 {
				l.MustIfupdown("A", "ifup", l.Link("A", i))
			}
			before := l.Kernel("A")
			out, err := l.Ifupdown("A", tc.args...)
			if err == nil {
				t.Fatalf("%s succeeded:\n%s", strings.Join(tc.args, " "), out)
			}
			if !regexp.MustCompile(tc.line).MatchString(out) {
				t.Errorf("%s: output does not say\n  %s\n%s", strings.Join(tc.args, " "), tc.line, out)
			}
			after := l.Kernel("A")
			if fmt.Sprint(before.Rules) != fmt.Sprint(after.Rules) || fmt.Sprint(before.Routes) != fmt.Sprint(after.Routes) || before.Nft != after.Nft || after.HasLink("tun0") {
				t.Errorf("the kernel changed:\nbefore %v\nafter  %v", before, after)
			}
			for i := range 2 {
				l.MustIfupdown("A", "ifdown", l.Link("A", i))
			}
		})
	}
}
