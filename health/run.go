package health

import (
	"errors"
	"net/netip"
	"time"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// Clock is time as Run sees it; tests replace it.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time                         { return time.Now() }
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// LinkSource is the host's links: a snapshot on demand, and a line per change (netlink link and address
// notifications). A value on Errors (an overrun socket lost events) ends Run.
type LinkSource interface {
	Snapshot() ([]plan.Local, error)
	Changes() <-chan string
	Errors() <-chan error
}

// Answer is one echo reply: its sequence number and payload nonce, who sent it and the link it arrived on.
type Answer struct {
	Seq   uint16
	Nonce uint64
	From  netip.Addr
	Link  string
}

// Prober sends echo requests and hands over the replies that carry its identifier.
type Prober interface {
	Send(p Probe) error
	Answers() <-chan Answer
}

// Runner is the watcher's loop: it feeds the Monitor with link changes, snapshots and answers, sends the
// probes it asks for, writes health.json and converges when it says so.
type Runner struct {
	Config   Config
	Clock    Clock
	Links    LinkSource
	Prober   Prober // nil: probes are off (ProbeOff says why)
	ProbeOff string
	RunDir   string
	// Groups reads the configuration again at every convergence (an admin may have edited it).
	Groups func() ([]parser.Group, error)
	// Converge re-plans every running group; the planners read health.json, written just before.
	Converge func(why string) error
	// Sample, if set, reads every running group's per-path byte counters each SampleEvery, for the share
	// drift check.
	Sample      func() ([]PathSample, error)
	SampleEvery time.Duration
	Drift       *Drift
	// Changed, if set, is asked every ChangedEvery whether the configuration changed (an admin's edit, a
	// broken file fixed); yes converges.
	Changed      func() bool
	ChangedEvery time.Duration
	// Reload (SIGHUP) converges now, reading the configuration again.
	Reload <-chan struct{}
	Ready  func() // called once, after the first convergence
	Stop   <-chan struct{}
	Infof  func(format string, a ...any)
	Errorf func(format string, a ...any)

	sampleErr string
}

// Run loops until Stop is closed (nil error) or the link source fails.
func (r *Runner) Run() error {
	m := NewMonitor(r.Config, r.Clock.Now())
	if r.Prober == nil {
		m.cfg.ProbeInterval = 0
	}
	var answers <-chan Answer
	if r.Prober != nil {
		answers = r.Prober.Answers()
	}
	saved := ""
	save := func(now time.Time) {
		f := FileOf(m, now, r.ProbeOff, r.Drift.Flags())
		f.Updated = time.Time{}
		key := mustJSON(f) // rewrite only on a change of a verdict (or at resync)
		if key == saved {
			return
		}
		f.Updated = now.UTC()
		if err := Save(r.RunDir, f); err != nil {
			r.Errorf("saving %s: %v", HealthFile, err)
			return
		}
		saved = key
	}
	converge := func(now time.Time, why string) {
		groups, err := r.Groups()
		if err != nil {
			// a bad configuration is logged and retried at the next event or resync: the daemon must
			// outlive an admin's half-edited file
			r.Errorf("converge after %s: %v", why, err)
			return
		}
		links, err := r.Links.Snapshot()
		if err != nil {
			r.Errorf("converge after %s: %v", why, err)
			return
		}
		m.Observe(now, groups, links)
		m.convergeAt, m.why = time.Time{}, "" // this convergence already sees what Observe found
		r.log(m.Step(now).Events)
		if why == "resync" {
			saved = ""
		}
		save(now)
		start := r.Clock.Now()
		if err := r.Converge(why); err != nil {
			r.Errorf("converge after %s: %v", why, err)
			return
		}
		r.Infof("converged after %s in %s", why, r.Clock.Now().Sub(start).Round(time.Millisecond))
	}
	sendFailed := map[string]bool{}
	ready := false
	var nextSample, nextChanged time.Time
	for {
		now := r.Clock.Now()
		a := m.Step(now)
		r.log(a.Events)
		for _, p := range a.Probes {
			err := r.Prober.Send(p)
			if err != nil && !sendFailed[p.Target.Link] {
				r.Errorf("probe of %s on %s: %v", p.Target.Gateway, p.Target.Link, err)
			}
			sendFailed[p.Target.Link] = err != nil
		}
		if a.Converge != "" {
			converge(now, a.Converge)
			if !ready && r.Ready != nil {
				r.Ready()
			}
			ready = true
		} else if len(a.Events) > 0 {
			save(now)
		}
		if r.Sample != nil && !now.Before(nextSample) {
			nextSample = now.Add(r.SampleEvery)
			r.sample(now)
			save(now)
		}
		if r.Changed != nil && ready && !now.Before(nextChanged) {
			nextChanged = now.Add(r.ChangedEvery)
			if r.Changed() {
				converge(now, "a configuration change")
			}
		}
		next := m.Next()
		if r.Sample != nil && nextSample.Before(next) {
			next = nextSample
		}
		if r.Changed != nil && ready && nextChanged.Before(next) {
			next = nextChanged
		}
		wait := next.Sub(r.Clock.Now())
		if wait < 0 {
			wait = 0
		}
		select {
		case what, ok := <-r.Links.Changes():
			if !ok {
				return errors.New("link subscription closed")
			}
			m.LinkEvent(r.Clock.Now(), what)
		case ans := <-answers:
			m.Answer(r.Clock.Now(), ans)
		case err := <-r.Links.Errors():
			// an overrun socket has lost events: exit, and systemd restarts us with a full convergence
			return err
		case <-r.Reload:
			r.Infof("reloading on SIGHUP")
			converge(r.Clock.Now(), "reload")
		case <-r.Clock.After(wait):
		case <-r.Stop:
			return nil
		}
	}
}

func (r *Runner) log(evs []Event) {
	for _, ev := range evs {
		if ev.Down {
			r.Errorf("%s", ev.Text)
		} else {
			r.Infof("%s", ev.Text)
		}
	}
}

func (r *Runner) sample(now time.Time) {
	s, err := r.Sample()
	if err != nil {
		if err.Error() != r.sampleErr { // once per distinct error, not every second
			r.Errorf("reading path counters: %v", err)
		}
		r.sampleErr = err.Error()
		return
	}
	r.sampleErr = ""
	for _, f := range r.Drift.Observe(now, s) {
		if f.Cleared {
			r.Infof("%s path %d: share back near its weight (%.2f of the bytes, weight share %.2f)", f.Group, f.Path, f.Share, f.WeightShare)
		} else {
			r.Errorf("%s path %d: carries %.2f of the group's bytes for %s, its weight says %.2f (a link slower than configured?)", f.Group, f.Path, f.Share, r.Drift.window(), f.WeightShare)
		}
	}
}
