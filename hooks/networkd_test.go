package hooks

import (
	"net/netip"
	"testing"
)

func TestFromNetworkd(t *testing.T) {
	// the environment as networkd-dispatcher 2.2.3 passes it (observed), with the JSON it adds
	obs := map[string]string{
		"IFACE": "laba0", "STATE": "routable", "OperationalState": "routable", "AdministrativeState": "configuring",
		"IP_ADDRS": "10.99.0.10", "IP6_ADDRS": "", "ESSID": "",
	}
	js := `{"InterfaceName": "laba0", "OperationalState": "routable", "Address": [], "Kind": ["veth"]}`
	for _, tc := range []struct {
		name  string
		env   map[string]string
		json  string
		ok    bool
		phase Phase
		addrs int
		kind  string
	}{
		{"routable", obs, js, true, PostUp, 1, "veth"},
		{"degraded", with(obs, "STATE", "degraded"), js, true, PostUp, 1, "veth"},
		{"carrier", with(obs, "STATE", "carrier"), "", true, PostUp, 1, ""},
		{"no-carrier", with(obs, "STATE", "no-carrier"), js, true, PreDown, 1, "veth"},
		{"off", with(obs, "STATE", "off"), js, true, PreDown, 1, "veth"},
		{"two families", with(obs, "IP6_ADDRS", "fd00:1::10 fe80::1"), js, true, PostUp, 3, "veth"},
		{"json only", map[string]string{}, `{"InterfaceName": "tun0", "OperationalState": "no-carrier", "Kind": "tun"}`, true, PreDown, 0, "tun"},
		{"bad json, env ok", obs, `{"InterfaceName": `, true, PostUp, 1, ""},
		{"no iface", with(obs, "IFACE", ""), "", false, "", 0, ""},
		{"unknown state", with(obs, "STATE", "configuring"), js, false, "", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, ok := FromNetworkd(func(k string) string { return tc.env[k] }, tc.json)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (%+v)", ok, tc.ok, ev)
			}
			if !ok {
				return
			}
			if ev.Phase != tc.phase || len(ev.Addrs) != tc.addrs || ev.Kind != tc.kind || ev.Source != "networkd-dispatcher" || ev.Family != 0 {
				t.Errorf("got %+v", ev)
			}
			if ev.Up() != (tc.phase == PostUp) {
				t.Errorf("Up() = %v for %s", ev.Up(), ev.State)
			}
		})
	}
	ev, _ := FromNetworkd(func(k string) string { return obs[k] }, js)
	if ev.Iface != "laba0" || ev.Administrative != "configuring" || ev.Addrs[0] != netip.MustParseAddr("10.99.0.10") {
		t.Errorf("fields: %+v", ev)
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{}
	for a, b := range m {
		out[a] = b
	}
	out[k] = v
	return out
}
