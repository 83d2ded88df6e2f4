package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/vishvananda/netlink"

	"github.com/linkagg/linkagg-hooks/cmd/internal/engine"
)

// watch is `linkagg watch`: a daemon that re-plans every running group whenever a link or an address
// changes, counting a link without carrier as down. That gives carrier failover on hosts whose network
// manager sends no carrier events (ifupdown). It converges through the same engine as the hooks (same
// configuration, same plan, same lock), so it agrees with them; it only keeps groups whose TUN is up, so it
// never brings back a group ifupdown, networkd or the admin stopped.
func watch(e *engine.Engine, debounce, resync, probeInterval time.Duration, stderr io.Writer) error {
	e.UseCarrier = true
	release, err := e.ClaimWatcher()
	if err != nil {
		return err
	}
	defer release()

	// subscribe before the first convergence, so no change falls between the two
	done := make(chan struct{})
	defer close(done)
	links := make(chan netlink.LinkUpdate, 256)
	addrs := make(chan netlink.AddrUpdate, 256)
	failed := make(chan error, 2)
	onErr := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr, ReceiveBufferSize: 1 << 20}); err != nil {
		return fmt.Errorf("subscribing to link updates: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr, ReceiveBufferSize: 1 << 20}); err != nil {
		return fmt.Errorf("subscribing to address updates: %w", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	// state: the member links out of the plan and since when (status reads it; probe-failed links are
	// excluded by every planner while we run)
	state := map[string]engine.LinkState{}
	defer engine.SaveWatchState(e.Apply.RunDir, nil)
	save := func() {
		if err := engine.SaveWatchState(e.Apply.RunDir, state); err != nil {
			e.Log.Errorf("saving the watch state: %v", err)
		}
	}
	converge := func(why string) {
		if noCarrier(e, state) {
			save()
		}
		start := time.Now()
		if err := e.Converge(); err != nil {
			// a bad configuration or a failed write is logged and retried at the next event or resync:
			// the daemon must outlive an admin's half-edited file
			e.Log.Errorf("converge after %s: %v", why, err)
			return
		}
		e.Log.Infof("converged after %s in %s", why, time.Since(start).Round(time.Millisecond))
	}
	converge("start")
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		e.Log.Errorf("notifying systemd: %v", err)
	}
	fmt.Fprintf(stderr, "linkagg: watching links (debounce %s, resync %s, probe interval %s)\n", debounce, resync, probeInterval)

	// a burst of events (a link going down drops its addresses and routes too) gives one convergence,
	// at most debounce after its first event
	// gateway probes run beside the loop, so a slow probe never delays a carrier event
	probes := make(chan map[string]bool, 1)
	if probeInterval > 0 {
		go func() {
			t := time.NewTicker(probeInterval)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
				}
				ts, err := probeTargets(e)
				if err != nil {
					e.Log.Errorf("probe targets: %v", err)
					continue
				}
				res := probeAll(ts, probeInterval)
				select {
				case probes <- res:
				case <-done:
					return
				}
			}
		}()
	}
	fails := map[string]int{}

	var timer <-chan time.Time
	var why string
	tick := time.NewTicker(resync)
	defer tick.Stop()
	event := func(what string) {
		if timer == nil {
			why = what
			timer = time.After(debounce)
		}
	}
	for {
		select {
		case u, ok := <-links:
			if !ok {
				return errors.New("link subscription closed")
			}
			event(fmt.Sprintf("link %s flags %s oper %s", u.Attrs().Name, u.Attrs().Flags, u.Attrs().OperState))
		case u, ok := <-addrs:
			if !ok {
				return errors.New("address subscription closed")
			}
			event(fmt.Sprintf("address %s %s", u.LinkAddress.String(), map[bool]string{true: "added", false: "removed"}[u.NewAddr]))
		case <-timer:
			timer = nil
			converge(why)
		case <-tick.C:
			converge("resync")
		case res := <-probes:
			changed := false
			for link, ok := range res {
				if ok {
					fails[link] = 0
					if state[link].State == "probe-failed" {
						delete(state, link)
						changed = true
						e.Log.Infof("%s: gateway answers again", link)
					}
					continue
				}
				fails[link]++
				if fails[link] >= probeFails && state[link].State != "probe-failed" {
					state[link] = engine.LinkState{State: "probe-failed", Since: time.Now()}
					changed = true
					e.Log.Errorf("%s: gateway probe failed %d times in a row: path out", link, fails[link])
				}
			}
			for link, st := range state { // not probed any more (carrier gone, group stopped)
				if _, probed := res[link]; !probed && st.State == "probe-failed" {
					delete(state, link)
					changed = true
				}
			}
			if changed {
				save()
				converge("probe")
			}
		case err := <-failed:
			// an overrun socket has lost events: exit, and systemd restarts us with a full convergence
			return fmt.Errorf("netlink subscription: %w", err)
		case s := <-sigs:
			_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
			e.Log.Infof("stopping on %s", s)
			return nil
		}
	}
}

// noCarrier records in state the member links of running groups that are up without carrier (keeping the
// time each was first seen so) and drops those that got it back; it tells whether state changed.
func noCarrier(e *engine.Engine, state map[string]engine.LinkState) bool {
	out := map[string]bool{}
	if err := e.Run(true, func(ev *engine.Event) error {
		for _, g := range ev.RunningGroups() {
			for _, own := range g.Own {
				if l := holder(ev.Links, own); l != nil && l.Up && !l.Carrier {
					out[l.Name] = true
				}
			}
		}
		return nil
	}); err != nil {
		return false
	}
	changed := false
	for name := range out {
		if state[name].State != "no-carrier" {
			state[name] = engine.LinkState{State: "no-carrier", Since: time.Now()}
			changed = true
		}
	}
	for name, st := range state {
		if st.State == "no-carrier" && !out[name] {
			delete(state, name)
			changed = true
		}
	}
	return changed
}
