// Package hooks turns the events of ifupdown and networkd-dispatcher into intents: which interface, which
// phase, bring up or take down. It reads only the environment it is given.
package hooks

import (
	"strings"

	"github.com/linkagg/linkagg-hooks/parser"
)

// Phase is where in an interface's life the event happens.
type Phase string

const (
	PreUp    Phase = "pre-up"    // the device must exist (ifupdown sets the address next)
	PostUp   Phase = "post-up"   // address set, link up: converge
	PreDown  Phase = "pre-down"  // the address is still there; a member leaving must be planned as gone
	PostDown Phase = "post-down" // the device may be removed
)

// Intent is one event reduced to what the engine needs. Whether Iface is a group's TUN or a member NIC
// of some group is decided against the configuration, not here.
type Intent struct {
	Iface   string
	Family  parser.Family // 0 when the event is not tied to a family (networkd)
	Phase   Phase
	Verbose bool
	Source  string // "ifupdown", "networkd-dispatcher"
}

// FromIfupdown reads the environment of an /etc/network/if-*.d hook. ok is false for events that are not
// ours to act on: the `--all` meta calls of ifup -a and families other than inet/inet6.
func FromIfupdown(getenv func(string) string) (in Intent, ok bool) {
	iface := getenv("IFACE")
	fam := getenv("ADDRFAM")
	if iface == "" || iface == "--all" || fam == "meta" {
		return Intent{}, false
	}
	in = Intent{Iface: iface, Source: "ifupdown", Verbose: getenv("VERBOSITY") == "1"}
	switch fam {
	case "inet":
		in.Family = parser.Inet
	case "inet6":
		in.Family = parser.Inet6
	default:
		return Intent{}, false
	}
	switch strings.ToLower(getenv("PHASE")) {
	case "pre-up":
		in.Phase = PreUp
	case "post-up", "up":
		in.Phase = PostUp
	case "pre-down", "down":
		in.Phase = PreDown
	case "post-down":
		in.Phase = PostDown
	default:
		// ifupdown older than 0.8 sets only MODE
		switch getenv("MODE") {
		case "start":
			in.Phase = PostUp
		case "stop":
			in.Phase = PreDown
		default:
			return Intent{}, false
		}
	}
	return in, true
}

// HasLinkaggOptions tells, from the IF_* variables alone, whether the stanza that fired is one of ours.
// A stanza without them can still be a member NIC of a group, so this only spares work, never decides.
func HasLinkaggOptions(getenv func(string) string) bool {
	return getenv("IF_FAKENET") != "" || getenv("IF_RSPEC") != "" || getenv("IF_TABLE") != ""
}
