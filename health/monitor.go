// Package health decides which member links and which peer gateways behind them count as down, the way the
// bonding driver's miimon/arp_monitor does for a bond: carrier from the kernel, and ICMP echo probes to
// every peer gateway a route of a running group uses, within a budget of packets per second. Its output is
// plan.Health, which every planner takes.
//
// The Monitor is a state machine: time comes in as an argument, links come in as snapshots, probe answers
// come in as calls, and what to do (send probes, converge) comes out of Step. Run drives it with a clock, a
// link source and a prober that tests replace.
package health

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// Defaults of `linkagg watch`.
const (
	DefaultDebounce      = 50 * time.Millisecond
	DefaultResync        = 30 * time.Second
	DefaultProbeInterval = 200 * time.Millisecond
	DefaultProbeBudget   = 1000 // echo requests per second, all targets together
	DefaultMisses        = 3
	// maxProbeTimeout bounds how long an answer is waited for when targets are probed rarely (a big group
	// under the budget): echo replies on a LAN take well under a millisecond.
	maxProbeTimeout = time.Second
)

// Config is how the monitor behaves.
type Config struct {
	Debounce time.Duration // a burst of link events gives one convergence, this long after its first event
	Resync   time.Duration // converge this often even without events (a missed event, a foreign change)
	// ProbeInterval is the shortest time between two probes of one target; 0 turns probes off.
	ProbeInterval time.Duration
	// ProbeBudget caps the echo requests per second of all targets together: with N targets each one is
	// probed every max(ProbeInterval, N/ProbeBudget).
	ProbeBudget int
	Misses      int // unanswered probes in a row that take a gateway out; one answer puts it back
}

// DefaultConfig is what `linkagg watch` runs with when no flag says otherwise: probes on.
func DefaultConfig() Config {
	return Config{Debounce: DefaultDebounce, Resync: DefaultResync, ProbeInterval: DefaultProbeInterval,
		ProbeBudget: DefaultProbeBudget, Misses: DefaultMisses}
}

// Target is one peer gateway probed through one member link, from that link's address in its subnet.
type Target struct {
	Link    string
	Src     netip.Addr
	Gateway netip.Addr
}

func (t Target) key() plan.GatewayKey { return plan.GatewayKey{Link: t.Link, Gateway: t.Gateway} }

// Probe is one echo request to send: Seq is its sequence number and Nonce its payload, both of which its
// answer must carry, arriving on the target's link.
type Probe struct {
	Seq    uint16
	Nonce  uint64
	Target Target
}

// Actions is what Step asks the caller to do now.
type Actions struct {
	Probes   []Probe
	Converge string  // why to converge now; empty: no convergence is due
	Events   []Event // state changes to log, one line each
}

// Event is one state change; Down ones are worth an operator's attention (journal priority warning).
type Event struct {
	Down bool
	Text string
}

type gateway struct {
	target Target
	next   time.Time // when its next probe is due
	misses int
	down   time.Time // zero while it answers
}

type outstanding struct {
	key      plan.GatewayKey
	nonce    uint64
	deadline time.Time
}

// Monitor is the health state machine of one host.
type Monitor struct {
	cfg        Config
	noCarrier  map[string]time.Time // member links up without carrier, since when
	gws        map[plan.GatewayKey]*gateway
	order      []plan.GatewayKey // targets in a stable order, for an even spread of the probes
	pending    map[uint16]outstanding
	seq        uint16
	convergeAt time.Time // zero: no convergence scheduled
	why        string
	nextResync time.Time
	events     []Event
	random     func() uint64 // the nonces and the first sequence number: unguessable by other hosts
}

// NewMonitor starts a monitor at now with a convergence due at once ("start").
func NewMonitor(cfg Config, now time.Time) *Monitor {
	if cfg.Misses <= 0 {
		cfg.Misses = DefaultMisses
	}
	if cfg.ProbeBudget <= 0 {
		cfg.ProbeBudget = DefaultProbeBudget
	}
	m := &Monitor{cfg: cfg, noCarrier: map[string]time.Time{}, gws: map[plan.GatewayKey]*gateway{},
		pending: map[uint16]outstanding{}, convergeAt: now, why: "start", nextResync: now.Add(cfg.Resync),
		random: randomUint64}
	m.seq = uint16(m.random())
	return m
}

func randomUint64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail on Linux ≥ 3.17 (getrandom)
	return binary.LittleEndian.Uint64(b[:])
}

// LinkEvent notes a netlink link or address change: a convergence is due Debounce after the first event of
// a burst (later events of the burst ride along).
func (m *Monitor) LinkEvent(now time.Time, what string) {
	m.schedule(now.Add(m.cfg.Debounce), what)
}

func (m *Monitor) schedule(at time.Time, why string) {
	if m.convergeAt.IsZero() || at.Before(m.convergeAt) {
		m.convergeAt, m.why = at, why
	}
}

// Period is how often each target is probed now: ProbeInterval, stretched so that all targets together
// stay within ProbeBudget packets per second.
func (m *Monitor) Period() time.Duration {
	return period(m.cfg, len(m.order))
}

