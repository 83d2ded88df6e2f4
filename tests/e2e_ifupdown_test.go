package tests

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// seedStanza is the seed's stanza verbatim for host .10, with its own pre-up/post-down lines (the post-down
// has the seed's typo: it names tun, not tun0).
const seedStanza = `auto tun0
iface tun0 inet static
    address 10.99.255.%d
    netmask 255.255.255.255
    mtu 9000
    fakenet 10.99.255.0/24
    table 10000 10001 10002 10003
    rspec 10.99.255.1:10.3.23.1:10.3.23.1:10.3.23.1 \
          10.99.255.10:10.99.0.10:10.99.1.10:10.99.2.10:10.3.23.10 \
          10.99.255.20:10.99.0.20:10.99.1.20:10.99.2.20:10.3.23.20 \
          10.99.255.30:10.99.0.30:10.99.1.30:10.99.2.30:10.3.23.30
    pre-up ip tuntap add mode tun tun0
    post-down ip tuntap del mode tun tun
`

// seedNICs are the member NIC stanzas on the seed's four subnets; host is 10 or 20.
func seedNICs(l *Lab, h string, host int) string {
	subnets := []string{"10.99.0", "10.99.1", "10.99.2", "10.3.23"}
	var b strings.Builder
	for i, s := range subnets {
		fmt.Fprintf(&b, "auto %s\niface %s inet static\n    address %s.%d/24\n\n", l.Link(h, i), l.Link(h, i), s, host)
	}
	return b.String()
}

// TestE2EIfupdownSeed brings the seed's 4-path configuration up on two hosts with `ifup -a`, the TUN listed
// BEFORE the NICs (boot order: the TUN comes up when no member has its address yet), checks the kernel
// state, that one TCP flow puts bytes on all four links in equal shares, and that `ifdown -a` leaves no
// residue of ours.
func TestE2EIfupdownSeed(t *testing.T) {
	needRoot(t)
	seedE2E(t, NewLab(t, "e2s", 250, 250, 250, 250))
}

func seedE2E(t *testing.T, l *Lab) {
	t.Helper()
	for _, h := range []struct {
		name string
		host int
	}{{"A", 10}, {"B", 20}} {
		l.WriteInterfaces(h.name, fmt.Sprintf(seedStanza, h.host)+"\n"+seedNICs(l, h.name, h.host))
	}
	before := map[string]string{}
	for i := range 4 {
		k := "net/ipv4/conf/" + l.Link("A", i) + "/rp_filter"
		before[k] = l.Sysctl("A", k)
	}

	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifup", "-a")
	}

	k := l.Kernel("A")
	rules, routes := k.Ours()
	if len(rules) != 4 {
		t.Errorf("want 4 fwmark rules of ours, got %d: %v", len(rules), rules)
	}
	// 1 fakenet route in main + 4 tables x 3 peers (.1 router, .20, .30)
	if len(routes) != 13 {
		t.Errorf("want 13 routes of ours, got %d: %v", len(routes), routes)
	}
	for _, r := range routes {
		if r["dst"] == "10.99.255.1" && r["dev"] != l.Link("A", 3) {
			t.Errorf("route to the router .1 must leave by the 10.3.23.0/24 link %s: %v", l.Link("A", 3), r)
		}
	}
	if !regexp.MustCompile(`numgen inc mod 4 vmap \{ 0 : goto mark_10000000, 1 : goto mark_11000000, 2 : goto mark_12000000, 3 : goto mark_13000000 \}`).MatchString(k.Nft) {
		t.Errorf("nft table does not hold the 4-path sequence:\n%s", k.Nft)
	}
	for key := range before {
		if v := l.Sysctl("A", key); v != "2" {
			t.Errorf("%s = %s, want 2", key, v)
		}
	}
	if mtu := l.In("A", "cat", "/sys/class/net/tun0/mtu"); strings.TrimSpace(mtu) != "9000" {
		t.Errorf("tun0 mtu %s, want 9000", mtu)
	}

	// one flow VIP -> VIP: every link carries a quarter of the bytes
	tx0 := l.TxBytes("A")
	mbit := l.Iperf("10.99.255.20", 4)
	tx1 := l.TxBytes("A")
	checkShares(t, tx0, tx1, []float64{1, 1, 1, 1})
	t.Logf("one flow over 4x250 Mbit/s: %.1f Mbit/s", mbit)

	// idempotent: a second ifup of the group changes nothing (apply reports zero writes)
	out := l.In("A", "sh", "-c", "mount --bind "+l.Etc("A")+" /etc/network && mount -t tmpfs tmpfs /run && mkdir -p /run/linkagg && mount --bind "+l.Etc("A")+"/run-linkagg /run/linkagg && "+filepath.Join(binDir, "linkagg")+" -v apply tun0")
	if !strings.Contains(out, "0 kernel writes") {
		t.Errorf("second apply was not a no-op: %s", out)
	}

	for _, h := range []string{"A", "B"} {
		l.MustIfupdown(h, "ifdown", "-a")
	}
	k = l.Kernel("A")
	rules, routes = k.Ours()
	if len(rules) != 0 || len(routes) != 0 || strings.Contains(k.Nft, "linkagg") {
		t.Errorf("residue after ifdown -a: rules %v routes %v nft:\n%s", rules, routes, k.Nft)
	}
	for key, v := range before {
		if got := l.Sysctl("A", key); got != v {
			t.Errorf("%s = %s after ifdown, want the old %s", key, got, v)
		}
	}
	// the user's own pre-up made tun0, so it is theirs: we must not delete it (their typo'd post-down
	// leaves it behind, as it would without us)
	if !k.HasLink("tun0") {
		t.Error("tun0 was made by the user's pre-up line and must not be deleted by us")
	}
}

