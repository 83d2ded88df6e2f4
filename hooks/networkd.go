package hooks

import (
	"encoding/json"
	"net/netip"
	"strings"
)

// NetworkdEvent is one networkd-dispatcher call: the intent plus what the dispatcher said about the link.
// Phase is PostUp for a state in which the link can carry traffic (routable, degraded, carrier,
// degraded-carrier, enslaved) and PreDown for one in which it cannot (no-carrier, off); the engine reads the
// kernel again before acting, since the dispatcher runs scripts one after another and a state may be stale
// by the time its script runs.
type NetworkdEvent struct {
	Intent
	State          string // STATE: the folder that fired (routable, off, ...)
	Operational    string // OperationalState
	Administrative string // AdministrativeState (configuring, configured, unmanaged, ...)
	Addrs          []netip.Addr
	Kind           string // from the JSON, e.g. "veth", "tun"; empty when not given
}

// Up tells whether the event says the link can carry traffic.
func (e NetworkdEvent) Up() bool { return e.Phase == PostUp }

// networkdPhase maps networkd's operational states to up-ish and down-ish. "dormant" and "missing" are
// not states the dispatcher has folders for by default; they count as down.
func networkdPhase(state string) (Phase, bool) {
	switch state {
	case "routable", "degraded", "carrier", "degraded-carrier", "enslaved":
		return PostUp, true
	case "no-carrier", "off", "dormant", "missing":
		return PreDown, true
	}
	return "", false
}

// networkdJSON is the part of the dispatcher's `json` variable we read (networkctl status --json of the
// link as the dispatcher saw it). Every field is optional.
type networkdJSON struct {
	InterfaceName       string          `json:"InterfaceName"`
	OperationalState    string          `json:"OperationalState"`
	AdministrativeState string          `json:"AdministrativeState"`
	Kind                json.RawMessage `json:"Kind"` // a string, or a list of strings in some versions
}

// FromNetworkd reads the environment of a networkd-dispatcher script (IFACE, STATE, OperationalState,
// AdministrativeState, IP_ADDRS, IP6_ADDRS) and its JSON (the `json` variable; may be empty or malformed,
// then only the environment counts). ok is false when there is no interface or no state we act on.
func FromNetworkd(getenv func(string) string, jsonText string) (ev NetworkdEvent, ok bool) {
	var j networkdJSON
	if jsonText != "" {
		_ = json.Unmarshal([]byte(jsonText), &j) // best effort: the environment carries the same facts
	}
	pick := func(env, fromJSON string) string {
		if v := getenv(env); v != "" {
			return v
		}
		return fromJSON
	}
	ev.Iface = pick("IFACE", j.InterfaceName)
	ev.Operational = pick("OperationalState", j.OperationalState)
	ev.Administrative = pick("AdministrativeState", j.AdministrativeState)
	ev.State = pick("STATE", ev.Operational)
	ev.Source = "networkd-dispatcher"
	ev.Kind = kindOf(j.Kind)
	if ev.Iface == "" {
		return NetworkdEvent{}, false
	}
	phase, known := networkdPhase(ev.State)
	if !known {
		return NetworkdEvent{}, false
	}
	ev.Phase = phase
	for _, v := range []string{getenv("IP_ADDRS"), getenv("IP6_ADDRS")} {
		for _, f := range strings.Fields(v) {
			if a, err := netip.ParseAddr(f); err == nil {
				ev.Addrs = append(ev.Addrs, a)
			}
		}
	}
	return ev, true
}

func kindOf(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var l []string
	if json.Unmarshal(raw, &l) == nil && len(l) > 0 {
		return l[0]
	}
	return ""
}
