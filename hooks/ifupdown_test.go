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
