// Package parser turns /etc/network/interfaces stanzas and /etc/linkagg/*.toml drop-ins into one validated
// configuration model. It reads files and nothing else; every error names file:line (or file and TOML key).
package parser

import (
	"fmt"
	"net/netip"
)

// Family is the address family of a group: an `inet` or an `inet6` stanza of the same iface are two groups.
type Family uint8

const (
	Inet  Family = 4
	Inet6 Family = 6
)

func (f Family) String() string {
	if f == Inet6 {
		return "inet6"
	}
	return "inet"
}

// Mode selects how the links are used together.
type Mode string

const (
	ModePacket Mode = "packet" // per-packet striping with nftables marks and policy routing
	ModeMPTCP  Mode = "mptcp"  // kernel MPTCP subflows, one per path
	ModeHybrid Mode = "hybrid" // MPTCP by subflows, everything else striped per packet
)

// Pos is where something was written: a line of a stanza file, or a key of a TOML file.
type Pos struct {
	File string
	Line int    // 1-based; 0 when unknown
	Key  string // TOML key path, e.g. "tun0.rspec[2]"; empty for stanzas
}

func (p Pos) String() string {
	switch {
	case p.Line > 0 && p.Key != "":
		return fmt.Sprintf("%s:%d (%s)", p.File, p.Line, p.Key)
	case p.Line > 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	case p.Key != "":
		return fmt.Sprintf("%s (%s)", p.File, p.Key)
	}
	return p.File
}

// Error is a configuration error: one line, naming where and what was expected.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Defaults of the mark scheme. A path's mark lives in the top byte of the packet mark, so the low 24 bits
// (wireguard's 0xca6c, tailscale's 0xff0000 bits, kube-proxy's 0x4000/0x8000) pass through untouched.
const (
	DefaultMarkMask     uint32 = 0xff000000
	DefaultRulePriority        = 1000
)

// The range of gso-max-size: below a few segments per burst the CPU cost per byte climbs steeply; 65536
// is the kernel's own default (GSO_LEGACY_MAX_SIZE).
const (
	MinGSOMaxSize = 4096
	MaxGSOMaxSize = 65536
)

// MaxSpeed is the highest `speed`, in Mbit/s (1.6 Tbit/s, above every Ethernet rate there is).
const MaxSpeed = 1600000

// Group is one aggregation group: a TUN device holding a virtual address (VIP) whose traffic to the
// fakenet prefixes is spread over several paths, one routing table per path.
type Group struct {
	Iface  string // the TUN device, also the ifupdown iface name
	Family Family
	Pos    Pos    // the `iface` line or the TOML table
	Source string // "interfaces" or "toml"
	Method string // ifupdown method (static, manual, ...); empty for TOML

	VIP      netip.Addr
	MTU      int // 0: leave the device's MTU alone
	Fakenets []netip.Prefix
	Tables   []int // one routing table per path, in path order
	// FakenetPos is where each fakenet was written (len == len(Fakenets); nil for a hand-built group)
	FakenetPos []Pos

	// Per path, len == len(Tables). Weights is nil when the group gives none: the planner derives them from
	// the paths' speeds, or makes them equal (plan/speed.go).
	Weights []int
	// Speeds (`speed`) is each path's speed in Mbit/s, 0 for "what its NIC reports" (auto); nil when not
	// written: every path's speed is what its NIC reports. For links that report none or a made-up one
	// (veth, VLANs over unknown uplinks, tunnels).
	Speeds []int
	Marks  []uint32 // the mark value of each path, inside MarkMask
	Own    []netip.Addr

	MarkMask     uint32
	RulePriority int
	// KeepARP (`arp-isolation off`) leaves arp_ignore/arp_announce of the member NICs alone; by default they
	// are set so that each NIC answers ARP only for its own addresses (plan/build.go memberSysctls).
	KeepARP bool
	// GSOMaxSize (`gso-max-size`) caps the size of the TCP segment bursts sockets to the fakenet hand down
	// (the TUN's gso_max_size); 0: the planner's choice, from the paths' speeds (plan/speed.go).
	GSOMaxSize int
	// TCPMinRTTWlen (`tcp-min-rtt-wlen SECONDS`, nil: leave alone) sets net.ipv4.tcp_min_rtt_wlen of the
	// network namespace while the group runs: a namespace-wide TCP knob, so only when the admin asks.
	TCPMinRTTWlen *int
	Mode          Mode
	MPTCP         MPTCP // knobs of mode mptcp/hybrid (parser/mptcp.go)

	Peers  []Peer // every rspec entry but our own, in file order
	OwnPos Pos    // where the own rspec entry was written

	// OptPos tells where each option was written (keys: "fakenet", "table", "rspec", "weight", ...).
	OptPos map[string]Pos
}

// ID names a group the way the CLI and the state files do: "tun0" for inet, "tun0/inet6" for inet6.
func (g *Group) ID() string { return GroupID(g.Iface, g.Family) }

// GroupID is the name of the group of iface in family f.
func GroupID(iface string, f Family) string {
	if f == Inet6 {
		return iface + "/inet6"
	}
	return iface
}

// Peer is another host of the group: its VIP and, per path, the gateway (its own address on that path).
type Peer struct {
	VIP      netip.Addr
	Gateways []netip.Addr // len == len(Tables); a short rspec entry is repeated cyclically
	Pos      Pos
}

// Config is everything read from all sources.
type Config struct {
	Groups []Group
}

// Group finds a group by its ID ("tun0", "tun0/inet6").
func (c *Config) Group(id string) *Group {
	for i := range c.Groups {
		if c.Groups[i].ID() == id {
			return &c.Groups[i]
		}
	}
	return nil
}
