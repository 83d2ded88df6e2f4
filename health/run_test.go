package health

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// fakeClock moves only when the test says. Every After call signals idle: Run calls After once per loop,
// in its select, so after the signal Run has finished reacting to whatever woke it.
type fakeClock struct {
	mu   sync.Mutex
	now  time.Time
	wait []waiter
	idle chan struct{}
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	c.wait = append(c.wait, waiter{c.now.Add(d), ch})
	c.mu.Unlock()
	c.idle <- struct{}{}
	return ch
}

// fakeLinks is a link source whose snapshot the test sets.
type fakeLinks struct {
	mu      sync.Mutex
	links   []plan.Local
	changes chan string
	errs    chan error
}

func (f *fakeLinks) Snapshot() ([]plan.Local, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.links), nil
}
func (f *fakeLinks) Changes() <-chan string { return f.changes }
func (f *fakeLinks) Errors() <-chan error   { return f.errs }

type fakeProber struct {
	mu      sync.Mutex
	sent    []Probe
	answers chan Answer
}

func (p *fakeProber) Send(pr Probe) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, pr)
	return nil
}
func (p *fakeProber) Answers() <-chan Answer { return p.answers }

// runHarness runs a Runner on fakes; every method returns once Run is idle again.
type runHarness struct {
	t         *testing.T
	clock     *fakeClock
	links     *fakeLinks
	prober    *fakeProber
	stop      chan struct{}
	done      chan error
	mu        sync.Mutex
	converged []string
	answered  int
	silent    map[netip.Addr]bool
	dir       string
}

func startRun(t *testing.T, cfg Config) *runHarness { return startRunWith(t, cfg, nil) }

// startRunWith is startRun with the Runner changed by with before it runs.
func startRunWith(t *testing.T, cfg Config, with func(*Runner)) *runHarness {
	h := &runHarness{t: t, clock: &fakeClock{now: t0, idle: make(chan struct{})},
		links:  &fakeLinks{links: hostLinks(), changes: make(chan string), errs: make(chan error, 1)},
		prober: &fakeProber{answers: make(chan Answer)}, stop: make(chan struct{}), done: make(chan error, 1),
		silent: map[netip.Addr]bool{}, dir: t.TempDir()}
	r := &Runner{Config: cfg, Clock: h.clock, Links: h.links, Prober: h.prober, RunDir: h.dir,
		Groups: func() ([]parser.Group, error) { return []parser.Group{group()}, nil },
		Converge: func(why string) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.converged = append(h.converged, why)
			return nil
		},
		Stop: h.stop, Infof: t.Logf, Errorf: t.Logf}
	if with != nil {
		with(r)
	}
	go func() { h.done <- r.Run() }()
	h.idle()
	return h
}

func (h *runHarness) idle() {
	h.t.Helper()
	select {
	case <-h.clock.idle:
	case err := <-h.done:
		h.t.Fatalf("Run ended: %v", err)
	case <-time.After(5 * time.Second):
		h.t.Fatal("Run did not come back to its select")
	}
	h.answer()
}

// answer replies to every new probe whose gateway is not silent, one at a time.
func (h *runHarness) answer() {
	for {
		h.prober.mu.Lock()
		if h.answered == len(h.prober.sent) {
			h.prober.mu.Unlock()
			return
		}
		p := h.prober.sent[h.answered]
		h.answered++
		h.prober.mu.Unlock()
		if h.silent[p.Target.Gateway] {
			continue
		}
		h.prober.answers <- reply(p)
		h.idle()
		return
	}
}

// advance moves the clock by d, waking Run at every instant it waits for on the way.
func (h *runHarness) advance(d time.Duration) {
	h.t.Helper()
	end := h.clock.Now().Add(d)
	for {
		h.clock.mu.Lock()
		w := h.clock.wait[len(h.clock.wait)-1] // the select Run sits in
		if w.at.After(end) {
			h.clock.now = end
			h.clock.mu.Unlock()
			return
		}
		if w.at.After(h.clock.now) {
			h.clock.now = w.at
		}
		h.clock.wait = h.clock.wait[:0]
		h.clock.mu.Unlock()
		w.ch <- w.at
		h.idle()
	}
}

func (h *runHarness) convergences() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.converged)
}

