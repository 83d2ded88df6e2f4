package health

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/linkagg/linkagg-hooks/internal/rundir"
	"github.com/linkagg/linkagg-hooks/plan"
)

// Files of the watcher under the run dir. While watch.pid names a live `linkagg watch`, every planner on
// the host counts carrier and takes the watcher's verdicts from health.json, so an ifupdown hook never puts
// back a path the watcher took out: without a watcher nothing would put it back when the carrier returns,
// which is why carrier is otherwise ignored.
const (
	PIDFile    = "watch.pid"
	HealthFile = "health.json"
)

// File is health.json: the watcher's verdicts, written whenever one changes (and every resync). Field
// names are stable; `linkagg status --json` shows the same objects.
type File struct {
	Updated  time.Time            `json:"updated"`
	Links    map[string]plan.Down `json:"links,omitempty"`    // member links that count as down
	Gateways []GatewayDown        `json:"gateways,omitempty"` // (link, peer gateway) pairs that stopped answering
	Probes   ProbeInfo            `json:"probes"`
	Drift    []Flag               `json:"drift,omitempty"` // paths whose share is far from their weight
}

// GatewayDown is one silent peer gateway behind one link.
type GatewayDown struct {
	Link    string     `json:"link"`
	Gateway netip.Addr `json:"gateway"`
	State   string     `json:"state"`
	Since   time.Time  `json:"since"`
}

// ProbeInfo says how the watcher probes: how many targets, each how often, within which budget.
type ProbeInfo struct {
	Targets     int     `json:"targets"`
	PeriodSec   float64 `json:"period_seconds"` // each target is probed this often
	BudgetPPS   int     `json:"budget_pps"`
	Misses      int     `json:"misses"`
	RatePPS     float64 `json:"rate_pps"`      // targets / period: echo requests per second sent
	Off         string  `json:"off,omitempty"` // why probes are off (--probe-interval 0, no CAP_NET_RAW)
	IntervalSec float64 `json:"interval_seconds"`
}

// FileOf renders a monitor's verdicts (and the drift flags) as health.json.
func FileOf(m *Monitor, now time.Time, off string, drift []Flag) File {
	h := m.Health()
	f := File{Updated: now.UTC(), Links: h.Links, Drift: drift}
	for k, d := range h.Gateways {
		f.Gateways = append(f.Gateways, GatewayDown{Link: k.Link, Gateway: k.Gateway, State: d.State, Since: d.Since})
	}
	sort.Slice(f.Gateways, func(i, j int) bool {
		a, b := f.Gateways[i], f.Gateways[j]
		return a.Link < b.Link || a.Link == b.Link && a.Gateway.Less(b.Gateway)
	})
	n := len(m.order)
	per := m.Period()
	f.Probes = ProbeInfo{Targets: n, PeriodSec: per.Seconds(), BudgetPPS: m.cfg.ProbeBudget, Misses: m.cfg.Misses,
		IntervalSec: m.cfg.ProbeInterval.Seconds(), Off: off}
	if m.cfg.ProbeInterval <= 0 && off == "" {
		f.Probes.Off = "--probe-interval 0"
	}
	if per > 0 && f.Probes.Off == "" {
		f.Probes.RatePPS = float64(n) / per.Seconds()
	}
	if len(f.Links) == 0 {
		f.Links = nil
	}
	return f
}

// Health turns the file back into what the planner takes.
func (f File) Health() plan.Health {
	h := plan.Health{Links: map[string]plan.Down{}, Gateways: map[plan.GatewayKey]plan.Down{}}
	for l, d := range f.Links {
		h.Links[l] = d
	}
	for _, g := range f.Gateways {
		h.Gateways[plan.GatewayKey{Link: g.Link, Gateway: g.Gateway}] = plan.Down{State: g.State, Since: g.Since}
	}
	return h
}

// Load reads health.json of a live watcher; ok is false when no watcher runs (a stale file of a killed
// watcher says nothing) or the file is missing or unreadable.
func Load(runDir string) (f File, ok bool) {
	if !WatcherRunning(runDir) {
		return File{}, false
	}
	d, err := rundir.OpenExisting(runDir)
	if err != nil {
		return File{}, false
	}
	defer d.Close()
	b, err := d.Read(HealthFile)
	if err != nil || b == nil || json.Unmarshal(b, &f) != nil {
		return File{}, false
	}
	return f, true
}

// Current is the health every planner uses now. Carrier counts when countCarrier (networkd hosts) or a
// watcher runs: a link up without carrier is no-carrier, read from links now (the freshest view), with the
// watcher's time when it saw it first. A live watcher's probe verdicts come from its file.
func Current(runDir string, links []plan.Local, countCarrier bool, now time.Time) plan.Health {
	f, watched := Load(runDir)
	h := plan.Health{Links: map[string]plan.Down{}, Gateways: map[plan.GatewayKey]plan.Down{}}
	if countCarrier || watched || WatcherRunning(runDir) {
		for _, l := range links {
			if l.Up && !l.Carrier {
				d := plan.Down{State: plan.DownNoCarrier, Since: now}
				if w, ok := f.Links[l.Name]; ok && w.State == plan.DownNoCarrier {
					d.Since = w.Since
				}
				h.Links[l.Name] = d
			}
		}
	}
	if !watched {
		return h
	}
	carrier := map[string]bool{}
	for _, l := range links {
		carrier[l.Name] = l.Up && l.Carrier
	}
	fh := f.Health()
	for name, d := range fh.Links {
		if d.State == plan.DownProbeFailed && carrier[name] {
			h.Links[name] = d
		}
	}
	for k, d := range fh.Gateways {
		if carrier[k.Link] {
			h.Gateways[k] = d
		}
	}
	return h
}

// WatcherRunning tells whether a `linkagg watch` holds runDir: watch.pid names a live process called
// linkagg (a pid reused by another program after the watcher was killed does not count).
func WatcherRunning(runDir string) bool {
	d, err := rundir.OpenExisting(runDir)
	if err != nil {
		return false
	}
	defer d.Close()
	b, err := d.Read(PIDFile)
	if err != nil || b == nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err != nil || strings.TrimSpace(string(comm)) == watcherComm
}

// watcherComm is the process name of a watcher (tests set their own).
var watcherComm = "linkagg"

// Claim records this process as the watcher of runDir (created 0700 when missing, see internal/rundir);
// release removes its files. A second live watcher is refused: two would converge the same groups twice
// per event.
func Claim(runDir string) (release func(), err error) {
	if WatcherRunning(runDir) {
		return nil, fmt.Errorf("another linkagg watch is running (%s)", filepath.Join(runDir, PIDFile))
	}
	d, err := rundir.Open(runDir)
	if err != nil {
		return nil, err
	}
	if err := d.Write(PIDFile, []byte(strconv.Itoa(os.Getpid())+"\n")); err != nil {
		d.Close()
		return nil, err
	}
	return func() {
		d.Remove(HealthFile)
		d.Remove(PIDFile)
		d.Close()
	}, nil
}

// Save writes health.json atomically through the run dir (no symlink followed).
func Save(runDir string, f File) error {
	d, err := rundir.Open(runDir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteJSON(HealthFile, f)
}
