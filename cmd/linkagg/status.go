package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/cmd/internal/engine"
	"github.com/linkagg/linkagg-hooks/cmd/internal/status"
	"github.com/linkagg/linkagg-hooks/health"
)

// statusOutput is how `linkagg status` prints.
type statusOutput struct {
	json, prometheus bool
	watch            time.Duration // > 0: redraw every watch until SIGINT/SIGTERM
}

// statusCmd prints the groups' status once; drift is true when a running group's kernel state differs from
// its plan (exit status 4).
func statusCmd(e *engine.Engine, ids []string, out statusOutput, stdout io.Writer) (drift bool, err error) {
	if out.watch > 0 {
		return false, watchStatus(e, ids, out.watch, stdout)
	}
	r, err := status.Gather(e, ids, time.Now())
	if err != nil {
		return false, err
	}
	switch {
	case out.json:
		err = status.JSON(stdout, r)
	case out.prometheus:
		status.Prometheus(stdout, r)
	default:
		status.Text(stdout, r)
	}
	return r.Drifting(), err
}

// watchStatus redraws per-path rates every interval, like bmon or ifstat, until Ctrl-C (SIGINT) or SIGTERM
// ends it with exit status 0. It flags a path whose share stays far from its weight, as the watcher does.
func watchStatus(e *engine.Engine, ids []string, interval time.Duration, stdout io.Writer) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	tty := isTerminal(stdout)
	clear := func() {
		if tty {
			fmt.Fprint(stdout, "\033[H\033[2J")
		} else {
			fmt.Fprintln(stdout)
		}
	}
	drift := health.NewDrift()
	prev, err := status.Gather(e, ids, time.Now())
	if err != nil {
		return err
	}
	drift.Observe(prev.Time, status.Samples(prev))
	clear()
	status.Frame(stdout, prev, prev, interval, nil)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-sigs:
			if tty {
				fmt.Fprintln(stdout)
			}
			return nil
		case <-tick.C:
		}
		cur, err := status.Gather(e, ids, time.Now())
		if err != nil {
			// a configuration being edited, a group going down: say so and keep watching
			clear()
			fmt.Fprintf(stdout, "linkagg status --watch %s: %v\n", interval, err)
			continue
		}
		drift.Observe(cur.Time, status.Samples(cur))
		clear()
		status.Frame(stdout, prev, cur, interval, drift.Flags())
		prev = cur
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
