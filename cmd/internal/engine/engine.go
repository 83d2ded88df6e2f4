// Package engine is the one path every entry point takes: open the event's session (the lock), read the
// configuration, snapshot the host's links, plan, and hand the plan to apply — all under that one session,
// so a run that waited for another plans from what that run left. The CLI and the hooks differ only in how
// they pick groups.
package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkagg/linkagg-hooks/apply"
	"github.com/linkagg/linkagg-hooks/health"
	"github.com/linkagg/linkagg-hooks/hooks"
	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// Defaults of the configuration and state locations; the environment overrides them for the hooks, which
// get no flags.
const (
	DefaultInterfaces = "/etc/network/interfaces"
	DefaultConfDir    = "/etc/linkagg"
	DefaultRunDir     = "/run/linkagg"
)

// Engine carries where to read and how to apply.
type Engine struct {
	Load  parser.LoadOptions
	Apply apply.Options
	Log   *Logger
	// UseCarrier plans links without carrier as down (networkd hosts, `linkagg watch`); it is also in force
	// whenever a watcher runs on RunDir (health.WatcherRunning), so every planner agrees with it.
	UseCarrier bool
	// Timeout bounds a hook run or CLI write command (Watchdog); LINKAGG_TIMEOUT, default DefaultTimeout.
	Timeout time.Duration
	// OwnEvent is set once the event turns out to be a group's own (networkd: the event of its TUN).
	OwnEvent atomic.Bool

	// KeepLastGood (`linkagg watch`): when the configuration stops validating (an admin's half-written
	// drop-in), Config logs why once and goes on with the last configuration that validated, so failover
	// never waits for the admin to finish typing.
	KeepLastGood bool

	defaults map[string]string      // DefaultsFile
	stage    atomic.Pointer[string] // what the event is doing, for the watchdog
	cfgMu    sync.Mutex
	lastGood *parser.Config // KeepLastGood: the last configuration that validated
	badCfg   string         // KeepLastGood: the error logged for the configuration on disk, "" while it validates
}