func period(cfg Config, targets int) time.Duration {
	p := cfg.ProbeInterval
	if need := time.Duration(targets) * time.Second / time.Duration(cfg.ProbeBudget); need > p {
		p = need
	}
	return p
}

func (m *Monitor) timeout() time.Duration { return min(m.Period(), maxProbeTimeout) }

// Observe takes a snapshot of the host's links and the configuration: member links of running groups that
// are up without carrier count as no-carrier (since the first snapshot that showed it), and the probe
// targets become every (link, peer gateway) pair a route of a running group uses through a link with
// carrier. A target that goes away forgets its state; a new one is probed within one period. A change of
// carrier makes a convergence due at once.
func (m *Monitor) Observe(now time.Time, groups []parser.Group, links []plan.Local) {
	out := map[string]bool{}
	for _, g := range groups {
		if !plan.Running(links, g.Iface) {
			continue
		}
		for _, own := range g.Own {
			if l := plan.Holder(links, own); l != nil && l.Up && !l.Carrier && l.Name != g.Iface {
				out[l.Name] = true
			}
		}
	}
	changed := false
	for name := range out {
		if _, ok := m.noCarrier[name]; !ok {
			m.noCarrier[name] = now
			m.down("%s: no carrier: its paths are out", name)
			changed = true
		}
	}
	for name := range m.noCarrier {
		if !out[name] {
			delete(m.noCarrier, name)
			m.event("%s: carrier back", name)
			changed = true
		}
	}
	if changed {
		m.schedule(now, "carrier")
	}
	if m.cfg.ProbeInterval > 0 {
		m.setTargets(now, Targets(groups, links))
	}
}

func (m *Monitor) setTargets(now time.Time, ts []Target) {
	keep := map[plan.GatewayKey]bool{}
	var order []plan.GatewayKey
	for _, t := range ts {
		k := t.key()
		keep[k] = true
		order = append(order, k)
	}
	wasDown := false
	for k, g := range m.gws {
		if !keep[k] {
			wasDown = wasDown || !g.down.IsZero()
			delete(m.gws, k)
		}
	}
	for seq, o := range m.pending {
		if !keep[o.key] {
			delete(m.pending, seq)
		}
	}
	m.order = order
	per := m.Period()
	for i, t := range ts {
		g, ok := m.gws[t.key()]
		if !ok {
			// spread new targets over one period so that the budget is never exceeded in a burst
			g = &gateway{next: now.Add(per * time.Duration(i) / time.Duration(len(ts)))}
			m.gws[t.key()] = g
		}
		g.target = t
	}
	if wasDown {
		m.schedule(now, "probe targets changed")
	}
}

// Answer records an echo reply. It counts only as the answer of the probe whose sequence number and nonce
// it carries, from that probe's gateway, arriving on that probe's link: another host on a link that forges
// a gateway's replies must see its requests to do so. The answer of a gateway that was down puts it back
// at once (a convergence is due now).
func (m *Monitor) Answer(now time.Time, a Answer) {
	o, ok := m.pending[a.Seq]
	if !ok || o.key.Gateway != a.From.Unmap() || o.nonce != a.Nonce || o.key.Link != a.Link {
		return // late (already counted as missed), or not an answer to our probe
	}
	delete(m.pending, a.Seq)
	g := m.gws[o.key]
	if g == nil {
		return
	}
	g.misses = 0
	if !g.down.IsZero() {
		m.event("%s: gateway %s answers again after %s", o.key.Link, o.key.Gateway, now.Sub(g.down).Round(time.Millisecond))
		g.down = time.Time{}
		m.schedule(now, fmt.Sprintf("gateway %s on %s answers", o.key.Gateway, o.key.Link))
	}
}

// Step is what to do at now: count the probes whose answer is overdue as missed (Misses in a row take the
// gateway out and make a convergence due), send the probes that are due, converge if it is time (an
// event's debounce ran out, a health change, the resync).
func (m *Monitor) Step(now time.Time) Actions {
	for seq, o := range m.pending {
		if now.Before(o.deadline) {
			continue
		}
		delete(m.pending, seq)
		g := m.gws[o.key]
		if g == nil {
			continue
		}
		g.misses++
		if g.misses == m.cfg.Misses && g.down.IsZero() {
			g.down = now
			m.down("%s: gateway %s did not answer %d probes in a row: out", o.key.Link, o.key.Gateway, g.misses)
			m.schedule(now, fmt.Sprintf("gateway %s on %s silent", o.key.Gateway, o.key.Link))
		}
	}
	var a Actions
	if m.cfg.ProbeInterval > 0 {
		per, timeout := m.Period(), m.timeout()
		for _, k := range m.order {
			g := m.gws[k]
			if now.Before(g.next) {
				continue
			}
			m.seq++
			for m.pendingSeq(m.seq) {
				m.seq++
			}
			nonce := m.random()
			m.pending[m.seq] = outstanding{key: k, nonce: nonce, deadline: now.Add(timeout)}
			a.Probes = append(a.Probes, Probe{Seq: m.seq, Nonce: nonce, Target: g.target})
			g.next = g.next.Add(per)
			if !g.next.After(now) { // late (a stalled loop): no burst to catch up
				g.next = now.Add(per)
			}
		}
	}
	if !now.Before(m.nextResync) {
		m.nextResync = now.Add(m.cfg.Resync)
		m.schedule(now, "resync")
	}
	if !m.convergeAt.IsZero() && !now.Before(m.convergeAt) {
		a.Converge = m.why
		m.convergeAt, m.why = time.Time{}, ""
	}
	a.Events, m.events = m.events, nil
	return a
}

