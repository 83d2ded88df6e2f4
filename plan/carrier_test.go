package plan

import "testing"

// A link that is up but lost its carrier stays in the plan unless the planner is told carrier counts
// (ifupdown sends no event when it returns); with UseCarrier its path leaves the sequence and the others
// share it, and the routes through it go too.
func TestBuildUseCarrier(t *testing.T) {
	links := seedLinks()
	for i := range links {
		links[i].Carrier = links[i].Name != "eth1"
	}
	d, err := Build(Input{Group: seedGroup(), Links: links})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Nft.Sequence) != 4 || d.Paths[1].State != PathActive {
		t.Fatalf("without UseCarrier the carrier must not matter: sequence %v, path 2 %s", d.Nft.Sequence, d.Paths[1].State)
	}
	d, err = Build(Input{Group: seedGroup(), Links: links, UseCarrier: true})
	if err != nil {
		t.Fatal(err)
	}
	if d.Paths[1].State != PathPending {
		t.Errorf("path 2 on eth1 without carrier: %s, want pending", d.Paths[1].State)
	}
	want := []uint32{0x10000000, 0x12000000, 0x13000000}
	if len(d.Nft.Sequence) != len(want) {
		t.Fatalf("sequence %x, want %x", d.Nft.Sequence, want)
	}
	for i := range want {
		if d.Nft.Sequence[i] != want[i] {
			t.Errorf("sequence %x, want %x", d.Nft.Sequence, want)
		}
	}
	for _, r := range d.Routes {
		if r.Dev == "eth1" || r.Table == 10001 {
			t.Errorf("route through the carrier-less link or its table: %+v", r)
		}
	}
	if len(d.Rules) != 3 {
		t.Errorf("%d rules, want 3", len(d.Rules))
	}
}
