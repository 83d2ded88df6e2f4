package plan

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/linkagg/linkagg-hooks/parser"
)

func TestUnitFor(t *testing.T) {
	for _, tc := range []struct{ mbit, want int }{
		{250, 16384},   // the unit measured best at 100-400 Mbit/s
		{1000, 65536},  // the kernel's own, measured best at 1 Gbit/s
		{10000, 65536}, // capped: gso-max-size's range
		{587, 37888},   // 1000/1000/100/250: their mean, in whole KiB
		{100, 6144},
		{10, 4096}, // floored: gso-max-size's range
		{1, 4096},
	} {
		if got := unitFor(tc.mbit); got != tc.want {
			t.Errorf("unitFor(%d) = %d, want %d", tc.mbit, got, tc.want)
		}
	}
}

func speedsOf(mbit ...int) []PathSpeed {
	out := make([]PathSpeed, len(mbit))
	for i, m := range mbit {
		out[i] = PathSpeed{Mbit: m, From: "ethtool"}
	}
	return out
}

func TestDeriveWeights(t *testing.T) {
	all := func(n int) []int {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	for _, tc := range []struct {
		speeds []int
		idx    []int
		budget int
		want   []int
	}{
		{[]int{1000, 1000, 1000, 1000}, nil, 256, []int{1, 1, 1, 1}},
		{[]int{1000, 1000, 100, 250}, nil, 256, []int{20, 20, 2, 5}},
		{[]int{300, 200}, nil, 256, []int{3, 2}},
		{[]int{10000, 1000, 100}, nil, 256, []int{100, 10, 1}},
		{[]int{2500, 1000}, nil, 256, []int{5, 2}},
		// gcd 1 would give a sequence of 1999: quantized within the budget, to 0.4 % here
		{[]int{1000, 999}, nil, 256, []int{1, 1}},
		// a path too slow for an entry of its own is left out where that costs the flow less than the
		// share one entry would give it (1000/997/10: 0.5 % of the sum, against 10 times its share)
		{[]int{1000, 997, 10}, nil, 256, []int{1, 1, 0}},
		{[]int{100000, 1}, nil, 256, []int{1, 0}},
		{[]int{1000, 1000, 100, 250}, nil, 10, []int{4, 4, 0, 1}},
		{[]int{1000, 1}, nil, 2, []int{1, 0}},
		{[]int{1000, 0, 100}, nil, 256, nil},                  // a speed is unknown
		{[]int{1000, 0, 100}, []int{0, 2}, 256, []int{10, 1}}, // but not on the paths asked for
		{nil, nil, 256, nil},
	} {
		idx := tc.idx
		if idx == nil {
			idx = all(len(tc.speeds))
		}
		got := deriveWeights(speedsOf(tc.speeds...), idx, tc.budget)
		if !slices.Equal(got, tc.want) {
			t.Errorf("deriveWeights(%v, %v, %d) = %v, want %v", tc.speeds, idx, tc.budget, got, tc.want)
		}
		if got != nil && SequenceLen(got) > max(tc.budget, len(got)) {
			t.Errorf("deriveWeights(%v): %v reduce to %d entries, over the budget %d", tc.speeds, got, SequenceLen(got), tc.budget)
		}
	}
}

// SequenceLen is how many entries weights w give.
func SequenceLen(w []int) int { return len(Sequence(w)) }

// TestDeriveWeightsError: over many sets of speeds, at the budget of the largest groups (230 entries: 254
// peers on 8 paths), the weights let a striped flow reach 98 % of the summed speeds: no path gets so much
// more than its share that it holds the flow back, and a path is left out only where that costs less.
func TestDeriveWeightsError(t *testing.T) {
	rates := []int{10, 100, 250, 300, 400, 999, 1000, 2500, 5000, 10000, 25000, 40000, 100000}
	for _, a := range rates {
		for _, b := range rates {
			for _, c := range rates {
				s := []int{a, b, c}
				w := deriveWeights(speedsOf(s...), []int{0, 1, 2}, 230)
				if n := SequenceLen(w); n > 230 {
					t.Errorf("speeds %v: weights %v reduce to %d entries", s, w, n)
				}
				if e := efficiency(s, w); e < 0.98 {
					t.Errorf("speeds %v: weights %v reach %.3f of the sum", s, w, e)
				}
			}
		}
	}
	if e := efficiency([]int{1000, 100}, []int{1, 1}); e != 200.0/1100 {
		t.Errorf("efficiency of 1:1 on 1000/100 = %v, want 200/1100 (the 100 Mbit/s path holds the flow at 2 x 100)", e)
	}
	if e := efficiency([]int{1000, 10}, []int{1, 0}); e < 0.990 || e > 0.991 {
		t.Errorf("efficiency of 1:0 on 1000/10 = %v, want 1000/1010", e)
	}
}

func speedGroup(weights, speeds []int) parser.Group {
	g := seedGroup()
	g.Weights, g.Speeds = weights, speeds
	return g
}

func speedLinks(mbit []int, kind string) []Local {
	links := seedLinks()
	for i := range mbit {
		links[i+1].Speed, links[i+1].Kind = mbit[i], kind
	}
	return links
}

// TestTuning: where the weights and the TUN's unit come from, for the choices a group leaves to the planner
// and the ones it makes itself.
func TestTuning(t *testing.T) {
	for _, tc := range []struct {
		name           string
		group          parser.Group
		links          []Local
		weights        []int
		gso            int
		whyW, whyU     string
		healthDownEth2 bool
	}{
		{"four gigabit NICs", speedGroup(nil, nil), speedLinks([]int{1000, 1000, 1000, 1000}, ""), []int{1, 1, 1, 1}, 65536,
			"from the speeds 1000/1000/1000/1000 Mbit/s (ethtool)", "0.52 ms at the active paths' mean speed (1 Gbit/s)", false},
		{"unequal NICs", speedGroup(nil, nil), speedLinks([]int{1000, 1000, 100, 250}, ""), []int{20, 20, 2, 5}, 37888,
			"from the speeds 1000/1000/100/250 Mbit/s (ethtool)", "0.52 ms at the active paths' mean speed (587 Mbit/s)", false},
		{"ten gigabit", speedGroup(nil, nil), speedLinks([]int{10000, 10000, 1000, 1000}, ""), []int{10, 10, 1, 1}, 65536,
			"from the speeds 10000/10000/1000/1000 Mbit/s (ethtool)", "0.10 ms at the active paths' mean speed (5500 Mbit/s)", false},
		// veths report 10000 whatever shapes them: their speed is not believed, the admin's is
		{"veths without speed", speedGroup(nil, nil), speedLinks([]int{10000, 10000, 10000, 10000}, "veth"), []int{1, 1, 1, 1}, 65536,
			"equal (no speed for path 1 (eth0 is a veth), 2 (eth1 is a veth), 3 (eth2 is a veth), 4 (eth3 is a veth): give speed)",
			"the kernel's (no speed for path 1 (eth0 is a veth), 2 (eth1 is a veth), 3 (eth2 is a veth), 4 (eth3 is a veth): give speed)", false},
		{"veths with speed", speedGroup(nil, []int{250, 250, 250, 250}), speedLinks([]int{10000, 10000, 10000, 10000}, "veth"), []int{1, 1, 1, 1}, 16384,
			"from the speeds 250/250/250/250 Mbit/s (speed option)", "0.52 ms at the active paths' mean speed (250 Mbit/s)", false},
		// speed auto for the NICs that report theirs, a number for the one that does not
		{"speed auto and a number", speedGroup(nil, []int{0, 0, 0, 100}), speedLinks([]int{1000, 1000, 1000, 0}, ""), []int{10, 10, 10, 1}, 50176,
			"from the speeds 1000/1000/1000/100 Mbit/s (ethtool, speed option)", "0.52 ms at the active paths' mean speed (775 Mbit/s)", false},
		{"one NIC reports no speed", speedGroup(nil, nil), speedLinks([]int{1000, 1000, 1000, 0}, ""), []int{1, 1, 1, 1}, 65536,
			"equal (no speed for path 4 (eth3 reports none): give speed)", "the kernel's (no speed for path 4 (eth3 reports none): give speed)", false},
		// the admin's weight and gso-max-size win over the speeds
		{"explicit weight and unit", func() parser.Group { g := speedGroup([]int{3, 2, 3, 2}, nil); g.GSOMaxSize = 8192; return g }(),
			speedLinks([]int{1000, 1000, 100, 250}, ""), []int{3, 2, 3, 2}, 8192, "weight option", "gso-max-size option", false},
		// a path out (no carrier): the unit follows the paths in use, the weights keep every known speed
		{"a path out", speedGroup(nil, nil), speedLinks([]int{1000, 1000, 100, 250}, ""), []int{20, 20, 2, 5}, 49152,
			"from the speeds 1000/1000/250 Mbit/s (ethtool)", "0.52 ms at the active paths' mean speed (750 Mbit/s)", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := Input{Group: tc.group, Links: tc.links}
			if tc.healthDownEth2 {
				in.Health = Health{Links: map[string]Down{"eth2": {DownNoCarrier, since}}}
			}
			d, err := Build(in)
			if err != nil {
				t.Fatal(err)
			}
			var w []int
			for _, p := range d.Paths {
				w = append(w, p.Weight)
			}
			if !slices.Equal(w, tc.weights) || d.TUN.GSOMaxSize != tc.gso || d.Tuning.Weights != tc.whyW || d.Tuning.Unit != tc.whyU {
				t.Errorf("weights %v gso %d\n  weights: %s\n  unit: %s\nwant weights %v gso %d\n  weights: %s\n  unit: %s", w, d.TUN.GSOMaxSize, d.Tuning.Weights, d.Tuning.Unit, tc.weights, tc.gso, tc.whyW, tc.whyU)
			}
			text := strings.Join(d.Commands(), "\n")
			for _, want := range []string{"#   weights: " + tc.whyW, "#   unit: gso_max_size " + itoa(tc.gso) + ": " + tc.whyU, "gso_max_size " + itoa(tc.gso) + " up"} {
				if !strings.Contains(text, want) {
					t.Errorf("plan does not say %q:\n%s", want, text)
				}
			}
		})
	}
}

