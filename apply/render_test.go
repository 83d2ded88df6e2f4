package apply

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/linkagg/linkagg-hooks/plan"
)

// The sysctl lines `linkagg plan` prints run as printed with sysctl(8), also for a member whose name
// holds a dot (a VLAN such as eth0.100, where net.ipv4.conf.eth0.100.rp_filter names nothing), and set
// what apply would set.
func TestPlanSysctlLinesRun(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.must(netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lv0.100"}, PeerName: "lw0.100"}))
	d := group("a", 0)
	d.Sysctls = []plan.Sysctl{
		{Key: "net/ipv4/conf/lv0.100/rp_filter", Value: "2"},
		{Key: "net/ipv4/conf/lv0.100/arp_ignore", Value: "1"},
		{Key: "net/ipv4/conf/lw0.100/arp_announce", Value: "2"},
	}
	n := 0
	for _, line := range d.Commands() {
		if !strings.HasPrefix(line, "sysctl -w ") {
			continue
		}
		n++
		if out, err := exec.Command("sh", "-c", line).CombinedOutput(); err != nil {
			t.Errorf("%s: %v %s", line, err, out)
		}
	}
	if n != len(d.Sysctls) {
		t.Fatalf("%d sysctl lines in the plan, want %d", n, len(d.Sysctls))
	}
	for _, s := range d.Sysctls {
		if v, err := readSysctl(s.Key); err != nil || v != s.Value {
			t.Errorf("%s = %q (%v) after the plan's line, want %s", s.Key, v, err, s.Value)
		}
	}
}
