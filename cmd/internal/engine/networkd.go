package engine

import (
	"slices"

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
			e.OwnEvent.Store(true)
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
		e.doing("releasing the packets queued on %s", l.Name)
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