// New makes an engine with the defaults, overridden by LINKAGG_INTERFACES, LINKAGG_CONFDIR, LINKAGG_RUNDIR
// and LINKAGG_BPFFS (where mptcp-transparent pins its program; default /sys/fs/bpf).
func New(log *Logger) *Engine {
	e := &Engine{
		Load:  parser.LoadOptions{Interfaces: env("LINKAGG_INTERFACES", DefaultInterfaces), ConfDir: env("LINKAGG_CONFDIR", DefaultConfDir), CheckPerms: true},
		Apply: apply.Options{RunDir: env("LINKAGG_RUNDIR", DefaultRunDir), BPFFS: env("LINKAGG_BPFFS", apply.DefaultBPFFS)},
		Log:   log,
	}
	e.Apply.Logf = log.Infof
	e.defaults = settings(DefaultsFile, log.Errorf)
	// how long to wait for another run's lock: parallel hooks at boot queue behind each other
	e.Apply.LockTimeout = e.duration("LINKAGG_LOCK_TIMEOUT", apply.DefaultLockTimeout)
	e.Timeout = e.duration("LINKAGG_TIMEOUT", DefaultTimeout)
	// a host without ifupdown (systemd-networkd) has no interfaces file: the TOML drop-ins are the only
	// source there. A file named explicitly must still exist.
	if _, err := os.Stat(DefaultInterfaces); e.Load.Interfaces == DefaultInterfaces && errors.Is(err, os.ErrNotExist) {
		e.Load.Interfaces = ""
	}
	return e
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// ConfigError marks errors in the configuration (exit status 1), as opposed to kernel errors.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// sources names where the configuration is read from, for messages.
func (e *Engine) sources() string {
	var s []string
	if e.Load.Interfaces != "" {
		s = append(s, e.Load.Interfaces)
	}
	if e.Load.ConfDir != "" {
		s = append(s, filepath.Join(e.Load.ConfDir, "*.toml"))
	}
	return strings.Join(s, " and ")
}

// Config reads every source. With KeepLastGood a configuration that does not validate is logged (once
// per distinct error) and the last one that did is returned instead.
func (e *Engine) Config() (*parser.Config, error) {
	cfg, err := parser.Load(e.Load)
	if !e.KeepLastGood {
		if err != nil {
			return nil, &ConfigError{err}
		}
		return cfg, nil
	}
	e.cfgMu.Lock()
	defer e.cfgMu.Unlock()
	if err != nil {
		if e.lastGood == nil {
			return nil, &ConfigError{err}
		}
		if msg := err.Error(); msg != e.badCfg {
			e.badCfg = msg
			e.Log.Errorf("%v: going on with the last configuration that validated until this is fixed", err)
		}
		return e.lastGood, nil
	}
	if e.badCfg != "" {
		e.badCfg = ""
		e.Log.Infof("the configuration validates again")
	}
	e.lastGood = cfg
	return cfg, nil
}

// ConfigChanged reads the configuration (as Config does) and says whether it now differs from the one the
// previous read found: a watcher converges on an admin's edit without waiting for its resync. False while
// the configuration does not validate (the last good one stays) and before any configuration validated.
func (e *Engine) ConfigChanged() bool {
	e.cfgMu.Lock()
	prev := e.lastGood
	e.cfgMu.Unlock()
	cfg, err := e.Config()
	return err == nil && prev != nil && cfg != prev && !reflect.DeepEqual(cfg.Groups, prev.Groups)
}

// Event is one event's view of the host, valid while its session is open.
type Event struct {
	e     *Engine
	S     *apply.Session
	Cfg   *parser.Config
	Links []plan.Local // the snapshot every plan of the event uses
}

// options are the apply options of this event. The lock wait has its own bound (LINKAGG_LOCK_TIMEOUT);
// the watchdog's deadline ends the run if that is longer.
func (e *Engine) options() apply.Options { return e.Apply }

// Run opens the event's session (readOnly: no lock, no write, for status and plan), reads the
// configuration and the links under it, and calls f.
func (e *Engine) Run(readOnly bool, f func(ev *Event) error) error {
	open := apply.Open
	e.doing("waiting for the lock %s", filepath.Join(e.Apply.RunDir, "lock"))
	if readOnly {
		open = apply.OpenReadOnly
		e.doing("opening %s", e.Apply.RunDir)
	}
	s, err := open(e.options())
	if err != nil {
		return err
	}
	defer s.Close()
	e.doing("reading the configuration")
	cfg, err := e.Config()
	if err != nil {
		return err
	}
	e.doing("reading the links")
	links, err := s.Links()
	if err != nil {
		return err
	}
	return f(&Event{e: e, S: s, Cfg: cfg, Links: links})
}

// Select returns the groups named by ids ("tun0", "tun0/inet6"; a bare iface name also selects its inet6
// group), or all groups when ids is empty.
func Select(cfg *parser.Config, ids []string) ([]*parser.Group, error) {
	if len(ids) == 0 {
		var all []*parser.Group
		for i := range cfg.Groups {
			all = append(all, &cfg.Groups[i])
		}
		return all, nil
	}
	var out []*parser.Group
	for _, id := range ids {
		n := len(out)
		for i := range cfg.Groups {
			g := &cfg.Groups[i]
			if g.ID() == id || g.Iface == id {
				out = append(out, g)
			}
		}
		if len(out) == n {
			return nil, &ConfigError{fmt.Errorf("no group %q in the configuration", id)}
		}
	}
	return out, nil
}

// Desired plans g against the event's links, with exclude planned as gone.
func (ev *Event) Desired(g *parser.Group, exclude []string) (plan.Desired, error) {
	e := ev.e
	d, err := plan.Build(plan.Input{Group: *g, Links: ev.Links, Exclude: exclude, Health: e.Health(ev.Links)})
	var pe *parser.Error
	if err != nil && !errors.As(err, &pe) {
		err = fmt.Errorf("%s: %w", g.ID(), err) // a parser.Error names its file:line and the group already
	}
	if err != nil {
		return plan.Desired{}, &ConfigError{err}
	}
	return d, nil
}

// Running tells whether g's TUN is up in the event's snapshot: a group whose TUN is down or gone was
// stopped by ifupdown, networkd or the admin, and only its own event brings it back.
func (ev *Event) Running(g *parser.Group) bool { return plan.Running(ev.Links, g.Iface) }

// RunningGroups are the configured groups whose TUN is up.
func (ev *Event) RunningGroups() []*parser.Group {
	var out []*parser.Group
	for i := range ev.Cfg.Groups {
		if ev.Running(&ev.Cfg.Groups[i]) {
			out = append(out, &ev.Cfg.Groups[i])
		}
	}
	return out
}

// Up converges the groups to their plans.
func (ev *Event) Up(groups []*parser.Group, exclude []string) error {
	var errs []error
	for _, g := range groups {
		ev.e.doing("planning %s", g.ID())
		d, err := ev.Desired(g, exclude)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ev.e.doing("applying %s", g.ID())
		res, err := ev.S.Apply(d)
		if errors.Is(err, apply.ErrStopped) {
			// an event planned while the TUN was up, applied after the admin took it down: the stop wins
			ev.e.Log.Infof("%s: %s stopped while this event was planned; leaving it to its down event", g.ID(), g.Iface)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", conflictPos(g, err), g.ID(), err))
			continue
		}
		ev.e.logResult(g.ID(), "up", d, res)
	}
	return errors.Join(errs...)
}

// Down removes what the groups own; keepTUN leaves the device for ifupdown's own down steps.
func (ev *Event) Down(groups []*parser.Group, keepTUN bool) error {
	var errs []error
	for _, g := range groups {
		d, err := plan.Build(plan.Input{Group: *g})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", g.ID(), err))
			continue
		}
		ev.e.doing("taking %s down", g.ID())
		res, err := ev.S.Down(d, keepTUN)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", g.ID(), err))
			continue
		}
		ev.e.Log.Infof("%s: down, %d kernel writes", g.ID(), res.Writes)
	}
	return errors.Join(errs...)
}

