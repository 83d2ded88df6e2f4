package plan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/linkagg/linkagg-hooks/parser"
)

// Why a group's striping unit and weights are what they are. Striping reorders a flow by about one unit's
// serialization time on the links it uses, and what TCP tolerates is a time, not a size: 16 KiB at 250
// Mbit/s take as long as 64 KiB at 1 Gbit/s. So a group that does not give `gso-max-size` gets the unit
// that takes UnitTime at the mean speed of its active paths, and a group that does not give `weight` gets
// weights in proportion to the paths' speeds: each link then drains its share in the same time.
//
// The mean, not the slowest: on links of unequal speed a unit sized for the slowest is too small for the
// fast ones (on 1000/1000/100/250 Mbit/s: 6 KiB, at 2-3 times the CPU per byte), and bbr measured best near
// the mean on both unequal sets of make bench (400/250/100/150: 16 KiB; 1000/1000/100/250: 32 KiB), while
// cubic stays short there whatever the unit (README, Benchmarks).

// UnitTime is the serialization time of the default unit at the paths' mean speed: 16384 bytes at 250
// Mbit/s, the unit measured best on the 100-400 Mbit/s links, and 65536 bytes (the kernel's own
// gso_max_size) at 1 Gbit/s, measured best there (README, Benchmarks).
const UnitTime = 524288 // ns

// UnknownSpeedGSO is the unit while a path's speed is unknown: the kernel's own value, which the TUN has
// anyway, and the right one from 1 Gbit/s up.
const UnknownSpeedGSO = parser.MaxGSOMaxSize

// Weights derived from speeds are the speeds reduced by their gcd when that gives at most exactSequence
// entries; otherwise the shortest sequence (a power of two of entries, up to the nftables limit) whose
// efficiency is at least minEfficiency, or the most efficient one within the limit.
const (
	exactSequence = 256
	minEfficiency = 0.99
)

// PathSpeed is a path's speed as the planner uses it: Mbit/s, 0 when unknown, and where it came from.
type PathSpeed struct {
	Mbit int
	From string // "speed option", "ethtool" or why it is unknown
}

// speedOf finds the speed of path i, whose own address is on link l (nil when pending): the group's
// `speed` for it, else what l's driver reports. A veth reports a fixed 10000 whatever carries it, and a
// TUN or tunnel no rate at all: for those the admin says `speed`.
func speedOf(g parser.Group, i int, l *Local) PathSpeed {
	if g.Speeds != nil && g.Speeds[i] > 0 {
		return PathSpeed{Mbit: g.Speeds[i], From: "speed option"}
	}
	switch {
	case l == nil:
		return PathSpeed{From: "no link"}
	case fixedSpeedKinds[l.Kind]:
		return PathSpeed{From: fmt.Sprintf("%s is a %s", l.Name, l.Kind)}
	case l.Speed <= 0:
		return PathSpeed{From: l.Name + " reports none"}
	}
	return PathSpeed{Mbit: l.Speed, From: "ethtool"}
}

// fixedSpeedKinds are link kinds whose drivers report a made-up speed (veth: 10000, tun: 10).
var fixedSpeedKinds = map[string]bool{"veth": true, "tun": true, "tuntap": true}

// deriveWeights gives the paths idx weights in proportion to their speeds, in a sequence of at most budget
// entries; nil when a speed of theirs is unknown. A path too slow for one entry of the sequence gets 0.
func deriveWeights(speeds []PathSpeed, idx []int, budget int) []int {
	s := make([]int, len(idx))
	for k, i := range idx {
		if speeds[i].Mbit <= 0 {
			return nil
		}
		s[k] = speeds[i].Mbit
	}
	if len(s) == 0 {
		return nil
	}
	if w := reduce(s); sum(w) <= min(exactSequence, budget) {
		return w
	}
	var best []int
	bestEff := 0.0
	for b := 2; ; b *= 2 {
		b = min(b, budget)
		for _, w := range [][]int{quantize(s, b, true), quantize(s, b, false)} {
			if e := efficiency(s, w); e > bestEff {
				best, bestEff = w, e
			}
		}
		if bestEff >= minEfficiency || b >= budget {
			return reduce(best)
		}
	}
}

// quantize scales speeds s to weights of b entries in all, each rounded to the nearest (round) or down:
// rounding down never gives a path more than its share (nor more than b entries), rounding to the nearest
// finds the short sequences (1000/999 Mbit/s: 1:1). Both can leave a slow path out.
func quantize(s []int, b int, round bool) []int {
	total := int64(sum(s))
	w := make([]int, len(s))
	for k, v := range s {
		n := int64(v) * int64(b)
		if round {
			n += total / 2
		}
		w[k] = int(n / total)
	}
	for round && sum(w) > b { // rounding up overshot: take from the weight rounded up the most
		k, worst := 0, -1.0
		for i, v := range s {
			if up := float64(w[i]) - float64(v)*float64(b)/float64(total); w[i] > 0 && up > worst {
				k, worst = i, up
			}
		}
		w[k]--
	}
	if sum(w) == 0 {
		w[slices.Index(s, slices.Max(s))] = 1
	}
	return w
}