func (m *Monitor) pendingSeq(s uint16) bool {
	_, ok := m.pending[s]
	return ok
}

// Next is when Step next has something to do.
func (m *Monitor) Next() time.Time {
	next := m.nextResync
	earlier := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	earlier(m.convergeAt)
	// many targets: wake up at most every probeQuantum and send what is due in one batch, rather than once
	// per target (1016 targets at 1000/s would wake the loop every millisecond)
	q := time.Duration(0)
	if n := len(m.order); n > 0 && m.Period()/time.Duration(n) < probeQuantum {
		q = probeQuantum
	}
	round := func(t time.Time) time.Time {
		if q == 0 || t.Truncate(q).Equal(t) {
			return t
		}
		return t.Truncate(q).Add(q)
	}
	for _, o := range m.pending {
		earlier(round(o.deadline))
	}
	if m.cfg.ProbeInterval > 0 {
		for _, g := range m.gws {
			earlier(round(g.next))
		}
	}
	return next
}

// probeQuantum is the finest step of the probe schedule when targets are many.
const probeQuantum = 10 * time.Millisecond

// Health is the current verdict: links without carrier, gateways that stopped answering, and as
// probe-failed every link whose probed gateways are all silent (since the last of them went).
func (m *Monitor) Health() plan.Health {
	h := plan.Health{Links: map[string]plan.Down{}, Gateways: map[plan.GatewayKey]plan.Down{}}
	perLink := map[string][2]int{} // targets, silent
	last := map[string]time.Time{}
	for k, g := range m.gws {
		c := perLink[k.Link]
		c[0]++
		if !g.down.IsZero() {
			c[1]++
			h.Gateways[k] = plan.Down{State: plan.DownProbeFailed, Since: g.down}
			if g.down.After(last[k.Link]) {
				last[k.Link] = g.down
			}
		}
		perLink[k.Link] = c
	}
	for link, c := range perLink {
		if c[0] > 0 && c[0] == c[1] {
			h.Links[link] = plan.Down{State: plan.DownProbeFailed, Since: last[link]}
		}
	}
	for link, since := range m.noCarrier {
		h.Links[link] = plan.Down{State: plan.DownNoCarrier, Since: since}
	}
	return h
}

// Targets counts the probe targets now.
func (m *Monitor) Targets() []Target {
	var out []Target
	for _, k := range m.order {
		out = append(out, m.gws[k].target)
	}
	return out
}

func (m *Monitor) event(format string, a ...any) {
	m.events = append(m.events, Event{Text: fmt.Sprintf(format, a...)})
}

func (m *Monitor) down(format string, a ...any) {
	m.events = append(m.events, Event{Down: true, Text: fmt.Sprintf(format, a...)})
}

// Targets lists every (member link, peer gateway) pair that a route of a running group uses, once, in a
// stable order: for each path whose own address is on a link that is up with carrier, each peer's gateway
// on that path, through the link plan.GatewayLink picks (the path's own link when its subnet holds the
// gateway, else e.g. the router's subnet). Every peer is probed, not only the first: a peer's NIC can die
// behind a switch while our carrier stays up, and only that pair must fail.
func Targets(groups []parser.Group, links []plan.Local) []Target {
	seen := map[plan.GatewayKey]bool{}
	var out []Target
	for _, g := range groups {
		if !plan.Running(links, g.Iface) {
			continue
		}
		for i, own := range g.Own {
			if l := plan.Holder(links, own); l == nil || !l.Up || !l.Carrier || l.Name == g.Iface {
				continue
			}
			for _, peer := range g.Peers {
				if i >= len(peer.Gateways) || peer.VIP == g.VIP {
					continue
				}
				gw := peer.Gateways[i]
				l := plan.GatewayLink(links, own, gw)
				if l == nil || !l.Up || !l.Carrier || l.Name == g.Iface {
					continue
				}
				src, ok := plan.SourceOn(l, gw)
				k := plan.GatewayKey{Link: l.Name, Gateway: gw}
				if !ok || seen[k] || slices.ContainsFunc(l.Addrs, func(p netip.Prefix) bool { return p.Addr() == gw }) {
					continue
				}
				seen[k] = true
				out = append(out, Target{Link: l.Name, Src: src, Gateway: gw})
			}
		}
	}
	return out
}
