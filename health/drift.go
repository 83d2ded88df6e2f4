package health

import (
	"encoding/json"
	"math"
	"sort"
	"time"
)

// PathSample is one path's byte counter as read at one instant: the bytes its mark chain sent (packet and
// hybrid modes) plus the bytes its MPTCP subflows sent (mptcp and hybrid).
type PathSample struct {
	Group  string
	Path   int // 1-based
	Weight int
	Active bool
	Bytes  uint64
}

// Flag is a path whose share of its group's bytes has been far from its weight's share while traffic
// flowed, for at least the drift window.
type Flag struct {
	Group       string    `json:"group"`
	Path        int       `json:"path"`
	Share       float64   `json:"share"`        // of the group's bytes, over the last sample interval
	WeightShare float64   `json:"weight_share"` // weight / sum of the active paths' weights
	Since       time.Time `json:"since"`        // since when it drifts
	Cleared     bool      `json:"-"`
}

// Drift flags paths whose byte share stays far from their weight share. Far is more than Tolerance of the
// weight share off, and at least 0.05 absolute (3:2 weights: path 2 is flagged below 0.30 or above 0.50
// with the default 0.25). A verdict needs the group to carry MinRate bytes/s; a flag is raised after
// Window of drift and cleared after Window back in range, so one episode logs one line each way.
type Drift struct {
	Window    time.Duration
	Tolerance float64
	MinRate   float64 // bytes per second of the group

	last  map[pathKey]PathSample
	lastT map[string]time.Time
	state map[pathKey]*driftState
}

type pathKey struct {
	group string
	path  int
}

type driftState struct {
	off, ok time.Time // since when off / back in range (zero: not)
	flag    *Flag
}

// NewDrift is the watcher's drift check: 5 s window, 25 % tolerance, 1 Mbit/s minimum.
func NewDrift() *Drift {
	return &Drift{Window: 5 * time.Second, Tolerance: 0.25, MinRate: 125e3}
}

func (d *Drift) window() time.Duration {
	if d == nil {
		return 0
	}
	return d.Window
}

// Flags are the paths flagged now, in a stable order.
func (d *Drift) Flags() []Flag {
	if d == nil {
		return nil
	}
	var out []Flag
	for _, s := range d.state {
		if s.flag != nil {
			out = append(out, *s.flag)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Group < out[j].Group || out[i].Group == out[j].Group && out[i].Path < out[j].Path
	})
	return out
}

// Far tells whether share is far from weightShare for tolerance tol.
func Far(share, weightShare, tol float64) bool {
	return math.Abs(share-weightShare) > math.Max(0.05, tol*weightShare)
}

// Observe takes one reading of every path and returns the flags raised and cleared by it.
func (d *Drift) Observe(now time.Time, samples []PathSample) []Flag {
	if d == nil {
		return nil
	}
	if d.last == nil {
		d.last, d.lastT, d.state = map[pathKey]PathSample{}, map[string]time.Time{}, map[pathKey]*driftState{}
	}
	byGroup := map[string][]PathSample{}
	for _, s := range samples {
		byGroup[s.Group] = append(byGroup[s.Group], s)
	}
	var changes []Flag
	for group, ss := range byGroup {
		dt := now.Sub(d.lastT[group]).Seconds()
		seen := !d.lastT[group].IsZero()
		d.lastT[group] = now
		var total, weights float64
		deltas := map[int]float64{}
		valid := seen && dt > 0
		for _, s := range ss {
			k := pathKey{group, s.Path}
			prev, had := d.last[k]
			d.last[k] = s
			if !s.Active {
				continue
			}
			if !had || !prev.Active || s.Bytes < prev.Bytes {
				valid = false // a path joined, or the counters restarted (the table was replaced)
				continue
			}
			deltas[s.Path] = float64(s.Bytes - prev.Bytes)
			total += deltas[s.Path]
			weights += float64(s.Weight)
		}
		if !valid || total/dt < d.MinRate || weights == 0 || len(deltas) < 2 {
			for _, s := range ss { // no verdict: drift must be seen continuously while traffic flows
				if st := d.state[pathKey{group, s.Path}]; st != nil {
					st.off, st.ok = time.Time{}, time.Time{}
				}
			}
			continue
		}
		for _, s := range ss {
			if !s.Active {
				continue
			}
			k := pathKey{group, s.Path}
			st := d.state[k]
			if st == nil {
				st = &driftState{}
				d.state[k] = st
			}
			share, wshare := deltas[s.Path]/total, float64(s.Weight)/weights
			if Far(share, wshare, d.Tolerance) {
				st.ok = time.Time{}
				if st.off.IsZero() {
					st.off = now
				}
				if st.flag != nil {
					st.flag.Share, st.flag.WeightShare = share, wshare
				} else if now.Sub(st.off) >= d.Window {
					st.flag = &Flag{Group: group, Path: s.Path, Share: share, WeightShare: wshare, Since: st.off.UTC()}
					changes = append(changes, *st.flag)
				}
				continue
			}
			st.off = time.Time{}
			if st.flag == nil {
				continue
			}
			if st.ok.IsZero() {
				st.ok = now
			}
			if now.Sub(st.ok) >= d.Window {
				c := *st.flag
				c.Share, c.WeightShare, c.Cleared = share, wshare, true
				changes = append(changes, c)
				st.flag = nil
			}
		}
	}
	// paths that went away (inactive, group stopped) lose their flag silently
	for k, st := range d.state {
		if st.flag == nil {
			continue
		}
		active := false
		for _, s := range byGroup[k.group] {
			active = active || (s.Path == k.path && s.Active)
		}
		if !active {
			delete(d.state, k)
		}
	}
	sort.Slice(changes, func(i, j int) bool {
		return changes[i].Group < changes[j].Group || changes[i].Group == changes[j].Group && changes[i].Path < changes[j].Path
	})
	return changes
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