// efficiency is the share of the paths' summed speed that a striped flow can reach with weights w: the
// path given the most over its share of the speeds fills first and holds the flow at its own pace (a path
// given less leaves some of itself unused, a path given 0 all of itself).
func efficiency(s, w []int) float64 {
	ts, tw := float64(sum(s)), float64(sum(w))
	e := 1.0
	for k := range s {
		if w[k] > 0 {
			e = min(e, float64(s[k])/ts/(float64(w[k])/tw))
		}
	}
	return e
}

func reduce(w []int) []int {
	g := 0 // gcd(0, x) = x: a weight 0 does not count
	for _, v := range w {
		g = gcd(g, v)
	}
	out := make([]int, len(w))
	for k, v := range w {
		out[k] = v / g
	}
	return out
}

func sum(w []int) int {
	n := 0
	for _, v := range w {
		n += v
	}
	return n
}

// Tuning says how the planner chose what the group left to it, for `linkagg plan` and `status`.
type Tuning struct {
	Weights string // where the weights came from
	Unit    string // where the TUN's gso_max_size came from
}

// tune sets the weights of the paths and the TUN's unit from the paths' speeds where the group gives
// neither `weight` nor `gso-max-size`, and says why in d.Tuning.
func tune(g parser.Group, d *Desired, speeds []PathSpeed, active []int) {
	var why []string
	for _, i := range active {
		if speeds[i].Mbit <= 0 {
			why = append(why, fmt.Sprintf("%d (%s)", i+1, speeds[i].From))
		}
	}
	unknown := ""
	if len(why) > 0 {
		unknown = "no speed for path " + strings.Join(why, ", ") + ": give speed"
	}

	switch {
	case g.Weights != nil:
		for i := range d.Paths {
			d.Paths[i].Weight = g.Weights[i]
		}
		d.Tuning.Weights = "weight option"
	default:
		budget := parser.MaxSequenceFor(len(g.Tables), len(g.Fakenets), len(g.Peers))
		// every path whose speed is known gets its share; the sequence uses the active ones
		var known []int
		for i := range d.Paths {
			if speeds[i].Mbit > 0 {
				known = append(known, i)
			}
		}
		if w, on := deriveWeights(speeds, active, budget), active; w != nil {
			// an inactive path whose speed is known shows the weight it will have when it joins
			if kw := deriveWeights(speeds, known, budget); kw != nil {
				w, on = kw, known
			}
			for k, i := range on {
				d.Paths[i].Weight = w[k]
			}
			d.Tuning.Weights = "from the speeds " + speedList(speeds, active)
			for _, i := range active {
				if d.Paths[i].Weight == 0 {
					d.Tuning.Weights += fmt.Sprintf("; path %d is too slow for one entry of the sequence: it carries only peers that have no other path", i+1)
				}
			}
			break
		}
		for i := range d.Paths {
			d.Paths[i].Weight = 1
		}
		switch {
		case len(active) == 0:
			d.Tuning.Weights = "equal"
		default:
			d.Tuning.Weights = "equal (" + unknown + ")"
		}
	}

	if d.Mode == parser.ModeMPTCP {
		return // subflows take their routes from the member NICs, never from the TUN: its unit stays
	}
	if g.GSOMaxSize != 0 {
		d.TUN.GSOMaxSize = g.GSOMaxSize
		d.Tuning.Unit = "gso-max-size option"
		return
	}
	total := 0
	for _, i := range active {
		total += speeds[i].Mbit
	}
	switch {
	case len(active) == 0:
		d.TUN.GSOMaxSize = UnknownSpeedGSO
		d.Tuning.Unit = "no active path"
	case unknown != "":
		d.TUN.GSOMaxSize = UnknownSpeedGSO
		d.Tuning.Unit = "the kernel's (" + unknown + ")"
	default:
		mean := total / len(active)
		d.TUN.GSOMaxSize = unitFor(mean)
		d.Tuning.Unit = fmt.Sprintf("%.2f ms at the active paths' mean speed (%s)", float64(d.TUN.GSOMaxSize)*8/float64(mean)/1000, mbit(mean))
	}
}

// unitFor is the unit that takes UnitTime at mbit Mbit/s, in whole KiB, within gso-max-size's range.
func unitFor(mbit int) int {
	b := int64(mbit) * UnitTime / 8000 // Mbit/s × ns / 8000 = bytes
	b = b &^ 1023
	return int(min(max(b, parser.MinGSOMaxSize), parser.MaxGSOMaxSize))
}

func speedList(speeds []PathSpeed, idx []int) string {
	var out []string
	seen := map[string]bool{}
	for _, i := range idx {
		out = append(out, strconv.Itoa(speeds[i].Mbit))
		seen[speeds[i].From] = true
	}
	from := make([]string, 0, len(seen))
	for f := range seen {
		from = append(from, f)
	}
	slices.Sort(from)
	return strings.Join(out, "/") + " Mbit/s (" + strings.Join(from, ", ") + ")"
}

func mbit(m int) string {
	if m >= 1000 && m%1000 == 0 {
		return fmt.Sprintf("%d Gbit/s", m/1000)
	}
	return fmt.Sprintf("%d Mbit/s", m)
}
