// Package plan turns one configuration group plus a snapshot of the host's links into the kernel state the
// group needs. It makes no system calls: the same input gives the same Desired, which prints as the
// equivalent ip/nft commands and is compared against golden files in tests.
package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/linkagg/linkagg-hooks/parser"
)

// Ownership tags. Every kernel object we make carries one of these, so teardown finds exactly ours even
// when the state files under /run are gone.
const (
	// RouteProtocol is the rtm_protocol / FRA_PROTOCOL of our routes and rules ("proto linkagg",
	// named in /etc/iproute2/rt_protos.d/linkagg.conf).
	RouteProtocol = 76
	// NftTablePrefix starts the name of our nftables table: linkagg_<iface> in family ip or ip6.
	NftTablePrefix = "linkagg_"
	// LinkAlias is set as IFLA_IFALIAS on a TUN device we created (and so may delete).
	LinkAlias = "linkagg"
)

// Local is one network interface of the host as the planner sees it.
type Local struct {
	Name string
	// Up is administratively up: what ifupdown's if-up made. Paths follow it, not the carrier, because
	// ifupdown sends no event when a carrier comes or goes; carrier counts only through Input.Health, which
	// only planners that see the carrier return fill in (networkd, `linkagg watch`).
	Up      bool
	Carrier bool           // up with carrier (oper up or unknown): read by package health, not by Build
	Addrs   []netip.Prefix // addresses with their prefix length, both families
	// Speed is what the driver reports (ethtool), in Mbit/s; 0 when it reports none. Kind is the rtnetlink
	// link kind ("veth", "vlan", ...; empty for a plain NIC): some kinds report a made-up speed.
	Speed int    `json:",omitempty"`
	Kind  string `json:",omitempty"`
}

// Input is what Build needs: the group and the host's links. Exclude names links that are going away
// (an ifupdown pre-down of a member NIC still shows its address) and must be planned as absent. Health
// names the links that are up but count as down (no carrier, probes unanswered): their paths are out,
// with the state and time Health gives.
type Input struct {
	Group   parser.Group
	Links   []Local
	Exclude []string
	Health  Health
}

// PathState says whether a path can carry traffic now.
type PathState string

const (
	PathActive      PathState = "active"
	PathPending     PathState = "pending"       // our address for it is on no link that is up yet
	PathNoCarrier   PathState = DownNoCarrier   // its link is up without carrier (Input.Health)
	PathProbeFailed PathState = DownProbeFailed // its link passes no traffic: every gateway on it is silent
)

// Path is one of the group's paths (one per table) as planned.
type Path struct {
	Index  int // 0-based position in the table list
	Table  int
	Weight int // the group's weight, or derived from the speeds (Desired.Tuning); 0: not known yet
	Speed  int // Mbit/s: the group's `speed` or the NIC's; 0 when unknown (plan/speed.go)
	Mark   uint32
	Own    netip.Addr // our address on this path
	Dev    string     // the local link holding Own; empty when pending
	State  PathState
	Reason string    // why it is not active
	Since  time.Time // when its link went down (no-carrier, probe-failed), from Input.Health
}

// Active tells whether the path carries traffic: in the sequence, with its rule and routes.
func (p Path) Active() bool { return p.State == PathActive }

// TUN is the device that holds the VIP.
type TUN struct {
	Name string
	MTU  int // 0: leave alone
	// GSOMaxSize is the TUN's gso_max_size (0: leave alone). A socket to the fakenet takes its route, and so
	// its largest GSO burst, from the TUN before our output hook re-routes it to a member NIC: this caps
	// the unit that one mark sends down one link (plan/speed.go).
	GSOMaxSize int `json:",omitempty"`
	// Running says the TUN existed and was up in the snapshot this plan was made from: the group runs, and
	// applying the plan converges it. Apply then never creates the TUN or sets it up: finding it down or
	// gone means the group was stopped after the snapshot (ifdown, `networkctl down`, `ip link set down`
	// racing this event), and its own down event takes it down. false: the plan starts the group, and
	// Apply creates the TUN or sets it up.
	Running bool `json:",omitempty"`
}

// Route is one route we own. Gateway is invalid for a device route (the fakenet route via the TUN).
type Route struct {
	Table   int // 254 = main
	Dst     netip.Prefix
	Gateway netip.Addr
	Dev     string
	Src     netip.Addr // preferred source; invalid = none
}

