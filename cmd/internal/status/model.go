// Package status is `linkagg status`: one Report gathered from the plan, apply's read-back, the counters and
// the watcher's health verdicts, rendered as text, JSON, Prometheus text format or a live screen. It decides
// nothing: path states come from the planner, health from package health.
package status

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/linkagg/linkagg-hooks/apply"
	"github.com/linkagg/linkagg-hooks/cmd/internal/engine"
	"github.com/linkagg/linkagg-hooks/health"
	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// Version of the JSON document; a field is only ever added, never renamed or removed, without a new version.
const Version = 1

// Report is the JSON document of `linkagg status --json`.
type Report struct {
	Version int       `json:"version"`
	Time    time.Time `json:"time"`
	Watcher Watcher   `json:"watcher"`
	Groups  []Group   `json:"groups"`
	// Orphans are objects of ours that no configured group claims (linkagg apply removes them); listed
	// when no group is named.
	Orphans []string `json:"orphans,omitempty"`
}

// Watcher is what a running `linkagg watch` says about itself.
type Watcher struct {
	Running bool              `json:"running"`
	Updated *time.Time        `json:"updated,omitempty"` // when health.json was last written
	Probes  *health.ProbeInfo `json:"probes,omitempty"`
}

// Group is one aggregation group.
type Group struct {
	Group     string    `json:"group"` // tun0, tun0/inet6
	Iface     string    `json:"iface"`
	Family    string    `json:"family"` // inet, inet6
	Mode      string    `json:"mode"`   // packet, mptcp, hybrid
	Running   bool      `json:"running"`
	Converged bool      `json:"converged"`         // the kernel holds exactly the plan (false when not running)
	Drift     []string  `json:"drift,omitempty"`   // what apply would change
	Objects   []Objects `json:"objects,omitempty"` // per kind of kernel object: desired, present, extra
	Paths     []Path    `json:"paths"`
	MPTCP     *MPTCP    `json:"mptcp,omitempty"`
	// Transparent is mptcp-transparent's BPF program, when configured or still pinned
	Transparent *Transparent `json:"mptcp_transparent,omitempty"`
	Tuning      Tuning       `json:"tuning"`
	report      string       // apply's read-back as text (the objects and TUN lines of the text view)
}

// Tuning is what the planner chose where the group left it open: the weights and the TUN's striping unit
// (gso_max_size; 0 in mode mptcp, which leaves it alone), and why (plan/speed.go).
type Tuning struct {
	Weights    string `json:"weights"`
	GSOMaxSize int    `json:"gso_max_size,omitempty"`
	Unit       string `json:"unit,omitempty"`
}

// Transparent is the group's mptcp-transparent program as planned and as found in the kernel.
type Transparent struct {
	Scope       string `json:"scope"`                  // configured: "all" or unit names; "" when no longer configured
	Attached    bool   `json:"attached"`               // the configured scope is in force
	Linked      bool   `json:"linked"`                 // a pinned link holds a program (of whatever scope)
	Current     bool   `json:"current"`                // that program is the one this linkagg loads
	KernelScope string `json:"kernel_scope,omitempty"` // the scope the pinned units map holds
	ProgramID   uint32 `json:"program_id,omitempty"`
	LinkID      uint32 `json:"link_id,omitempty"`
	Pins        string `json:"pins,omitempty"` // the bpffs folder of the group's pins
}

// Objects counts one kind of kernel object.
type Objects struct {
	Kind    string `json:"kind"`
	Desired int    `json:"desired"`
	Present int    `json:"present"`
	Extra   int    `json:"extra"`
}

