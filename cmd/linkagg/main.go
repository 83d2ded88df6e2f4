// Command linkagg is the admin's view of link aggregation groups: validate, plan, apply, down, status, watch.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/linkagg/linkagg-hooks/cmd/internal/engine"
	"github.com/linkagg/linkagg-hooks/health"
	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const (
	exitOK     = 0
	exitConfig = 1
	exitUsage  = 2
	exitKernel = 3
	exitDrift  = 4
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("linkagg", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	interfaces := fs.String("interfaces", "", "")
	confdir := fs.String("confdir", "", "")
	rundir := fs.String("run-dir", "", "")
	verbose := fs.BoolP("verbose", "v", false, "")
	showVersion := fs.Bool("version", false, "")
	help := fs.BoolP("help", "h", false, "")
	man := fs.Bool("man", false, "")
	debounce := fs.Duration("debounce", health.DefaultDebounce, "")                 // watch
	resync := fs.Duration("resync", health.DefaultResync, "")                       // watch
	probeInterval := fs.Duration("probe-interval", health.DefaultProbeInterval, "") // watch
	probeBudget := fs.Int("probe-budget", health.DefaultProbeBudget, "")
	jsonOut := fs.Bool("json", false, "")          // status
	prometheus := fs.Bool("prometheus", false, "") // status
	watchEvery := fs.String("watch", "", "")       // status: --watch [INTERVAL]
	fs.Lookup("watch").NoOptDefVal = "1s"          // watch
	fs.SetInterspersed(true)
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "linkagg: %v (see linkagg --help)\n", err)
		return exitUsage
	}
	switch {
	case *help:
		writeHelp(stdout)
		return exitOK
	case *man:
		writeMan(stdout, version)
		return exitOK
	case *showVersion:
		fmt.Fprintf(stdout, "linkagg %s\n", version)
		return exitOK
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "linkagg: a command is needed: validate, plan, apply, down, status or watch (see linkagg --help)")
		return exitUsage
	}

	log := engine.NewLogger("linkagg", *verbose)
	log.Stderr = stderr
	e := engine.New(log)
	if *interfaces != "" {
		e.Load.Interfaces = *interfaces
	}
	if *confdir != "" {
		e.Load.ConfDir = *confdir
	}
	if *rundir != "" {
		e.Apply.RunDir = *rundir
	}

	cmd, operands := rest[0], rest[1:]
	var err error
	switch cmd {
	case "validate":
		err = validate(e, operands, stdout)
	case "plan":
		err = planCmd(e, operands, stdout)
	case "apply":
		stop := e.Watchdog("", func() int { return exitKernel })
		err = e.ApplyGroups(operands)
		stop()
	case "down":
		stop := e.Watchdog("", func() int { return exitKernel })
		err = e.DownGroups(operands)
		stop()
	case "status":
		out := statusOutput{json: *jsonOut, prometheus: *prometheus}
		if fs.Changed("watch") {
			every := *watchEvery
			// `--watch 2s`: pflag leaves the interval as the first operand
			if len(operands) > 0 && every == "1s" {
				if _, perr := time.ParseDuration(operands[0]); perr == nil {
					every, operands = operands[0], operands[1:]
				}
			}
			d, perr := time.ParseDuration(every)
			if perr != nil || d < 100*time.Millisecond {
				fmt.Fprintf(stderr, "linkagg: status --watch takes an interval of at least 100ms, not %q (see linkagg --help)\n", every)
				return exitUsage
			}
			out.watch = d
		}
		if b2i(out.json)+b2i(out.prometheus)+b2i(out.watch > 0) > 1 {
			fmt.Fprintln(stderr, "linkagg: status takes one of --json, --prometheus, --watch (see linkagg --help)")
			return exitUsage
		}
		var drift bool
		drift, err = statusCmd(e, operands, out, stdout)
		if err == nil && drift {
			return exitDrift
		}
	case "watch":
		if len(operands) > 0 || *debounce < 0 || *debounce > 100*time.Millisecond || *resync <= 0 || (*probeInterval != 0 && *probeInterval < 50*time.Millisecond) || *probeBudget < 1 {
			fmt.Fprintln(stderr, "linkagg: watch takes no operands, --debounce 0..100ms, a positive --resync, --probe-interval 0 (off) or >= 50ms and a positive --probe-budget (see linkagg --help)")
			return exitUsage
		}
		cfg := health.DefaultConfig()
		cfg.Debounce, cfg.Resync, cfg.ProbeInterval, cfg.ProbeBudget = *debounce, *resync, *probeInterval, *probeBudget
		err = watch(e, cfg, stderr)
	default:
		fmt.Fprintf(stderr, "linkagg: unknown command %q: expected validate, plan, apply, down, status or watch\n", cmd)
		return exitUsage
	}
	if err == nil {
		return exitOK
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(stderr, "linkagg: %s\n", line)
	}
	var ce *engine.ConfigError
	if errors.As(err, &ce) {
		return exitConfig
	}
	return exitKernel
}

// withGroups runs f on the selected groups in a read-only event (plan, status).
func withGroups(e *engine.Engine, ids []string, f func(*engine.Event, []*parser.Group) error) error {
	return e.Run(true, func(ev *engine.Event) error {
		gs, err := engine.Select(ev.Cfg, ids)
		if err != nil {
			return err
		}
		return f(ev, gs)
	})
}

func validate(e *engine.Engine, files []string, stdout io.Writer) error {
	var groups []parser.Group
	if len(files) == 0 {
		cfg, err := e.Config()
		if err != nil {
			return err
		}
		groups = cfg.Groups
	} else {
		for _, f := range files {
			data, err := parser.ReadFile(f) // a regular file only: a FIFO named here must not hang validate
			if err != nil {
				return &engine.ConfigError{Err: err}
			}
			var gs []parser.Group
			if filepath.Ext(f) == ".toml" {
				gs, err = parser.ParseTOML(f, data)
			} else {
				gs, err = parser.ParseInterfaces(f, data)
			}
			if err != nil {
				return &engine.ConfigError{Err: err}
			}
			groups = append(groups, gs...)
		}
		if err := parser.Validate(groups); err != nil {
			return &engine.ConfigError{Err: err}
		}
	}
	// what the host's links make a black hole (plan.CheckHost): read-only, no lock
	links, err := e.Links()
	if err != nil {
		return err
	}
	for _, g := range groups {
		if err := plan.CheckHost(g, links); err != nil {
			return &engine.ConfigError{Err: err}
		}
	}
	for _, g := range groups {
		fmt.Fprintf(stdout, "%s: group %s: %d paths (tables %v), %d peers, mode %s\n", g.Pos, g.ID(), len(g.Tables), g.Tables, len(g.Peers), g.Mode)
	}
	fmt.Fprintf(stdout, "ok: %d groups\n", len(groups))
	return nil
}

func planCmd(e *engine.Engine, ids []string, stdout io.Writer) error {
	return withGroups(e, ids, func(ev *engine.Event, gs []*parser.Group) error {
		for _, g := range gs {
			d, err := ev.Desired(g, nil)
			if err != nil {
				return fmt.Errorf("%s: %w", g.ID(), err)
			}
			for _, l := range d.Commands() {
				fmt.Fprintln(stdout, l)
			}
		}
		return nil
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