// Rule is one `ip rule fwmark Mark/Mask lookup Table pref Priority proto linkagg`, or with Src valid (MPTCP
// modes) `ip rule from Src lookup Table ...` and no mark, or with Dst valid (mode mptcp) `ip rule to Dst
// lookup Table ...` and no mark.
type Rule struct {
	Family   parser.Family
	Src      netip.Prefix
	Dst      netip.Prefix
	Mark     uint32
	Mask     uint32
	Table    int
	Priority int
}

// Nft is our nftables table: a route chain at hook output that gives packets to the fakenets the mark of
// path Sequence[numgen inc mod len(Sequence)], keeping the packet mark's bits outside Mask.
type Nft struct {
	Family   parser.Family
	Table    string // NftTablePrefix + iface
	Fakenets []netip.Prefix
	Mask     uint32
	Sequence []uint32 // marks in the smooth weighted order; len = K = sum of reduced weights
	// SkipMPTCP (mode hybrid): TCP segments carrying an MPTCP option leave the chain unmarked first, so a
	// subflow is never striped across links.
	SkipMPTCP bool `json:",omitempty"`
	// PinMPTCP (mode hybrid): TCP segments from the VIP that carry an MPTCP option, the first subflow of an
	// MPTCP connection, take the primary path's mark instead of the sequence (before SkipMPTCP's rule).
	// A rule `from VIP lookup PRIMARY` would do the same, but it would also give every plain TCP socket
	// the primary NIC as its route at connect, and with it that NIC's GSO size instead of the TUN's.
	PinMPTCP *MPTCPPin `json:",omitempty"`
	// Peers are the peers that cannot use every path of Sequence (a gateway of theirs is silent or on no
	// subnet of ours): packets to them take a sequence of their own, over the paths they can use, looked up
	// by destination before the fakenet rule. Empty while every peer uses every active path.
	Peers []PeerSequence `json:",omitempty"`
}

// MPTCPPin gives the MPTCP segments from Src the mark Mark.
type MPTCPPin struct {
	Src  netip.Addr
	Mark uint32
}

// PeerSequence is the mark sequence of the peers whose VIPs are listed (they share the same usable
// paths). An empty Sequence means none of the group's paths reaches them: their packets stay unmarked.
type PeerSequence struct {
	VIPs     []netip.Addr
	Sequence []uint32 `json:",omitempty"`
}

// Marks lists every mark the table sets, in order of first use (one mark chain each).
func (n *Nft) Marks() []uint32 {
	var out []uint32
	add := func(seq []uint32) {
		for _, m := range seq {
			if !slices.Contains(out, m) {
				out = append(out, m)
			}
		}
	}
	add(n.Sequence)
	for _, p := range n.Peers {
		add(p.Sequence)
	}
	return out
}

// SequenceChain names the chain holding the numgen map of Peers[i] (one with a single path needs none:
// its peers go to that path's mark chain directly).
func SequenceChain(i int) string { return fmt.Sprintf("peers_%d", i) }

// HasChain tells whether p needs a chain of its own for its sequence.
func (p PeerSequence) HasChain() bool { return len(p.Sequence) > 1 }

// Sysctl is one value under /proc/sys, e.g. Key "net/ipv4/conf/eth0/rp_filter", Value "2".
type Sysctl struct {
	Key   string
	Value string
}

// Desired is the whole kernel state of one group.
type Desired struct {
	Group   string // group ID
	Family  parser.Family
	Mode    parser.Mode
	TUN     TUN
	VIP     netip.Prefix // VIP with its host prefix (/32 or /128)
	Paths   []Path
	Routes  []Route
	Rules   []Rule
	Nft     *Nft // nil when no path is active
	Sysctls []Sysctl
	MPTCP   *MPTCP // mode mptcp or hybrid (plan/mptcp.go)
	// PeersOut lists, per peer, the active paths it cannot use: its gateway on the path is on no subnet of a
	// link that is up (pending for that peer), or stopped answering the watcher's probes (probe-failed).
	// Such a path has no route to that peer and no share of that peer's sequence (Nft.Peers).
	PeersOut []PeerOut `json:",omitempty"`
	// Transparent (mode mptcp or hybrid with mptcp-transparent): which TCP sockets a BPF program makes MPTCP.
	Transparent *Transparent `json:",omitempty"`
	// Tuning says where the weights and the TUN's unit came from (plan/speed.go).
	Tuning Tuning
}

// PeerOut is one active path that one peer cannot use.
type PeerOut struct {
	Peer    netip.Addr // the peer's VIP
	Path    int        // index into Desired.Paths
	Gateway netip.Addr // the peer's address on that path
	Link    string     // the link a route to Gateway would leave by; empty when no subnet holds it
	State   PathState  // PathPending or PathProbeFailed
	Reason  string
	Since   time.Time // probe-failed: since when, from Input.Health
}