// TestE2EIfupdownWeighted: 300/200 Mbit/s links with weight 3 2, a TUN we create ourselves; bytes go 3:2, a
// member NIC's ifdown takes its path out of the sequence and its ifup puts it back, and ifdown of the group
// removes the TUN too.
func TestE2EIfupdownWeighted(t *testing.T) {
	l := NewLab(t, "e2w", 300, 200)
	for _, h := range []struct {
		name string
		host int
	}{{"A", 10}, {"B", 20}} {
		var b strings.Builder
		for i := range 2 {
			fmt.Fprintf(&b, "auto %s\niface %s inet static\n    address 10.98.%d.%d/24\n\n", l.Link(h.name, i), l.Link(h.name, i), i, h.host)
		}
		fmt.Fprintf(&b, `auto tun0
iface tun0 inet static
    address 10.98.255.%d
    netmask 255.255.255.255
    fakenet 10.98.255.0/24
    table 20000 20001
    weight 3 2
    rspec 10.98.255.10:10.98.0.10:10.98.1.10
    rspec 10.98.255.20:10.98.0.20:10.98.1.20
`, h.host)
		l.WriteInterfaces(h.name, b.String())
		l.MustIfupdown(h.name, "ifup", "-a")
	}
	k := l.Kernel("A")
	if !strings.Contains(k.Nft, "numgen inc mod 5 vmap { 0 : goto mark_20000000, 1 : goto mark_21000000, 2 : goto mark_20000000, 3 : goto mark_21000000, 4 : goto mark_20000000 }") {
		t.Errorf("want the smooth 3:2 sequence 1,2,1,2,1:\n%s", k.Nft)
	}
	tx0 := l.TxBytes("A")
	l.Iperf("10.98.255.20", 4)
	tx1 := l.TxBytes("A")
	checkShares(t, tx0, tx1, []float64{3, 2})

	// member NIC 1 goes down: its path leaves; back up: it returns
	l.MustIfupdown("A", "ifdown", l.Link("A", 1))
	k = l.Kernel("A")
	if !strings.Contains(k.Nft, "numgen inc mod 1 vmap { 0 : goto mark_20000000 }") {
		t.Errorf("after ifdown of %s the sequence must hold path 1 only:\n%s", l.Link("A", 1), k.Nft)
	}
	if rules, _ := k.Ours(); len(rules) != 1 {
		t.Errorf("after ifdown of a member: %d rules, want 1", len(rules))
	}
	l.MustIfupdown("A", "ifup", l.Link("A", 1))
	k = l.Kernel("A")
	if !strings.Contains(k.Nft, "numgen inc mod 5") {
		t.Errorf("after ifup of %s the path must rejoin:\n%s", l.Link("A", 1), k.Nft)
	}

	l.MustIfupdown("A", "ifdown", "-a")
	k = l.Kernel("A")
	rules, routes := k.Ours()
	if len(rules)+len(routes) != 0 || strings.Contains(k.Nft, "linkagg") || k.HasLink("tun0") {
		t.Errorf("residue after ifdown -a (tun0 present: %v): %v %v\n%s", k.HasLink("tun0"), rules, routes, k.Nft)
	}
}

// TestE2EIfupdownBadConfig: a malformed rspec fails `ifup tun0` with one line naming file:line, and the
// kernel is left exactly as it was.
func TestE2EIfupdownBadConfig(t *testing.T) {
	l := NewLab(t, "e2x", 100)
	l.WriteInterfaces("A", `auto tun0
iface tun0 inet static
    address 10.97.255.10
    netmask 255.255.255.255
    fakenet 10.97.255.0/24
    table 30000
    rspec 10.97.255.10:10.97.0.x
`)
	before := l.Kernel("A")
	out, err := l.Ifupdown("A", "ifup", "tun0")
	if err == nil {
		t.Fatalf("ifup with a malformed rspec succeeded:\n%s", out)
	}
	if !regexp.MustCompile(`/etc/network/interfaces:7: .*10\.97\.0\.x`).MatchString(out) {
		t.Errorf("error does not name interfaces:7 and the bad address:\n%s", out)
	}
	after := l.Kernel("A")
	if fmt.Sprint(before.Rules) != fmt.Sprint(after.Rules) || fmt.Sprint(before.Routes) != fmt.Sprint(after.Routes) || before.Nft != after.Nft || after.HasLink("tun0") {
		t.Errorf("kernel changed after a refused config:\nbefore %v\nafter %v", before, after)
	}
}

// checkShares asserts that the bytes sent on each link between two counter readings follow the weights
// within 5 percentage points.
func checkShares(t *testing.T, tx0, tx1 []uint64, weights []float64) {
	t.Helper()
	var total, wsum float64
	for i := range tx0 {
		total += float64(tx1[i] - tx0[i])
		wsum += weights[i]
	}
	if total < 10e6 {
		t.Fatalf("only %.0f bytes sent: the flow did not run", total)
	}
	for i := range tx0 {
		share := float64(tx1[i]-tx0[i]) / total
		want := weights[i] / wsum
		t.Logf("link %d: %.1f%% of %.1f MB (want %.1f%%)", i, share*100, total/1e6, want*100)
		if share < want-0.05 || share > want+0.05 {
			t.Errorf("link %d carried %.1f%% of the bytes, want %.1f%% ± 5", i, share*100, want*100)
		}
	}
}