// Unconfigured is the minimal plan of a group that is in no configuration any more: its ID and TUN, so
// that Down finds the rest through the group's footprint and the kernel's tags.
func Unconfigured(id string) plan.Desired {
	iface, fam, _ := strings.Cut(id, "/")
	d := plan.Desired{Group: id, Family: parser.Inet, TUN: plan.TUN{Name: iface}}
	if fam == "inet6" {
		d.Family = parser.Inet6
	}
	return d
}

// DownOrphan removes a group known only from its footprint or the kernel's tags. The TUN stays when a
// configured group of the other family uses it.
func (ev *Event) DownOrphan(id string) error {
	d := Unconfigured(id)
	keep := slices.ContainsFunc(ev.Cfg.Groups, func(g parser.Group) bool { return g.Iface == d.TUN.Name })
	var claimed []int // a renamed stanza's tables belong to the group that has them now
	for _, g := range ev.Cfg.Groups {
		claimed = append(claimed, g.Tables...)
	}
	ev.e.doing("removing %s (no longer configured)", id)
	res, err := ev.S.DownExcept(d, keep, claimed)
	if err != nil {
		return err
	}
	ev.e.Log.Infof("%s: removed (no longer configured), %d kernel writes", id, res.Writes)
	return nil
}

// Orphans lists what of ours no configured group claims.
func (ev *Event) Orphans() (apply.Orphans, error) {
	var ds []plan.Desired
	for i := range ev.Cfg.Groups {
		d, err := plan.Build(plan.Input{Group: ev.Cfg.Groups[i]})
		if err != nil {
			return apply.Orphans{}, &ConfigError{err}
		}
		ds = append(ds, d)
	}
	return ev.S.Orphans(ds)
}

