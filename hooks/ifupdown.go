// Package hooks turns the events of ifupdown and networkd-dispatcher into intents: which interface, which
// phase, bring up or take down. It reads only the environment it is given.
package hooks

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
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
	// Stanza is what ifupdown passed of the stanza that fired, when it carries linkagg options.
	Stanza *Stanza
}

// Stanza is the stanza ifupdown fired for, as ifupdown read it: its logical name (a mapping or `ifup
// tun0=agg` configures IFACE from another stanza) and our options (IF_*: ifupdown resolved `inherits`
// and upper-case names, and may have read another file, `ifup -i FILE`). The engine compares it with the
// group it reads itself, so the two never silently differ.
type Stanza struct {
	Logical string
	Fakenet []string
	Table   []string
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
	if HasLinkaggOptions(getenv) {
		in.Stanza = &Stanza{Logical: getenv("LOGICAL"), Fakenet: strings.Fields(getenv("IF_FAKENET")), Table: strings.Fields(getenv("IF_TABLE"))}
	}
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

// Mismatch says why no group of groups (the configuration linkagg read from sources) is the stanza
// ifupdown fired for on iface in family fam, "" when one is.
func (s *Stanza) Mismatch(iface string, fam parser.Family, groups []parser.Group, sources string) string {
	if s.Logical != "" && s.Logical != iface {
		return fmt.Sprintf("ifupdown configures %s from the stanza %s (a mapping, or ifup %s=%s): linkagg names a group by its TUN; write the stanza as iface %s", iface, s.Logical, iface, s.Logical, iface)
	}
	for _, g := range groups {
		if g.Iface != iface || g.Family != fam {
			continue
		}
		if tables, fakenets := s.tables(), s.fakenets(); (tables != nil && !slices.Equal(tables, g.Tables)) || (fakenets != nil && !slices.Equal(fakenets, g.Fakenets)) {
			return fmt.Sprintf("%s: the stanza ifupdown read (table %s, fakenet %s) is not this one (table %s, fakenet %s): ifup -i FILE? linkagg reads %s",
				g.Pos, strings.Join(s.Table, " "), strings.Join(s.Fakenet, " "), ints(g.Tables), prefixes(g.Fakenets), sources)
		}
		return ""
	}
	return fmt.Sprintf("ifupdown's stanza carries linkagg options, but %s define no group %s: ifup -i FILE? linkagg reads only those", sources, parser.GroupID(iface, fam))
}

// tables and fakenets parse ifupdown's words; nil when absent or unreadable (the parser judges those).
func (s *Stanza) tables() []int {
	var out []int
	for _, w := range s.Table {
		n, err := strconv.Atoi(w)
		if err != nil {
			return nil
		}
		out = append(out, n)
	}
	return out
}

func (s *Stanza) fakenets() []netip.Prefix {
	var out []netip.Prefix
	for _, w := range s.Fakenet {
		p, err := netip.ParsePrefix(w)
		if err != nil {
			return nil
		}
		out = append(out, p.Masked())
	}
	return out
}

func ints(v []int) string {
	var s []string
	for _, n := range v {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, " ")
}

func prefixes(v []netip.Prefix) string {
	var s []string
	for _, p := range v {
		s = append(s, p.String())
	}
	return strings.Join(s, " ")
}
