package health

import (
	"strconv"
	"testing"
	"time"
)

// A path is flagged once after drifting for the window while traffic flows, and cleared once after the
// window back in range; idle groups, counter restarts and single samples give no verdict.
func TestDrift(t *testing.T) {
	type tick struct {
		a, b   uint64 // bytes added on path 1 and path 2 (weights 3:2) during this second
		active bool   // path 2 active (false: it left, its counter is not read)
		reset  bool   // the table was replaced: counters restart from zero
	}
	mbit := uint64(125000)
	ok := tick{a: 30 * mbit, b: 20 * mbit, active: true}   // 0.6 / 0.4
	slow := tick{a: 40 * mbit, b: 10 * mbit, active: true} // 0.8 / 0.2: far
	near := tick{a: 31 * mbit, b: 19 * mbit, active: true} // 0.62 / 0.38: in range
	idle := tick{a: 1000, b: 10, active: true}             // far, but under 1 Mbit/s
	for _, tc := range []struct {
		name  string
		ticks []tick
		want  []string // "+N@s" flag raised on path N at second s, "-N@s" cleared
	}{
		{"in range", []tick{ok, ok, ok, near, near, ok, ok, ok}, nil},
		{"drift for the window: one flag, then one clear", []tick{ok, slow, slow, slow, slow, slow, slow, slow, slow, ok, ok, ok, ok, ok, ok, ok},
			[]string{"+1@6", "+2@6", "-1@14", "-2@14"}},
		{"drift shorter than the window", []tick{ok, slow, slow, slow, slow, ok, slow, slow, slow, ok}, nil},
		{"idle group: no verdict", []tick{ok, idle, idle, idle, idle, idle, idle, idle, idle}, nil},
		{"a counter restart interrupts the drift", []tick{ok, slow, slow, slow, {a: 0, b: 0, active: true, reset: true}, slow, slow, slow, slow}, nil},
		{"a path that leaves loses its flag without a clear line", []tick{ok, slow, slow, slow, slow, slow, slow, {a: 50 * mbit, active: false}, {a: 50 * mbit, active: false}},
			[]string{"+1@6", "+2@6"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDrift()
			var a, b uint64
			var got []string
			for s, tk := range tc.ticks {
				if tk.reset {
					a, b = 0, 0
				}
				a += tk.a
				b += tk.b
				now := t0.Add(time.Duration(s) * time.Second)
				for _, f := range d.Observe(now, []PathSample{{Group: "tun0", Path: 1, Weight: 3, Active: true, Bytes: a}, {Group: "tun0", Path: 2, Weight: 2, Active: tk.active, Bytes: b}}) {
					sign := "+"
					if f.Cleared {
						sign = "-"
					}
					got = append(got, sign+itoa(f.Path)+"@"+itoa(s))
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("changes %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("changes %v, want %v", got, tc.want)
				}
			}
		})
	}
	if !Far(0.2, 0.4, 0.25) || Far(0.32, 0.4, 0.25) || !Far(0.19, 0.25, 0.1) || Far(0.21, 0.25, 0.1) {
		t.Error("Far: 0.4±0.1 with 25 %, at least 0.05 absolute")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
