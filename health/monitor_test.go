package health

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// group is tun0 on host .10 with two paths (eth0 10.0.0.0/24, eth1 10.0.1.0/24) and peers B (.20) and C
// (.30), each with a gateway on both paths.
func group() parser.Group {
	return parser.Group{
		Iface: "tun0", Family: parser.Inet, VIP: ip("10.99.255.10"),
		Tables: []int{100, 101}, Weights: []int{1, 1}, Own: []netip.Addr{ip("10.0.0.10"), ip("10.0.1.10")},
		Peers: []parser.Peer{
			{VIP: ip("10.99.255.20"), Gateways: []netip.Addr{ip("10.0.0.20"), ip("10.0.1.20")}},
			{VIP: ip("10.99.255.30"), Gateways: []netip.Addr{ip("10.0.0.30"), ip("10.0.1.30")}},
		},
	}
}

func hostLinks() []plan.Local {
	return []plan.Local{
		{Name: "lo", Up: true, Carrier: true, Addrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
		{Name: "eth0", Up: true, Carrier: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.10/24")}},
		{Name: "eth1", Up: true, Carrier: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.1.10/24")}},
		{Name: "tun0", Up: true, Carrier: false, Addrs: []netip.Prefix{netip.MustParsePrefix("10.99.255.10/32")}},
	}
}

func carrier(links []plan.Local, name string, on bool) []plan.Local {
	out := slices.Clone(links)
	for i := range out {
		if out[i].Name == name {
			out[i].Carrier = on
		}
	}
	return out
}

// sim drives a Monitor on a fake clock: it calls Step at every instant Next names, answers at once every
// probe to a gateway that is not silent, and records what Step asked for.
type sim struct {
	t         *testing.T
	m         *Monitor
	now       time.Time
	silent    map[netip.Addr]bool
	forge     func(p Probe) []Answer // what another host answers in the name of a silent gateway
	probes    []Probe
	probeAt   []time.Time
	converged []string
	events    []Event
}

func newSim(t *testing.T, cfg Config) *sim {
	s := &sim{t: t, m: NewMonitor(cfg, t0), now: t0, silent: map[netip.Addr]bool{}}
	return s
}

func (s *sim) step() {
	a := s.m.Step(s.now)
	if a.Converge != "" {
		s.converged = append(s.converged, a.Converge)
	}
	s.events = append(s.events, a.Events...)
	for _, p := range a.Probes {
		s.probes = append(s.probes, p)
		s.probeAt = append(s.probeAt, s.now)
		if !s.silent[p.Target.Gateway] {
			s.m.Answer(s.now, reply(p))
		} else if s.forge != nil {
			for _, a := range s.forge(p) {
				s.m.Answer(s.now, a)
			}
		}
	}
}

// until runs the machine up to t0+d.
func (s *sim) until(d time.Duration) {
	end := t0.Add(d)
	for {
		next := s.m.Next()
		if next.After(end) {
			break
		}
		if next.After(s.now) {
			s.now = next
		}
		s.step()
	}
	s.now = end
}

func (s *sim) observe(links []plan.Local) { s.m.Observe(s.now, []parser.Group{group()}, links) }

func (s *sim) health() string {
	h := s.m.Health()
	var out []string
	for l, d := range h.Links {
		out = append(out, fmt.Sprintf("%s %s @%s", l, d.State, d.Since.Sub(t0)))
	}
	for k, d := range h.Gateways {
		out = append(out, fmt.Sprintf("%s/%s %s @%s", k.Link, k.Gateway, d.State, d.Since.Sub(t0)))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// reply is what the true gateway of p answers: its sequence and nonce, from the gateway, on p's link.
func reply(p Probe) Answer {
	return Answer{Seq: p.Seq, Nonce: p.Nonce, From: p.Target.Gateway, Link: p.Target.Link}
}

func TestMonitor(t *testing.T) {
	cfg := Config{Debounce: ms(50), Resync: 30 * time.Second, ProbeInterval: ms(100), ProbeBudget: 1000, Misses: 3}
	noProbes := cfg
	noProbes.ProbeInterval = 0
	for _, tc := range []struct {
		name string
		cfg  Config
		run  func(s *sim)
		// health at the end, the convergences (their reasons) after the start
		health    string
		converged []string
	}{
		{
			name: "carrier lost and back: no-carrier since the snapshot that showed it, a convergence at once each way",
			cfg:  noProbes,
			run: func(s *sim) {
				s.until(ms(10))
				s.now = t0.Add(ms(200))
				s.observe(carrier(hostLinks(), "eth1", false))
				s.until(ms(200))
				if got := s.health(); got != "eth1 no-carrier @200ms" {
					t.Errorf("after the carrier loss: %q", got)
				}
				s.now = t0.Add(ms(900))
				s.observe(hostLinks())
				s.until(ms(900))
			},
			health:    "",
			converged: []string{"carrier", "carrier"},
		},
		{
			name: "a burst of link events gives one convergence, debounce after its first event",
			cfg:  noProbes,
			run: func(s *sim) {
				s.until(ms(10))
				for _, at := range []int{100, 110, 130, 149} {
					s.until(ms(at))
					s.m.LinkEvent(s.now, fmt.Sprintf("event at %d", at))
				}
				s.until(ms(149))
				if len(s.converged) != 0 {
					t.Errorf("converged before the debounce ran out: %v", s.converged)
				}
				s.until(ms(150))
				s.until(ms(400))
			},
			converged: []string{"event at 100"},
		},
		{
			name: "carrier flapping inside one debounce: one convergence, the state of the last snapshot",
			cfg:  noProbes,
			run: func(s *sim) {
				s.until(ms(10))
				for i, at := range []int{100, 110, 120, 130} {
					s.until(ms(at))
					s.m.LinkEvent(s.now, "flap")
					_ = i
				}
				s.until(ms(150))
				// the convergence takes its snapshot: the last flap left the carrier up
				s.observe(hostLinks())
				s.until(ms(500))
			},
			converged: []string{"flap"},
		},
		{
			name: "three missed probes take only that peer's gateway out; the link stays for the other peer",
			cfg:  cfg,
			run: func(s *sim) {
				s.observe(hostLinks())
				s.until(ms(500))
				// B's eth1 died behind the switch. Targets are spread over the 100 ms period (eth1/.20 at
				// +50 ms): probes at 550, 650, 750 go unanswered, the third deadline is 850 ms
				s.silent[ip("10.0.1.20")] = true
				s.until(ms(700))
				if got := s.health(); got != "" {
					t.Errorf("out after two misses: %q", got)
				}
				s.until(ms(1000))
			},
			health:    "eth1/10.0.1.20 probe-failed @850ms",
			converged: []string{"gateway 10.0.1.20 on eth1 silent"},
		},
		{
			name: "every gateway on a link silent: the link is probe-failed since the last one went",
			cfg:  cfg,
			run: func(s *sim) {
				s.observe(hostLinks())
				s.until(ms(500))
				s.silent[ip("10.0.1.20")] = true
				s.until(ms(550))
				s.silent[ip("10.0.1.30")] = true
				s.until(ms(1000))
			},
			health:    "eth1 probe-failed @875ms, eth1/10.0.1.20 probe-failed @850ms, eth1/10.0.1.30 probe-failed @875ms",
			converged: []string{"gateway 10.0.1.20 on eth1 silent", "gateway 10.0.1.30 on eth1 silent"},
		},
		{
			name: "one answer puts a gateway back at once",
			cfg:  cfg,
			run: func(s *sim) {
				s.observe(hostLinks())
				s.until(ms(500))
				s.silent[ip("10.0.1.20")], s.silent[ip("10.0.1.30")] = true, true
				s.until(ms(1000))
				delete(s.silent, ip("10.0.1.20"))
				s.until(ms(1100))
			},
			health: "eth1/10.0.1.30 probe-failed @875ms",
			converged: []string{"gateway 10.0.1.20 on eth1 silent", "gateway 10.0.1.30 on eth1 silent",
				"gateway 10.0.1.20 on eth1 answers"},
		},
		{
			name: "two misses then an answer: the count starts again",
			cfg:  cfg,
			run: func(s *sim) {
				s.observe(hostLinks())
				s.until(ms(500))
				for i := 0; i < 4; i++ {
					s.silent[ip("10.0.0.20")] = true
					s.until(ms(700 + 300*i))
					delete(s.silent, ip("10.0.0.20"))
					s.until(ms(800 + 300*i))
				}
			},
		},
		{
			name: "a late answer counts as missed; an answer from another address is not one",
			cfg:  cfg,
			run: func(s *sim) {
				s.observe(hostLinks())
				s.until(ms(500))
				s.silent[ip("10.0.0.20")] = true
				s.until(ms(900))
				for i := len(s.probes) - 1; i >= 0; i-- {
					p := s.probes[i]
					if p.Target.Gateway == ip("10.0.0.20") && s.probeAt[i].Before(t0.Add(ms(750))) {
						s.m.Answer(s.now, reply(p)) // its deadline is past
						break
					}
				}
				for i := len(s.probes) - 1; i >= 0; i-- {
					if p := s.probes[i]; p.Target.Gateway == ip("10.0.0.20") {
						a := reply(p)
						a.From = ip("10.0.0.99") // someone else
						s.m.Answer(s.now, a)
						break
					}
				}
				s.until(ms(1000))
			},
			health:    "eth0/10.0.0.20 probe-failed @900ms",
			converged: []string{"gateway 10.0.0.20 on eth0 silent"},
		},
		{
			// issue 21 #6: host C answers for B's dead path. It knows the gateway's address and the link, but
			// does not see the requests: it guesses the next sequence numbers, or replays the sequence with
			// another nonce, or sends the right reply in through another link (the switch lab: every NIC on
			// one subnet). None of it counts; the gateway goes out as if C were not there.
			name: "forged answers keep no silent gateway in",
			cfg:  cfg,
			run: func(s *sim) {
				s.observe(hostLinks())
				s.until(ms(500))
				s.silent[ip("10.0.0.20")] = true
				s.forge = func(p Probe) []Answer {
					guessed, wrongNonce, wrongLink := reply(p), reply(p), reply(p)
					guessed.Seq++
					guessed.Nonce = 0
					wrongNonce.Nonce ^= 1
					wrongLink.Link = "eth1"
					return []Answer{guessed, wrongNonce, wrongLink}
				}
				s.until(ms(1000))
				seqs := map[uint16]bool{}
				for _, p := range s.probes {
					seqs[p.Seq] = true
				}
				if s.probes[0].Seq == 1 && s.probes[1].Seq == 2 {
					t.Errorf("sequence numbers start at 1: guessable")
				}
				if len(seqs) != len(s.probes) {
					t.Errorf("%d probes, %d distinct sequence numbers", len(s.probes), len(seqs))
				}
			},
			health:    "eth0/10.0.0.20 probe-failed @900ms",
			converged: []string{"gateway 10.0.0.20 on eth0 silent"},
		},
		{
			name: "carrier loss forgets the link's gateways; they are probed afresh when it returns",
			cfg:  cfg,
			run: func(s *sim) {
				s.observe(hostLinks())
				s.until(ms(500))
				s.silent[ip("10.0.1.20")] = true
				s.until(ms(1000))
				s.observe(carrier(hostLinks(), "eth1", false))
				s.until(ms(1100))
				if got := s.health(); got != "eth1 no-carrier @1s" {
					t.Errorf("without carrier: %q", got)
				}
				s.observe(hostLinks())
				s.until(ms(1500))
			},
			health:    "eth1/10.0.1.20 probe-failed @1.45s",
			converged: []string{"gateway 10.0.1.20 on eth1 silent", "carrier", "carrier", "gateway 10.0.1.20 on eth1 silent"},
		},
		{
			name: "resync converges every Resync without events",
			cfg:  Config{Debounce: ms(50), Resync: 10 * time.Second},
			run: func(s *sim) {
				s.until(35 * time.Second)
			},
			converged: []string{"resync", "resync", "resync"},
		},
		{
			name: "a stopped group is neither probed nor counted",
			cfg:  cfg,
			run: func(s *sim) {
				links := carrier(hostLinks(), "eth1", false)
				links[3].Up = false // tun0 down: ifdown tun0
				s.observe(links)
				s.until(ms(1000))
				if len(s.probes) != 0 {
					t.Errorf("%d probes for a stopped group", len(s.probes))
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, tc.cfg)
			s.step() // the start
			if len(s.converged) != 1 || s.converged[0] != "start" {
				t.Fatalf("first step: converged %v, want [start]", s.converged)
			}
			s.converged = nil
			tc.run(s)
			if got := s.health(); got != tc.health {
				t.Errorf("health %q, want %q", got, tc.health)
			}
			if !slices.Equal(s.converged, tc.converged) {
				t.Errorf("convergences %q, want %q\nevents: %v", s.converged, tc.converged, s.events)
			}
		})
	}
}

// Every probe target is probed once per period; the period stretches so that all targets together stay
// within the budget: 254 peers x 4 paths = 1016 targets at 1000 packets/s is one probe per target every
// 1.016 s, never more than the budget in any second.
func TestMonitorBudget(t *testing.T) {
	var g parser.Group
	var links []plan.Local
	g = parser.Group{Iface: "tun0", VIP: ip("10.99.0.1"), Tables: []int{1, 2, 3, 4}, Weights: []int{1, 1, 1, 1}}
	links = append(links, plan.Local{Name: "tun0", Up: true})
	for i := range 4 {
		own := ip(fmt.Sprintf("10.%d.0.1", i))
		g.Own = append(g.Own, own)
		links = append(links, plan.Local{Name: fmt.Sprintf("eth%d", i), Up: true, Carrier: true,
			Addrs: []netip.Prefix{netip.PrefixFrom(own, 16)}})
	}
	for k := range 254 {
		p := parser.Peer{VIP: ip(fmt.Sprintf("10.99.1.%d", k+1))}
		for i := range 4 {
			p.Gateways = append(p.Gateways, ip(fmt.Sprintf("10.%d.1.%d", i, k+1)))
		}
		g.Peers = append(g.Peers, p)
	}
	for _, tc := range []struct {
		budget int
		period time.Duration
	}{
		{1000, 1016 * time.Millisecond},
		{200, 5080 * time.Millisecond},
		{100000, ms(200)}, // under the budget the interval rules
	} {
		cfg := DefaultConfig()
		cfg.ProbeBudget = tc.budget
		m := NewMonitor(cfg, t0)
		m.Observe(t0, []parser.Group{g}, links)
		if n := len(m.Targets()); n != 1016 {
			t.Fatalf("%d targets, want 1016", n)
		}
		if p := m.Period(); p != tc.period {
			t.Errorf("budget %d: period %s, want %s", tc.budget, p, tc.period)
		}
		perSecond := map[int]int{}
		perTarget := map[plan.GatewayKey]int{}
		now := t0
		end := t0.Add(20 * time.Second)
		for now.Before(end) {
			for _, p := range m.Step(now).Probes {
				perSecond[int(now.Sub(t0)/time.Second)]++
				perTarget[p.Target.key()]++
				m.Answer(now, reply(p))
			}
			now = m.Next()
		}
		limit := float64(tc.budget)
		if tc.period == cfg.ProbeInterval {
			limit = 1016 / cfg.ProbeInterval.Seconds()
		}
		for sec, n := range perSecond {
			if float64(n) > limit*1.01+1 {
				t.Errorf("budget %d: %d probes in second %d", tc.budget, n, sec)
			}
		}
		want := int(20 * time.Second / tc.period)
		for k, n := range perTarget {
			if n < want-1 || n > want+1 { // the first probe of a target falls anywhere in the first period
				t.Errorf("budget %d: %v probed %d times in 20 s, want %d", tc.budget, k, n, want)
				break
			}
		}
	}
}

// The targets are every peer's gateway on every path, through the link the route takes: on one subnet
// shared by two NICs each path keeps its own NIC; a router on one subnet is probed once, through its NIC.
func TestTargets(t *testing.T) {
	g := group()
	got := Targets([]parser.Group{g}, hostLinks())
	want := []Target{
		{"eth0", ip("10.0.0.10"), ip("10.0.0.20")}, {"eth0", ip("10.0.0.10"), ip("10.0.0.30")},
		{"eth1", ip("10.0.1.10"), ip("10.0.1.20")}, {"eth1", ip("10.0.1.10"), ip("10.0.1.30")},
	}
	if !slices.Equal(got, want) {
		t.Errorf("targets\n%v\nwant\n%v", got, want)
	}
	// one switch, one subnet: A eth0 .10 / eth1 .11, B .20/.21
	shared := group()
	shared.Own = []netip.Addr{ip("10.0.0.10"), ip("10.0.0.11")}
	shared.Peers = []parser.Peer{{VIP: ip("10.99.255.20"), Gateways: []netip.Addr{ip("10.0.0.20"), ip("10.0.0.21")}}}
	links := []plan.Local{
		{Name: "eth0", Up: true, Carrier: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.10/24")}},
		{Name: "eth1", Up: true, Carrier: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.11/24")}},
		{Name: "tun0", Up: true},
	}
	got = Targets([]parser.Group{shared}, links)
	want = []Target{{"eth0", ip("10.0.0.10"), ip("10.0.0.20")}, {"eth1", ip("10.0.0.11"), ip("10.0.0.21")}}
	if !slices.Equal(got, want) {
		t.Errorf("one subnet: targets %v, want %v", got, want)
	}
	// a router .1 on eth1's subnet for every path: probed once, through eth1
	router := group()
	router.Peers = []parser.Peer{{VIP: ip("10.99.255.1"), Gateways: []netip.Addr{ip("10.0.1.1"), ip("10.0.1.1")}}}
	got = Targets([]parser.Group{router}, hostLinks())
	want = []Target{{"eth1", ip("10.0.1.10"), ip("10.0.1.1")}}
	if !slices.Equal(got, want) {
		t.Errorf("router: targets %v, want %v", got, want)
	}
	// a link without carrier is not probed (it is out anyway), nor is a stopped group
	if got := Targets([]parser.Group{g}, carrier(hostLinks(), "eth0", false)); len(got) != 2 || got[0].Link != "eth1" {
		t.Errorf("eth0 without carrier: targets %v", got)
	}
}
