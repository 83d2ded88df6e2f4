package main

import (
	"fmt"
	"io"

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
			for _, p := range d.Paths {
				if p.State == plan.PathActive {
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