// Run converges at start, after a debounced burst of link events, and when a probe verdict changes, with
// health.json written before each convergence; it ends on Stop, and with an error when the link
// subscription fails.
func TestRun(t *testing.T) {
	cfg := Config{Debounce: ms(50), Resync: time.Minute, ProbeInterval: ms(100), ProbeBudget: 1000, Misses: 3}
	h := startRun(t, cfg)
	if got := h.convergences(); !slices.Equal(got, []string{"start"}) {
		t.Fatalf("after start: %v", got)
	}
	h.advance(ms(500))

	h.links.changes <- "link eth1 down"
	h.idle()
	h.advance(ms(49))
	if got := h.convergences(); len(got) != 1 {
		t.Fatalf("converged before the debounce ran out: %v", got)
	}
	h.links.mu.Lock()
	h.links.links = carrier(hostLinks(), "eth1", false)
	h.links.mu.Unlock()
	h.advance(ms(1))
	if got := h.convergences(); !slices.Equal(got, []string{"start", "link eth1 down"}) {
		t.Fatalf("after the debounce: %v", got)
	}
	f, err := readFile(h.dir)
	if err != nil || f.Links["eth1"].State != plan.DownNoCarrier {
		t.Fatalf("health.json after the carrier loss: %+v %v", f, err)
	}
	h.links.mu.Lock()
	h.links.links = hostLinks()
	h.links.mu.Unlock()
	h.links.changes <- "link eth1 up"
	h.idle()
	h.advance(ms(100))

	// both gateways behind eth1 stop answering: three periods later eth1 is probe-failed
	h.silent[ip("10.0.1.20")], h.silent[ip("10.0.1.30")] = true, true
	h.advance(ms(450))
	got := h.convergences()
	if !slices.Contains(got, "gateway 10.0.1.30 on eth1 silent") {
		t.Fatalf("no convergence for the silent gateways: %v", got)
	}
	f, _ = readFile(h.dir)
	if f.Links["eth1"].State != plan.DownProbeFailed || len(f.Gateways) != 2 || f.Probes.Targets != 4 {
		t.Fatalf("health.json: %+v", f)
	}
	// one answer brings one gateway back (and eth1 with it, for that peer)
	delete(h.silent, ip("10.0.1.20"))
	h.advance(ms(150))
	f, _ = readFile(h.dir)
	if _, down := f.Links["eth1"]; down || len(f.Gateways) != 1 || f.Gateways[0].Gateway != ip("10.0.1.30") {
		t.Fatalf("health.json after 10.0.1.20 answered: %+v", f)
	}
	if got := h.convergences(); got[len(got)-1] != "gateway 10.0.1.20 on eth1 answers" {
		t.Errorf("last convergence %q", got[len(got)-1])
	}

	h.links.errs <- errors.New("netlink subscription: overrun")
	select {
	case err := <-h.done:
		if err == nil || !strings.Contains(err.Error(), "overrun") {
			t.Errorf("Run returned %v, want the subscription error", err)
		}
	case <-h.clock.idle:
		t.Fatal("Run went on after the subscription failed")
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end")
	}
}

// SIGHUP (Reload) converges at once; a configuration change is noticed at the next ChangedEvery tick and
// converges, an unchanged configuration does not.
func TestRunReloadAndChange(t *testing.T) {
	reload := make(chan struct{})
	var mu sync.Mutex
	changed, asked := false, 0
	h := startRunWith(t, Config{Debounce: ms(50), Resync: time.Minute}, func(r *Runner) {
		r.Reload = reload
		r.ChangedEvery = time.Second
		r.Changed = func() bool {
			mu.Lock()
			defer mu.Unlock()
			asked++
			c := changed
			changed = false
			return c
		}
	})
	if got := h.convergences(); !slices.Equal(got, []string{"start"}) {
		t.Fatalf("after start: %v", got)
	}
	reload <- struct{}{}
	h.idle()
	if got := h.convergences(); !slices.Equal(got, []string{"start", "reload"}) {
		t.Fatalf("after a reload: %v", got)
	}
	h.advance(ms(2500))
	mu.Lock()
	n := asked
	changed = true
	mu.Unlock()
	if n < 2 || n > 3 {
		t.Errorf("Changed asked %d times in 2.5 s, want one per second", n)
	}
	if got := h.convergences(); len(got) != 2 {
		t.Fatalf("converged without a change: %v", got)
	}
	h.advance(time.Second)
	if got := h.convergences(); !slices.Equal(got, []string{"start", "reload", "a configuration change"}) {
		t.Fatalf("after a change: %v", got)
	}
	close(h.stop)
	if err := <-h.done; err != nil {
		t.Errorf("Run returned %v on stop", err)
	}
}

func TestRunStop(t *testing.T) {
	h := startRun(t, Config{Debounce: ms(50), Resync: time.Minute})
	close(h.stop)
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Run returned %v on stop", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func readFile(dir string) (File, error) {
	var f File
	b, err := os.ReadFile(dir + "/" + HealthFile)
	if err != nil {
		return f, err
	}
	return f, json.Unmarshal(b, &f)
}
