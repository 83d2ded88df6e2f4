package main

import (
	"fmt"
	"io"
	"time"

	"github.com/linkagg/linkagg-hooks/cmd/internal/engine"
	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// status prints, per group, its paths as planned now and the kernel objects present against the plan.
// drift is true when a running group's kernel state differs from its plan.
func status(e *engine.Engine, ids []string, w io.Writer) (drift bool, err error) {
	err = withGroups(e, ids, func(ev *engine.Event, gs []*parser.Group) error {
		for _, g := range gs {
			d, err := ev.Desired(g, nil)
			if err != nil {
				return fmt.Errorf("%s: %w", g.ID(), err)
			}
			if !ev.Running(g) {
				fmt.Fprintf(w, "%s: down (%s is not up)\n", g.ID(), g.Iface)
				continue
			}
			r, err := ev.S.Status(d)
			if err != nil {
				return fmt.Errorf("%s: %w", g.ID(), err)
			}
			fmt.Fprint(w, r.String())
			links := ev.Links
			for _, p := range d.Paths {
				l := plan.Holder(links, p.Own)
				switch {
				case p.State == plan.PathNoCarrier || p.State == plan.PathProbeFailed:
					fmt.Fprintf(w, "  path %d  table %d  weight %d  mark %#x  %s on %s: %s since %s (%s)\n", p.Index+1, p.Table, p.Weight, p.Mark, p.Own, p.Dev, p.State, p.Since.Format(time.RFC3339), p.Reason)
				case p.Active() && l != nil && !l.Carrier:
					// without a watcher on an ifupdown host nothing counts carrier: the path stays in the sequence
					fmt.Fprintf(w, "  path %d  table %d  weight %d  mark %#x  %s on %s: no-carrier (still active: no watcher counts carrier)\n", p.Index+1, p.Table, p.Weight, p.Mark, p.Own, l.Name)
				case p.Active():
					fmt.Fprintf(w, "  path %d  table %d  weight %d  mark %#x  %s on %s: up\n", p.Index+1, p.Table, p.Weight, p.Mark, p.Own, p.Dev)
				default:
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
		if len(ids) == 0 {
			o, err := ev.Orphans()
			if err != nil {
				return err
			}
			if !o.Empty() {
				fmt.Fprintf(w, "not configured, but linkagg's (linkagg apply removes them):\n")
				for _, l := range o.Lines {
					fmt.Fprintf(w, "  %s\n", l)
				}
				drift = true
			}
		}
		return nil
	})
	return drift, err
}
