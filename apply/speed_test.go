package apply

import (
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
)

// The snapshot carries each link's kind and the speed its driver reports (ETHTOOL_GSET, read in the
// session's namespace): a veth's fixed 10000 Mbit/s with kind veth (which the planner does not believe),
// and a TUN's speed as `ethtool -s` set it. A link without carrier reports none.
func TestLinkSpeed(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(1)
	e.must(netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "spd0"}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI}))
	if out, err := exec.Command("ethtool", "-s", "spd0", "speed", "2500", "duplex", "full").CombinedOutput(); err != nil {
		t.Fatalf("ethtool -s spd0 speed 2500: %v %s", err, out)
	}
	if got := linkSpeed("spd0"); got != 2500 {
		t.Errorf("linkSpeed(spd0) = %d after ethtool -s speed 2500", got)
	}
	if got := linkSpeed("nosuch0"); got != 0 {
		t.Errorf("linkSpeed of a missing link = %d", got)
	}
	if got := linkSpeed("a-name-too-long-for-ifreq"); got != 0 {
		t.Errorf("linkSpeed of a name too long = %d", got)
	}
	links, err := snapshotLinks()
	e.must(err)
	found := 0
	for _, l := range links {
		switch l.Name {
		case "la0":
			found++
			if l.Kind != "veth" || l.Speed != 10000 {
				t.Errorf("la0: kind %q speed %d, want veth 10000", l.Kind, l.Speed)
			}
		case "spd0": // down, no carrier
			found++
			if l.Kind != "tuntap" || l.Speed != 0 {
				t.Errorf("spd0 (down): kind %q speed %d, want tuntap 0", l.Kind, l.Speed)
			}
		case "lo":
			found++
			if l.Kind != "" || l.Speed != 0 {
				t.Errorf("lo: kind %q speed %d", l.Kind, l.Speed)
			}
		}
	}
	if found != 3 {
		t.Errorf("snapshot %+v: want la0, spd0 and lo", links)
	}
}
