package hooks

import (
	"testing"

	"github.com/linkagg/linkagg-hooks/parser"
)

func TestFromIfupdown(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		ok   bool
		want Intent
	}{
		{"meta", map[string]string{"IFACE": "--all", "ADDRFAM": "meta", "PHASE": "post-up", "MODE": "start"}, false, Intent{}},
		{"meta family", map[string]string{"IFACE": "tun0", "ADDRFAM": "meta", "PHASE": "post-up"}, false, Intent{}},
		{"ipx", map[string]string{"IFACE": "tun0", "ADDRFAM": "ipx", "PHASE": "post-up"}, false, Intent{}},
		{"pre-up", map[string]string{"IFACE": "tun0", "ADDRFAM": "inet", "PHASE": "pre-up", "MODE": "start"}, true,
			Intent{Iface: "tun0", Family: parser.Inet, Phase: PreUp, Source: "ifupdown"}},
		{"post-up verbose", map[string]string{"IFACE": "eth1", "ADDRFAM": "inet", "PHASE": "post-up", "MODE": "start", "VERBOSITY": "1"}, true,
			Intent{Iface: "eth1", Family: parser.Inet, Phase: PostUp, Source: "ifupdown", Verbose: true}},
		{"pre-down inet6", map[string]string{"IFACE": "tun0", "ADDRFAM": "inet6", "PHASE": "pre-down", "MODE": "stop"}, true,
			Intent{Iface: "tun0", Family: parser.Inet6, Phase: PreDown, Source: "ifupdown"}},
		{"post-down", map[string]string{"IFACE": "tun0", "ADDRFAM": "inet", "PHASE": "post-down", "MODE": "stop"}, true,
			Intent{Iface: "tun0", Family: parser.Inet, Phase: PostDown, Source: "ifupdown"}},
		{"old ifupdown MODE only", map[string]string{"IFACE": "tun0", "ADDRFAM": "inet", "MODE": "stop"}, true,
			Intent{Iface: "tun0", Family: parser.Inet, Phase: PreDown, Source: "ifupdown"}},
		{"no phase", map[string]string{"IFACE": "tun0", "ADDRFAM": "inet"}, false, Intent{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := FromIfupdown(func(k string) string { return tc.env[k] })
			if ok != tc.ok || got != tc.want {
				t.Errorf("FromIfupdown = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestHasLinkaggOptions(t *testing.T) {
	if HasLinkaggOptions(func(k string) string { return map[string]string{"IF_ADDRESS": "10.0.0.1"}[k] }) {
		t.Error("a plain static stanza was taken for ours")
	}
	if !HasLinkaggOptions(func(k string) string { return map[string]string{"IF_RSPEC": "10.99.255.10:10.99.0.10"}[k] }) {
		t.Error("a stanza with rspec was not recognised")
	}
}

// A stanza ifupdown fired for is one linkagg reads, or the hook says which way they differ.
func TestStanzaMismatch(t *testing.T) {
	gs, err := parser.ParseInterfaces("/etc/network/interfaces", []byte("iface tun0 inet static\n    address 10.99.255.10/32\n    fakenet 10.99.255.0/24\n    table 10000 10001\n    rspec 10.99.255.10:10.99.0.10:10.99.1.10\n"))
	if err != nil {
		t.Fatal(err)
	}
	src := "/etc/network/interfaces and /etc/linkagg/*.toml"
	env := func(kv ...string) func(string) string {
		m := map[string]string{"IFACE": "tun0", "LOGICAL": "tun0", "ADDRFAM": "inet", "PHASE": "pre-up", "IF_FAKENET": "10.99.255.0/24", "IF_TABLE": "10000 10001", "IF_RSPEC": "x"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name string
		env  func(string) string
		fam  parser.Family
		want string
	}{
		{"the same stanza", env(), parser.Inet, ""},
		{"no table in the environment (the parser judges)", env("IF_TABLE", ""), parser.Inet, ""},
		{"ifup tun0=agg", env("LOGICAL", "agg"), parser.Inet,
			"ifupdown configures tun0 from the stanza agg (a mapping, or ifup tun0=agg): linkagg names a group by its TUN; write the stanza as iface tun0"},
		{"ifup -i another file", env("IF_TABLE", "20000 20001"), parser.Inet,
			"/etc/network/interfaces:1: the stanza ifupdown read (table 20000 20001, fakenet 10.99.255.0/24) is not this one (table 10000 10001, fakenet 10.99.255.0/24): ifup -i FILE? linkagg reads " + src},
		{"another fakenet", env("IF_FAKENET", "10.98.0.0/16"), parser.Inet,
			"/etc/network/interfaces:1: the stanza ifupdown read (table 10000 10001, fakenet 10.98.0.0/16) is not this one (table 10000 10001, fakenet 10.99.255.0/24): ifup -i FILE? linkagg reads " + src},
		{"no such group", env("IFACE", "tun7", "LOGICAL", "tun7"), parser.Inet,
			"ifupdown's stanza carries linkagg options, but " + src + " define no group tun7: ifup -i FILE? linkagg reads only those"},
		{"the other family", env("ADDRFAM", "inet6"), parser.Inet6,
			"ifupdown's stanza carries linkagg options, but " + src + " define no group tun0/inet6: ifup -i FILE? linkagg reads only those"},
	} {
		in, ok := FromIfupdown(tc.env)
		if !ok || in.Stanza == nil {
			t.Fatalf("%s: %+v %v", tc.name, in, ok)
		}
		if got := in.Stanza.Mismatch(in.Iface, tc.fam, gs, src); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
	if in, _ := FromIfupdown(func(k string) string {
		return map[string]string{"IFACE": "eth0", "ADDRFAM": "inet", "PHASE": "pre-up"}[k]
	}); in.Stanza != nil {
		t.Errorf("a stanza without our options got a Stanza: %+v", in.Stanza)
	}
}