// RemoveOrphans takes down every group that is no longer configured and then what of ours is left that
// no group claims.
func (ev *Event) RemoveOrphans() error {
	o, err := ev.Orphans()
	if err != nil || o.Empty() {
		return err
	}
	var errs []error
	for _, id := range o.Groups {
		if err := ev.DownOrphan(id); err != nil {
			errs = append(errs, err)
		}
	}
	if o, err = ev.Orphans(); err != nil {
		return errors.Join(append(errs, err)...)
	}
	ev.e.doing("removing what no configured group claims")
	res, err := ev.S.RemoveOrphans(o)
	if res.Writes > 0 {
		ev.e.Log.Infof("removed %d objects of linkagg that no configured group claims", res.Writes)
	}
	return errors.Join(append(errs, err)...)
}

func (e *Engine) logResult(id, what string, d plan.Desired, res apply.Result) {
	active := 0
	for _, p := range d.Paths {
		if p.Active() {
			active++
		}
	}
	e.Log.Infof("%s: %s, %d of %d paths active, %d kernel writes", id, what, active, len(d.Paths), res.Writes)
	for _, op := range res.Ops {
		e.Log.Infof("%s:   %s", id, op)
	}
}

// Apply is `linkagg apply [GROUP…]`: converge the named groups, or all of them and remove what of ours no
// configured group claims any more.
func (e *Engine) ApplyGroups(ids []string) error {
	return e.Run(false, func(ev *Event) error {
		gs, err := Select(ev.Cfg, ids)
		if err != nil {
			return err
		}
		// what no configured group claims goes first: a renamed stanza's old group may hold what the new one
		// needs (its fakenet route, its tables)
		if len(ids) == 0 {
			err = ev.RemoveOrphans()
			// and the groups plan from what is left (the old group's TUN and its VIP are gone)
			if links, lerr := ev.S.Links(); lerr != nil {
				err = errors.Join(err, lerr)
			} else {
				ev.Links = links
			}
		}
		return errors.Join(err, ev.Up(gs, nil))
	})
}

// DownGroups is `linkagg down [GROUP…]`: a group that is not configured is still taken down when its
// footprint or the kernel's tags know it.
func (e *Engine) DownGroups(ids []string) error {
	return e.Run(false, func(ev *Event) error {
		var configured, unknown []string
		for _, id := range ids {
			if slices.ContainsFunc(ev.Cfg.Groups, func(g parser.Group) bool { return g.ID() == id || g.Iface == id }) {
				configured = append(configured, id)
			} else {
				unknown = append(unknown, id)
			}
		}
		var gs []*parser.Group
		if len(ids) == 0 || len(configured) > 0 {
			var err error
			if gs, err = Select(ev.Cfg, configured); err != nil {
				return err
			}
		}
		err := ev.Down(gs, false)
		if len(unknown) == 0 {
			return err
		}
		o, oerr := ev.Orphans()
		if oerr != nil {
			return errors.Join(err, oerr)
		}
		for _, id := range unknown {
			var ids []string
			for _, g := range o.Groups {
				if g == id || strings.TrimSuffix(g, "/inet6") == id {
					ids = append(ids, g)
				}
			}
			if len(ids) == 0 {
				err = errors.Join(err, &ConfigError{fmt.Errorf("no group %q in the configuration, and nothing of it in the kernel or in %s", id, e.Apply.RunDir)})
			}
			for _, g := range ids {
				err = errors.Join(err, ev.DownOrphan(g))
			}
		}
		return err
	})
}