// Path is one path of a group.
type Path struct {
	Path    int        `json:"path"` // 1-based, in table order
	Table   int        `json:"table"`
	Mark    string     `json:"mark"` // 0x10000000
	Weight  int        `json:"weight"`
	Speed   int        `json:"speed_mbit,omitempty"` // the speed the weights and unit come from; 0: unknown
	Address string     `json:"address"`              // our address on this path
	Link    string     `json:"link,omitempty"`       // the member NIC holding it
	State   string     `json:"state"`                // up, pending, no-carrier, probe-failed
	Since   *time.Time `json:"since,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	// Carrier of the member NIC; a path can be up without it on an ifupdown host without a watcher.
	Carrier bool `json:"carrier"`
	// Packets and Bytes are what the path's mark chain marked since our nftables table was last made
	// (packet and hybrid modes; a change of the sequence makes a new table and starts them again).
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// WeightShare is weight / sum of the active paths' weights (0 when the path is out). Share is the
	// path's share of the group's bytes (mark chain bytes plus MPTCP subflow bytes sent), PacketShare of
	// the group's marked packets; both null while the group has counted nothing.
	WeightShare float64             `json:"weight_share"`
	Share       *float64            `json:"share"`
	PacketShare *float64            `json:"packet_share"`
	ShareDrift  *health.Flag        `json:"share_drift"` // set while the watcher (or status --watch) flags it
	NIC         *NIC                `json:"nic,omitempty"`
	Subflows    *apply.SubflowStats `json:"subflows,omitempty"` // mptcp and hybrid modes
	Gateways    Gateways            `json:"gateways"`
}

// NIC is the member link's kernel counters.
type NIC struct {
	Name      string `json:"name"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxBytes   uint64 `json:"tx_bytes"`
	RxPackets uint64 `json:"rx_packets"`
	TxPackets uint64 `json:"tx_packets"`
	RxErrors  uint64 `json:"rx_errors"`
	TxErrors  uint64 `json:"tx_errors"`
	RxDropped uint64 `json:"rx_dropped"`
	TxDropped uint64 `json:"tx_dropped"`
}

// Gateways is the path's peer gateways: how many, how many the watcher probes, and those that stopped
// answering.
type Gateways struct {
	Peers  int           `json:"peers"`
	Probed int           `json:"probed"`
	Down   []GatewayDown `json:"down,omitempty"`
}

// GatewayDown is one peer that cannot use the path (the plan's PeerOut): its gateway stopped answering
// probes (probe-failed, since when), or is on no subnet of a link that is up (pending). The path carries
// nothing to that peer; the peer's other paths share its traffic.
type GatewayDown struct {
	Peer    netip.Addr `json:"peer"` // the peer's VIP
	Gateway netip.Addr `json:"gateway"`
	Link    string     `json:"link"` // empty when no subnet holds the gateway
	State   string     `json:"state"`
	Since   *time.Time `json:"since,omitempty"`
	Reason  string     `json:"reason"`
}

// MPTCP is the MPTCP part of the read-back.
type MPTCP struct {
	Endpoints []string    `json:"endpoints"`
	Limits    plan.Limits `json:"limits"`
}

// Gather reads everything about the groups named by ids (all when empty) at now, in one read-only session
// (no lock: a run that applies meanwhile may show as a difference for that one reading).
func Gather(e *engine.Engine, ids []string, now time.Time) (Report, error) {
	r := Report{Version: Version, Time: now.UTC(), Groups: []Group{}}
	err := e.Run(true, func(ev *engine.Event) error {
		gs, err := engine.Select(ev.Cfg, ids)
		if err != nil {
			return err
		}
		hf, watched := health.Load(e.Apply.RunDir)
		r.Watcher.Running = watched || health.WatcherRunning(e.Apply.RunDir)
		probed := map[plan.GatewayKey]bool{}
		if watched {
			up := hf.Updated
			r.Watcher.Updated, r.Watcher.Probes = &up, &hf.Probes
			if hf.Probes.Off == "" {
				for _, t := range health.Targets(ev.Cfg.Groups, ev.Links) {
					probed[plan.GatewayKey{Link: t.Link, Gateway: t.Gateway}] = true
				}
			}
		}
		hh := hf.Health()
		for _, g := range gs {
			grp, err := gatherGroup(ev, g, hf, hh, probed)
			if err != nil {
				return fmt.Errorf("%s: %w", g.ID(), err)
			}
			r.Groups = append(r.Groups, grp)
		}
		if len(ids) == 0 {
			o, err := ev.Orphans()
			if err != nil {
				return err
			}
			r.Orphans = o.Lines
		}
		return nil
	})
	return r, err
}

