package plan

import (
	"testing"
	"time"
)

var since = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// Carrier alone never takes a path out: only Health does (ifupdown sends no event when a carrier returns,
// so only a planner that sees it come back may count it). A link Health names leaves with the state and
// time Health gives; the others share the sequence, and no route of any table leaves by it.
func TestBuildHealth(t *testing.T) {
	links := seedLinks()
	for i := range links {
		links[i].Carrier = links[i].Name != "eth1"
	}
	d, err := Build(Input{Group: seedGroup(), Links: links})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Nft.Sequence) != 4 || !d.Paths[1].Active() {
		t.Fatalf("without Health the carrier must not matter: sequence %v, path 2 %s", d.Nft.Sequence, d.Paths[1].State)
	}
	for _, tc := range []struct {
		health Health
		path   int
		want   PathState
		seq    []uint32
		routes int // peer routes (not the fakenet one)
	}{
		{Health{Links: map[string]Down{"eth1": {DownNoCarrier, since}}}, 1, PathNoCarrier, []uint32{0x10000000, 0x12000000, 0x13000000}, 9},
		{Health{Links: map[string]Down{"eth2": {DownProbeFailed, since}}}, 2, PathProbeFailed, []uint32{0x10000000, 0x11000000, 0x13000000}, 9},
		// the router's link is out: path 4 leaves, and no table keeps its route to the router through eth3
		{Health{Links: map[string]Down{"eth3": {DownNoCarrier, since}}}, 3, PathNoCarrier, []uint32{0x10000000, 0x11000000, 0x12000000}, 6},
		// a link that is not a member changes nothing
		{Health{Links: map[string]Down{"eth9": {DownNoCarrier, since}}}, 0, PathActive, []uint32{0x10000000, 0x11000000, 0x12000000, 0x13000000}, 12},
	} {
		d, err := Build(Input{Group: seedGroup(), Links: links, Health: tc.health})
		if err != nil {
			t.Fatal(err)
		}
		p := d.Paths[tc.path]
		if p.State != tc.want || (tc.want != PathActive && (!p.Since.Equal(since) || p.Dev == "" || p.Reason == "")) {
			t.Errorf("%v: path %d is %s since %s on %q (%s), want %s since %s", tc.health, tc.path+1, p.State, p.Since, p.Dev, p.Reason, tc.want, since)
		}
		if !slicesEqual(d.Nft.Sequence, tc.seq) {
			t.Errorf("%v: sequence %x, want %x", tc.health, d.Nft.Sequence, tc.seq)
		}
		peerRoutes := 0
		for _, r := range d.Routes {
			if r.Table == MainTable {
				continue
			}
			peerRoutes++
			if _, down := tc.health.Links[r.Dev]; down {
				t.Errorf("%v: route through a link that counts as down: %v", tc.health, r)
			}
			if r.Table == d.Paths[tc.path].Table && tc.want != PathActive {
				t.Errorf("%v: route in the table of a path that is out: %v", tc.health, r)
			}
		}
		if peerRoutes != tc.routes || len(d.Rules) != len(d.Nft.Sequence) {
			t.Errorf("%v: %d peer routes and %d rules, want %d and %d", tc.health, peerRoutes, len(d.Rules), tc.routes, len(d.Nft.Sequence))
		}
	}
}

func slicesEqual(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
