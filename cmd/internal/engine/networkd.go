package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/linkagg/linkagg-hooks/hooks"
	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// HandleNetworkd acts on one networkd-dispatcher event. networkd reports carrier, so plans here count a
// link without carrier as down. The dispatcher runs its scripts one after another, so by the time ours
// runs the state it names may be stale: every decision reads the kernel again, and the event's state only
// decides whether the interface is planned as leaving.
//
//   - the event of a group's TUN: off with the TUN down or gone tears the group down (the admin stopped it:
//     `networkctl down tun0`, `ip link set tun0 down`); any other state converges it (routable, and
//     no-carrier, the normal state of a TUN no process holds open).
//   - the event of any other interface: up-ish starts every group that has its own address on that link
//     and whose TUN does not exist yet (on a networkd host nothing else creates it unless a .netdev does),
//     and re-plans every running group, which also restores routes a `networkctl reconfigure` deleted;
//     down-ish re-plans running groups with that interface excluded, so its path leaves the mark sequence.
func (e *Engine) HandleNetworkd(ev hooks.NetworkdEvent) error {
	e.UseCarrier = true
	return e.Run(false, func(r *Event) error {
		var own []*parser.Group
		for i := range r.Cfg.Groups {
			if r.Cfg.Groups[i].Iface == ev.Iface {
				own = append(own, &r.Cfg.Groups[i])
			}
		}
		if len(own) > 0 {
			up := r.Running(own[0])
			if ev.State == "off" && !up {
				return r.Down(own, false)
			}
			if !up {
				return nil // a stale up-ish event of a TUN that is down now: its off event follows
			}
			return r.Up(own, nil)
		}

		var exclude []string
		if !ev.Up() {
			exclude = []string{ev.Iface}
		}
		var groups []*parser.Group
		for i := range r.Cfg.Groups {
			g := &r.Cfg.Groups[i]
			switch {
			case r.Running(g):
				groups = append(groups, g)
			case ev.Up() && !r.hasLink(g.Iface) && r.member(g, ev):
				e.Log.Infof("%s: starting, member %s is %s", g.ID(), ev.Iface, ev.State)
				groups = append(groups, g)
			}
		}
		if len(groups) == 0 {
			return nil
		}
		err := r.Up(groups, exclude)
		r.releaseDead(groups, exclude)
		return err
	})
}

// releaseDead frees the packets queued on member links that lost their carrier (or are leaving), once
// their paths are out of the sequence: see apply.ReleaseQueued for why a flow would stall otherwise.
func (r *Event) releaseDead(groups []*parser.Group, exclude []string) {
	e := r.e
	links, err := r.S.Links()
	if err != nil {
		e.Log.Errorf("listing links: %v", err)
		return
	}
	for _, l := range links {
		if !slices.Contains(exclude, l.Name) && (!l.Up || l.Carrier) {
			continue
		}
		member := false
		for _, g := range groups {
			for _, a := range l.Addrs {
				member = member || slices.Contains(g.Own, a.Addr())
			}
		}
		if !member {
			continue
		}
		if n, err := r.S.ReleaseQueued(l.Name); err != nil {
			e.Log.Errorf("%v", err)
		} else if n > 0 {
			e.Log.Infof("%s: released %d unresolved neighbour entries (and the packets queued on them)", l.Name, n)
		}
	}
}

// member tells whether the event's link holds one of g's own path addresses, by the dispatcher's list or
// by the kernel (the list is empty in some states).
func (r *Event) member(g *parser.Group, ev hooks.NetworkdEvent) bool {
	for _, own := range g.Own {
		for _, a := range ev.Addrs {
			if a == own {
				return true
			}
		}
	}
	d, err := r.Desired(g, nil)
	if err != nil {
		return false
	}
	for _, p := range d.Paths {
		if p.Dev == ev.Iface {
			return true
		}
	}
	return false
}

func (r *Event) hasLink(name string) bool {
	return slices.ContainsFunc(r.Links, func(l plan.Local) bool { return l.Name == name })
}

// Converge re-plans every running group against the links as they are now (for `linkagg watch`).
func (e *Engine) Converge() error {
	return e.Run(false, func(r *Event) error {
		gs := r.RunningGroups()
		if len(gs) == 0 {
			return nil
		}
		err := r.Up(gs, nil)
		r.releaseDead(gs, nil)
		return err
	})
}

// watchPIDFile, under RunDir, names the running `linkagg watch`. While it lives, every planner on this host
// counts carrier (Desired), so an ifupdown hook never puts back a path the watcher took out for lost carrier:
// without a watcher nothing would put it back when the carrier returns, which is why carrier is otherwise
// ignored.
const watchPIDFile = "watch.pid"

// WatcherRunning tells whether a `linkagg watch` holds runDir.
func WatcherRunning(runDir string) bool {
	b, err := os.ReadFile(filepath.Join(runDir, watchPIDFile))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ClaimWatcher records this process as the watcher of RunDir; release removes the record. A second live
// watcher is refused: two would converge the same groups twice per event.
func (e *Engine) ClaimWatcher() (release func(), err error) {
	dir := e.Apply.RunDir
	if WatcherRunning(dir) {
		return nil, fmt.Errorf("another linkagg watch is running (%s)", filepath.Join(dir, watchPIDFile))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, watchPIDFile)
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, err
	}
	return func() { os.Remove(path) }, nil
}

// LinkState is what a watcher knows about a member link that is out of the plan, and since when.
type LinkState struct {
	State string    `json:"state"` // "no-carrier" or "probe-failed"
	Since time.Time `json:"since"`
}

// watchStateFile, under RunDir, holds the member links a watcher sees out: status shows them with their
// time, and a link whose gateway probe failed is planned as absent by every planner while the watcher lives
// (its carrier is up, so only the watcher knows).
const watchStateFile = "watch-state.json"

// WatchState reads the watcher's view; empty when no watcher runs.
func WatchState(runDir string) map[string]LinkState {
	if !WatcherRunning(runDir) {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(runDir, watchStateFile))
	if err != nil {
		return nil
	}
	var m map[string]LinkState
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

// SaveWatchState writes the watcher's view atomically; an empty one removes the file.
func SaveWatchState(runDir string, m map[string]LinkState) error {
	path := filepath.Join(runDir, watchStateFile)
	if len(m) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// ProbeFailed lists the links a running watcher found passing no traffic.
func ProbeFailed(runDir string) []string {
	var out []string
	for name, st := range WatchState(runDir) {
		if st.State == "probe-failed" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