// Mode mptcp leaves the TUN's unit alone (its subflows never take the TUN's route) and says nothing of it.
func TestTuningMPTCP(t *testing.T) {
	g := speedGroup(nil, nil)
	g.Mode = parser.ModeMPTCP
	d, err := Build(Input{Group: g, Links: speedLinks([]int{1000, 1000, 100, 250}, "")})
	if err != nil {
		t.Fatal(err)
	}
	if d.TUN.GSOMaxSize != 0 || d.Tuning.Unit != "" || d.Paths[0].Weight != 20 {
		t.Errorf("mode mptcp: gso %d unit %q weight %d", d.TUN.GSOMaxSize, d.Tuning.Unit, d.Paths[0].Weight)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// A path too slow for an entry of the group's sequence carries nothing while the others work, and still
// carries the peers that can use nothing else (never no sequence for them: their packets would stay in
// the TUN).
func TestTooSlowPath(t *testing.T) {
	links := speedLinks([]int{40000, 40000, 10, 10}, "")
	d, err := Build(Input{Group: speedGroup(nil, nil), Links: links, Health: Health{Gateways: map[GatewayKey]Down{
		{Link: "eth0", Gateway: netip.MustParseAddr("10.99.0.20")}: {DownProbeFailed, since},
		{Link: "eth1", Gateway: netip.MustParseAddr("10.99.1.20")}: {DownProbeFailed, since},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var w []int
	for _, p := range d.Paths {
		w = append(w, p.Weight)
	}
	if !slices.Equal(w, []int{1, 1, 0, 0}) || !strings.Contains(d.Tuning.Weights, "path 3 is too slow for one entry of the sequence") {
		t.Errorf("weights %v: %s", w, d.Tuning.Weights)
	}
	if !slices.Equal(d.Nft.Sequence, []uint32{0x10000000, 0x11000000}) {
		t.Errorf("group sequence %#x, want paths 1 and 2", d.Nft.Sequence)
	}
	var peer20 []uint32
	for _, ps := range d.Nft.Peers {
		if slices.Contains(ps.VIPs, netip.MustParseAddr("10.99.255.20")) {
			peer20 = ps.Sequence
		}
	}
	if !slices.Equal(peer20, []uint32{0x12000000, 0x13000000}) {
		t.Errorf("peer .20, which has paths 3 and 4 only: sequence %#x, want both of them", peer20)
	}
}
