// Package engine is the one path every entry point takes: read the configuration, snapshot the host's
// links, plan, and hand the plan to apply. The CLI and the hooks differ only in how they pick groups.
package engine

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/linkagg/linkagg-hooks/apply"
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
	// whenever a watcher runs on RunDir (see WatcherRunning), so every planner agrees with it.
	UseCarrier bool
}

// New makes an engine with the defaults, overridden by LINKAGG_INTERFACES, LINKAGG_CONFDIR, LINKAGG_RUNDIR.
func New(log *Logger) *Engine {
	e := &Engine{
		Load:  parser.LoadOptions{Interfaces: env("LINKAGG_INTERFACES", DefaultInterfaces), ConfDir: env("LINKAGG_CONFDIR", DefaultConfDir), CheckPerms: true},
		Apply: apply.Options{RunDir: env("LINKAGG_RUNDIR", DefaultRunDir)},
		Log:   log,
	}
	e.Apply.Logf = log.Infof
	// how long to wait for another run's lock: parallel hooks at boot queue behind each other
	if d, err := time.ParseDuration(os.Getenv("LINKAGG_LOCK_TIMEOUT")); err == nil && d > 0 {
		e.Apply.LockTimeout = d
	}
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

// Config reads every source.
func (e *Engine) Config() (*parser.Config, error) {
	cfg, err := parser.Load(e.Load)
	if err != nil {
		return nil, &ConfigError{err}
	}
	return cfg, nil
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

// Desired plans g against the links as they are now, with exclude planned as gone.
func (e *Engine) Desired(g *parser.Group, exclude []string) (plan.Desired, error) {
	links, err := apply.Links()
	if err != nil {
		return plan.Desired{}, err
	}
	d, err := plan.Build(plan.Input{Group: *g, Links: links, Exclude: exclude, Health: e.Health(links)})
	if err != nil {
		return plan.Desired{}, &ConfigError{err}
	}
	return d, nil
}

// Up converges the groups to their plans.
func (e *Engine) Up(groups []*parser.Group, exclude []string) error {
	var errs []error
	for _, g := range groups {
		d, err := e.Desired(g, exclude)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", g.ID(), err))
			continue
		}
		res, err := apply.Apply(d, e.Apply)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", conflictPos(g, err), g.ID(), err))
			continue
		}
		e.logResult(g.ID(), "up", d, res)
	}
	return errors.Join(errs...)
}

// Down removes what the groups own; keepTUN leaves the device for ifupdown's own down steps.
func (e *Engine) Down(groups []*parser.Group, keepTUN bool) error {
	var errs []error
	for _, g := range groups {
		d, err := plan.Build(plan.Input{Group: *g})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", g.ID(), err))
			continue
		}
		res, err := apply.Down(d, apply.DownOptions{Options: e.Apply, KeepTUN: keepTUN})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", g.ID(), err))
			continue
		}
		e.Log.Infof("%s: down, %d kernel writes", g.ID(), res.Writes)
	}
	return errors.Join(errs...)
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

// Handle acts on one hook event. ours says whether the event's own stanza carries our options: then a
// configuration error fails the event; for any other interface it is logged and the event succeeds, so a
// typo in our stanza never stops an unrelated NIC from coming up.
func (e *Engine) Handle(in hooks.Intent, ours bool) error {
	cfg, err := e.Config()
	if err != nil {
		if ours {
			return err
		}
		e.Log.Errorf("ignoring %s %s of %s: %v", in.Source, in.Phase, in.Iface, err)
		return nil
	}
	var own []*parser.Group
	for i := range cfg.Groups {
		g := &cfg.Groups[i]
		if g.Iface == in.Iface && (in.Family == 0 || g.Family == in.Family) {
			own = append(own, g)
		}
	}
	if len(own) > 0 {
		return e.handleGroup(in, own)
	}
	return e.handleMember(in, cfg)
}

func (e *Engine) handleGroup(in hooks.Intent, groups []*parser.Group) error {
	switch in.Phase {
	case hooks.PreUp:
		// foreign kernel state in the group's way fails ifup before ifupdown configures anything
		for _, g := range groups {
			d, err := e.Desired(g, nil)
			if err != nil {
				return fmt.Errorf("%s: %w", g.ID(), err)
			}
			if err := apply.Precheck(d); err != nil {
				return fmt.Errorf("%s: %s: %w", conflictPos(g, err), g.ID(), err)
			}
		}
		_, err := apply.EnsureTUN(plan.TUN{Name: groups[0].Iface}, e.Apply)
		return err
	case hooks.PostUp:
		return e.Up(groups, nil)
	case hooks.PreDown:
		return e.Down(groups, true)
	case hooks.PostDown:
		return e.Down(groups, false)
	}
	return nil
}

// handleMember re-plans every running group, of either family, when another interface comes or goes: its
// path joins or leaves the mark sequence. A group runs when its TUN exists and is administratively up; groups whose TUN
// is not up yet are left for their own if-up (boot order does not matter).
func (e *Engine) handleMember(in hooks.Intent, cfg *parser.Config) error {
	var exclude []string
	switch in.Phase {
	case hooks.PreUp:
		return nil
	case hooks.PreDown:
		exclude = []string{in.Iface}
	}
	var running []*parser.Group
	for i := range cfg.Groups {
		g := &cfg.Groups[i]
		if l, err := netlink.LinkByName(g.Iface); err == nil && l.Attrs().Flags&net.FlagUp != 0 {
			running = append(running, g)
		}
	}
	if len(running) == 0 {
		return nil
	}
	return e.Up(running, exclude)
}

// Health is what the planners count as down: links up without carrier when carrier counts (networkd, a
// watcher runs), read from links now, and the links a running watcher found passing no traffic.
func (e *Engine) Health(links []plan.Local) plan.Health {
	h := plan.Health{Links: map[string]plan.Down{}}
	watched := WatchState(e.Apply.RunDir)
	if e.UseCarrier || watched != nil || WatcherRunning(e.Apply.RunDir) {
		for _, l := range links {
			if l.Up && !l.Carrier {
				d := plan.Down{State: plan.DownNoCarrier, Since: time.Now()}
				if w, ok := watched[l.Name]; ok && w.State == plan.DownNoCarrier {
					d.Since = w.Since
				}
				h.Links[l.Name] = d
			}
		}
	}
	for name, w := range watched {
		if w.State == plan.DownProbeFailed {
			h.Links[name] = plan.Down{State: w.State, Since: w.Since}
		}
	}
	return h
}

// Running tells whether g's TUN is up (for status).
func Running(g *parser.Group) bool {
	l, err := netlink.LinkByName(g.Iface)
	return err == nil && l.Attrs().Flags&net.FlagUp != 0
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