func gatherGroup(ev *engine.Event, g *parser.Group, hf health.File, hh plan.Health, probed map[plan.GatewayKey]bool) (Group, error) {
	links := ev.Links
	d, err := ev.Desired(g, nil)
	if err != nil {
		return Group{}, err
	}
	grp := Group{Group: g.ID(), Iface: g.Iface, Family: g.Family.String(), Mode: string(d.Mode), Running: ev.Running(g),
		Tuning: Tuning{Weights: d.Tuning.Weights, GSOMaxSize: d.TUN.GSOMaxSize, Unit: d.Tuning.Unit}}
	var ctr map[uint32]apply.Counter
	var sub map[int]apply.SubflowStats
	if grp.Running {
		rep, err := ev.S.Status(d)
		if err != nil {
			return grp, err
		}
		grp.Converged, grp.Drift, grp.report = rep.Converged, rep.Drift, rep.String()
		for _, k := range rep.Kinds {
			grp.Objects = append(grp.Objects, Objects{Kind: k.Kind, Desired: k.Desired, Present: k.Present, Extra: k.Extra})
		}
		if rep.MPTCP != nil {
			grp.MPTCP = &MPTCP{Endpoints: rep.MPTCP.Endpoints, Limits: rep.MPTCP.Limits}
		}
		grp.Transparent = transparent(rep.Transparent)
		if ctr, err = ev.S.PathCounters(d); err != nil {
			return grp, err
		}
		if d.MPTCP != nil {
			sub = ev.S.Subflows(d)
		}
	}
	weights := 0
	for _, p := range d.Paths {
		if p.Active() {
			weights += p.Weight
		}
	}
	for _, p := range d.Paths {
		gp := Path{Path: p.Index + 1, Table: p.Table, Mark: fmt.Sprintf("%#x", p.Mark), Weight: p.Weight, Speed: p.Speed,
			Address: p.Own.String(), Link: p.Dev, State: stateName(p.State), Reason: p.Reason}
		if !p.Since.IsZero() {
			s := p.Since.UTC()
			gp.Since = &s
		}
		l := plan.Holder(links, p.Own)
		if gp.Link == "" && l != nil {
			gp.Link = l.Name
		}
		if l != nil {
			gp.Carrier = l.Up && l.Carrier
		}
		if p.Active() && weights > 0 {
			gp.WeightShare = float64(p.Weight) / float64(weights)
		}
		if c, ok := ctr[p.Mark]; ok && p.Active() {
			gp.Packets, gp.Bytes = c.Packets, c.Bytes
		}
		if d.MPTCP != nil && grp.Running {
			s := sub[p.Index]
			gp.Subflows = &s
		}
		if gp.Link != "" && grp.Running {
			n, err := ev.S.NICStats(gp.Link)
			if err != nil {
				return grp, err
			}
			if n.Exists {
				gp.NIC = &NIC{Name: n.Name, RxBytes: n.RxBytes, TxBytes: n.TxBytes, RxPackets: n.RxPackets, TxPackets: n.TxPackets,
					RxErrors: n.RxErrors, TxErrors: n.TxErrors, RxDropped: n.RxDropped, TxDropped: n.TxDropped}
			}
		}
		for _, f := range hf.Drift {
			if f.Group == g.ID() && f.Path == gp.Path {
				f := f
				gp.ShareDrift = &f
			}
		}
		for _, peer := range g.Peers {
			if p.Index >= len(peer.Gateways) {
				continue
			}
			gp.Gateways.Peers++
			gw := peer.Gateways[p.Index]
			gl := plan.GatewayLink(links, p.Own, gw)
			if gl == nil {
				continue
			}
			k := plan.GatewayKey{Link: gl.Name, Gateway: gw}
			if probed[k] {
				gp.Gateways.Probed++
			}
			// a path that is out as a whole has no per-peer verdicts in the plan: the watcher's are shown
			if down, ok := hh.Gateways[k]; ok && !p.Active() {
				s := down.Since.UTC()
				gp.Gateways.Down = append(gp.Gateways.Down, GatewayDown{Peer: peer.VIP, Gateway: gw, Link: gl.Name, State: down.State, Since: &s,
					Reason: fmt.Sprintf("gateway %s on %s does not answer probes", gw, gl.Name)})
			}
		}
		for _, o := range d.PeersOut {
			if o.Path != p.Index {
				continue
			}
			gd := GatewayDown{Peer: o.Peer, Gateway: o.Gateway, Link: o.Link, State: stateName(o.State), Reason: o.Reason}
			if !o.Since.IsZero() {
				s := o.Since.UTC()
				gd.Since = &s
			}
			gp.Gateways.Down = append(gp.Gateways.Down, gd)
		}
		grp.Paths = append(grp.Paths, gp)
	}
	Shares(grp.Paths)
	return grp, nil
}