// Handle acts on one hook event. ours says whether the event's own stanza carries our options: then a
// configuration error fails the event; for any other interface it is logged and the event succeeds, so a
// typo in our stanza never stops an unrelated NIC from coming up.
func (e *Engine) Handle(in hooks.Intent, ours bool) error {
	err := e.Run(false, func(ev *Event) error {
		if st := in.Stanza; st != nil && (in.Phase == hooks.PreUp || in.Phase == hooks.PostUp) {
			if msg := st.Mismatch(in.Iface, in.Family, ev.Cfg.Groups, e.sources()); msg != "" {
				return &ConfigError{errors.New(msg)}
			}
		}
		var own []*parser.Group
		for i := range ev.Cfg.Groups {
			g := &ev.Cfg.Groups[i]
			if g.Iface == in.Iface && (in.Family == 0 || g.Family == in.Family) {
				own = append(own, g)
			}
		}
		if len(own) > 0 {
			return ev.handleGroup(in, own)
		}
		return ev.handleMember(in)
	})
	var ce *ConfigError
	if err != nil && !ours && errors.As(err, &ce) {
		e.Log.Errorf("ignoring %s %s of %s: %v", in.Source, in.Phase, in.Iface, err)
		return nil
	}
	return err
}

func (ev *Event) handleGroup(in hooks.Intent, groups []*parser.Group) error {
	switch in.Phase {
	case hooks.PreUp:
		// foreign kernel state in the group's way fails ifup before ifupdown configures anything
		for _, g := range groups {
			d, err := ev.Desired(g, nil)
			if err != nil {
				return err
			}
			ev.e.doing("checking %s against the kernel", g.ID())
			if err := ev.S.Precheck(d); err != nil {
				return fmt.Errorf("%s: %s: %w", conflictPos(g, err), g.ID(), err)
			}
		}
		ev.e.doing("creating the TUN %s", groups[0].Iface)
		_, err := ev.S.EnsureTUN(plan.TUN{Name: groups[0].Iface})
		return err
	case hooks.PostUp:
		return ev.Up(groups, nil)
	case hooks.PreDown:
		return ev.Down(groups, true)
	case hooks.PostDown:
		return ev.Down(groups, false)
	}
	return nil
}

// handleMember re-plans every running group, of either family, when another interface comes or goes: its
// path joins or leaves the mark sequence. Groups whose TUN is not up yet are left for their own if-up
// (boot order does not matter).
func (ev *Event) handleMember(in hooks.Intent) error {
	var exclude []string
	switch in.Phase {
	case hooks.PreUp:
		return nil
	case hooks.PreDown:
		exclude = []string{in.Iface}
	}
	running := ev.RunningGroups()
	if len(running) == 0 {
		return nil
	}
	return ev.Up(running, exclude)
}

// Health is what the planners count as down (package health): links up without carrier when carrier counts
// (networkd, or a watcher runs), and a live watcher's probe verdicts.
func (e *Engine) Health(links []plan.Local) plan.Health {
	return health.Current(e.Apply.RunDir, links, e.UseCarrier, time.Now())
}

// IDs lists group IDs, for messages.
func IDs(gs []*parser.Group) []string {
	var out []string
	for _, g := range gs {
		out = append(out, g.ID())
	}
	slices.Sort(out)
	return out
}

// conflictPos is where in the configuration an apply error points: the option a conflict with foreign
// kernel state is about, else the group's stanza (so every error of ifup names a file:line).
func conflictPos(g *parser.Group, err error) parser.Pos {
	var ce *apply.ConflictError
	if errors.As(err, &ce) && ce.Option != "" {
		for _, opt := range []string{ce.Option, "fwmark", "table"} {
			if p, ok := g.OptPos[opt]; ok && (opt != "fwmark" || ce.Option == "fwmark-mask") {
				return p
			}
		}
	}
	return g.Pos
}

// Links is a snapshot of the host's links through a read-only session (no lock), for the watcher.
func (e *Engine) Links() ([]plan.Local, error) {
	s, err := apply.OpenReadOnly(e.options())
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Links()
}
