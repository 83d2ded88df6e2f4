package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/linkagg/linkagg-hooks/cmd/internal/engine"
	"github.com/linkagg/linkagg-hooks/cmd/internal/status"
	"github.com/linkagg/linkagg-hooks/health"
	"github.com/linkagg/linkagg-hooks/parser"
)

// watch is `linkagg watch`: the link-health monitor (package health) on the real clock, netlink and ICMP,
// converging every running group through the same engine as the hooks (same configuration, plan and lock)
// whenever a member link's health changes. It only keeps groups whose TUN is up, so it never brings back a
// group ifupdown, networkd or the admin stopped.
func watch(e *engine.Engine, cfg health.Config, stderr io.Writer) error {
	e.UseCarrier = true
	e.KeepLastGood = true
	// a closed log pipe (journald restarted, a shell's pipe gone) must not end a convergence: with SIGPIPE
	// ignored a write to it fails, and the logger drops the line
	signal.Ignore(syscall.SIGPIPE)
	release, err := health.Claim(e.Apply.RunDir)
	if err != nil {
		return err
	}
	defer release()

	done := make(chan struct{})
	defer close(done)
	src, err := health.Subscribe(e.Links, done) // before the first convergence: no change falls between
	if err != nil {
		return err
	}
	r := &health.Runner{Config: cfg, Clock: health.SystemClock{}, Links: src, RunDir: e.Apply.RunDir,
		Groups: func() ([]parser.Group, error) {
			c, err := e.Config()
			if err != nil {
				return nil, err
			}
			return c.Groups, nil
		},
		Converge: func(string) error { return e.Converge() },
		// an edit (or the fix of a half-written drop-in) converges within a second
		Changed: e.ConfigChanged, ChangedEvery: time.Second,
		// the share drift check: a path far from its weight for a few seconds is logged once
		Sample: func() ([]health.PathSample, error) { return status.Sample(e) }, SampleEvery: time.Second, Drift: health.NewDrift(),
		Infof: e.Log.Infof, Errorf: e.Log.Errorf}
	probes := "off (--probe-interval 0)"
	if cfg.ProbeInterval > 0 {
		p := health.NewICMP()
		defer p.Close()
		if kind, err := p.Open(false); err != nil {
			// carrier failover still works: say once why probes do not
			r.ProbeOff = err.Error()
			probes = "off: " + err.Error()
			e.Log.Errorf("gateway probes off: %v", err)
		} else {
			r.Prober = p
			probes = fmt.Sprintf("every peer gateway every %s or slower, within %d packets/s, out after %d misses (%s)", cfg.ProbeInterval, cfg.ProbeBudget, cfg.Misses, kind)
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	// SIGHUP (systemctl reload, a closed terminal) reads the configuration again and converges
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)
	reload := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-hups:
				select {
				case reload <- struct{}{}:
				default:
				}
			case <-done:
				return
			}
		}
	}()
	r.Reload = reload
	stop := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
			e.Log.Infof("stopping on %s", s)
			close(stop)
		case <-done:
		}
	}()
	r.Stop = stop
	r.Ready = func() {
		if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
			e.Log.Errorf("notifying systemd: %v", err)
		}
		fmt.Fprintf(stderr, "linkagg: watching links (debounce %s, resync %s; probes: %s)\n", cfg.Debounce, cfg.Resync, probes)
	}
	return r.Run()
}
