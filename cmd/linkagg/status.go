package main

import (
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/linkagg/linkagg-hooks/apply"
	"github.com/linkagg/linkagg-hooks/cmd/internal/engine"
	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// status prints, per group, its paths as planned now and the kernel objects present against the plan.
// drift is true when a running group's kernel state differs from its plan.
func status(e *engine.Engine, ids []string, w io.Writer) (drift bool, err error) {
	err = withGroups(e, ids, func(gs []*parser.Group) error {
		for _, g := range gs {
			d, err := e.Desired(g, nil)
			if err != nil {
				return fmt.Errorf("%s: %w", g.ID(), err)
			}
			if !engine.Running(g) {
				fmt.Fprintf(w, "%s: down (%s is not up)\n", g.ID(), g.Iface)
				continue
			}
			r, err := apply.Status(d)
			if err != nil {
				return fmt.Errorf("%s: %w", g.ID(), err)
			}
			fmt.Fprint(w, r.String())
			links, err := apply.Links()
			if err != nil {
				return fmt.Errorf("%s: %w", g.ID(), err)
			}
			watched := engine.WatchState(e.Apply.RunDir)
			for _, p := range d.Paths {
				l := linkOf(links, p.Own)
				if ws, ok := watched[linkName(l)]; ok {
					// the watcher took it out: carrier lost, or its gateway stopped answering probes
					fmt.Fprintf(w, "  path %d  table %d  weight %d  mark %#x  %s on %s: %s since %s (%s)\n", p.Index+1, p.Table, p.Weight, p.Mark, p.Own, l.Name, ws.State, ws.Since.Format(time.RFC3339), p.State)
				} else if l != nil && l.Up && !l.Carrier {
					// planned out (networkd) or, without a watcher on an ifupdown host, still in the sequence
					fmt.Fprintf(w, "  path %d  table %d  weight %d  mark %#x  %s on %s: no-carrier (%s)\n", p.Index+1, p.Table, p.Weight, p.Mark, p.Own, l.Name, p.State)
				} else if p.State == plan.PathActive {
					fmt.Fprintf(w, "  path %d  table %d  weight %d  mark %#x  %s on %s: up\n", p.Index+1, p.Table, p.Weight, p.Mark, p.Own, p.Dev)
				} else {
					fmt.Fprintf(w, "  path %d  table %d  weight %d  mark %#x  %s: pending (%s)\n", p.Index+1, p.Table, p.Weight, p.Mark, p.Own, p.Reason)
				}
			}
			if r.Converged {
				fmt.Fprintf(w, "  state: converged\n")
			} else {
				fmt.Fprintf(w, "  state: DRIFT (%d differences; linkagg apply %s converges)\n", len(r.Drift), g.Iface)
				drift = true
			}
		}
		return nil
	})
	return drift, err
}

// linkOf is the link holding address a, or nil.
func linkOf(links []plan.Local, a netip.Addr) *plan.Local {
	for i := range links {
		for _, p := range links[i].Addrs {
			if p.Addr() == a {
				return &links[i]
			}
		}
	}
	return nil
}

func linkName(l *plan.Local) string {
	if l == nil {
		return ""
	}
	return l.Name
}