func transparent(ts *apply.TransparentStatus) *Transparent {
	if ts == nil {
		return nil
	}
	out := &Transparent{Attached: ts.Attached()}
	if ts.Want != nil {
		out.Scope = ts.Want.String()
	}
	if f := ts.Found; f != nil {
		out.Linked, out.Current, out.Pins = f.Linked, f.Current, f.Dir
		if f.MapOK {
			out.KernelScope = f.Scope.String()
		}
		if f.Linked {
			out.ProgramID, out.LinkID = uint32(f.ProgID), uint32(f.LinkID)
		}
	}
	return out
}

// Shares sets each path's share of the group's bytes and packets from its counters.
func Shares(paths []Path) {
	var bytes, packets uint64
	for _, p := range paths {
		bytes += pathBytes(p)
		packets += p.Packets
	}
	for i := range paths {
		paths[i].Share, paths[i].PacketShare = nil, nil
		if bytes > 0 {
			s := float64(pathBytes(paths[i])) / float64(bytes)
			paths[i].Share = &s
		}
		if packets > 0 {
			s := float64(paths[i].Packets) / float64(packets)
			paths[i].PacketShare = &s
		}
	}
}

// pathBytes is what linkagg counted for the path: its mark chain's bytes and its MPTCP subflows' bytes sent.
func pathBytes(p Path) uint64 {
	b := p.Bytes
	if p.Subflows != nil {
		b += p.Subflows.BytesSent
	}
	return b
}

func stateName(s plan.PathState) string {
	if s == plan.PathActive {
		return "up"
	}
	return string(s)
}

// Samples are the per-path byte counters of a report, for the share drift check (package health).
func Samples(r Report) []health.PathSample {
	var out []health.PathSample
	for _, g := range r.Groups {
		if !g.Running {
			continue
		}
		for _, p := range g.Paths {
			out = append(out, health.PathSample{Group: g.Group, Path: p.Path, Weight: p.Weight, Active: p.State == "up", Bytes: pathBytes(p)})
		}
	}
	return out
}

// Drifting tells whether a running group differs from its plan, or objects of ours are orphans (exit
// status 4).
func (r Report) Drifting() bool {
	return len(r.Orphans) > 0 || slices.ContainsFunc(r.Groups, func(g Group) bool { return g.Running && !g.Converged })
}

// Sample reads only what the share drift check needs, for every running group: per path its counted bytes
// (mark chain and MPTCP subflows). The watcher calls it every second.
func Sample(e *engine.Engine) ([]health.PathSample, error) {
	var out []health.PathSample
	err := e.Run(true, func(ev *engine.Event) error {
		for _, g := range ev.RunningGroups() {
			d, err := ev.Desired(g, nil)
			if err != nil {
				return err
			}
			ctr, err := ev.S.PathCounters(d)
			if err != nil {
				return err
			}
			var sub map[int]apply.SubflowStats
			if d.MPTCP != nil {
				sub = ev.S.Subflows(d)
			}
			for _, p := range d.Paths {
				b := sub[p.Index].BytesSent
				if p.Active() {
					b += ctr[p.Mark].Bytes
				}
				out = append(out, health.PathSample{Group: g.ID(), Path: p.Index + 1, Weight: p.Weight, Active: p.Active(), Bytes: b})
			}
		}
		return nil
	})
	return out, err
}
