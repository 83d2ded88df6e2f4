package plan

import (
	"net/netip"
	"time"
)

// Health is what the link-health room (package health) knows about the group's member links and the peer
// gateways behind them, as the planner takes it. A link in Links counts as down: its path leaves the mark
// sequence, its rule and routes go, and no route of another path leaves by it. Gateways lists every
// (link, peer gateway) pair that stopped answering while the link may still work for other peers; a link
// whose every probed gateway is silent is in Links as well, as probe-failed.
type Health struct {
	Links    map[string]Down     `json:"links,omitempty"`
	Gateways map[GatewayKey]Down `json:"-"` // JSON has no struct keys; see package health for the file format
}

// GatewayKey is one peer gateway reached through one local link.
type GatewayKey struct {
	Link    string
	Gateway netip.Addr
}

// Down is why something counts as down, and since when.
type Down struct {
	State string    `json:"state"` // DownNoCarrier or DownProbeFailed
	Since time.Time `json:"since"`
}

// The reasons a link or a gateway counts as down.
const (
	DownNoCarrier   = "no-carrier"   // the link is up without carrier (cable, peer NIC or switch port down)
	DownProbeFailed = "probe-failed" // probes went unanswered: the link or the gateway passes no traffic
)

// LinkDown tells whether h counts link as down, and why.
func (h Health) LinkDown(link string) (Down, bool) {
	d, ok := h.Links[link]
	return d, ok
}
