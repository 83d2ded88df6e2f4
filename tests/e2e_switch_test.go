package tests

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The switch lab: hosts A, B, C with two NICs each, all plugged into one switch (a Linux bridge): one
// broadcast domain, as in the lab cluster of the blog post we were built from. Every NIC and the switch port
// toward it are shaped to swRate Mbit/s, so a host's receive is limited per NIC too. Hosts are configured
// only through their own /etc/network/interfaces and the real ifup/ifdown.
const swRate = 200

// switchAddr is host number k's (1-based) address on NIC i: "flat" puts every NIC on 10.0.0.0/24
// (A .10/.11, B .20/.21, C .30/.31), "pernic" gives NIC i the subnet 10.0.i.0/24 (A .10, B .20, …).
func switchAddr(addr string, k, i int) string {
	if addr == "flat" {
		return fmt.Sprintf("10.0.0.%d", 10*k+i)
	}
	return fmt.Sprintf("10.0.%d.%d", i, 10*k)
}

func vipOf(k int) string { return fmt.Sprintf("10.99.255.%d", 10*k) }

// switchInterfaces is host k's interfaces file: its NICs and the tun0 group whose rspec lists every host,
// with the tun0 stanza before the NICs (tunFirst: its paths are pending until the NICs come up) or after.
func switchInterfaces(l *Lab, k int, addr string, tunFirst bool) string {
	var nics, tun strings.Builder
	for i := range l.Rates {
		fmt.Fprintf(&nics, "auto eth%d\niface eth%d inet static\n    address %s/24\n\n", i, i, switchAddr(addr, k, i))
	}
	fmt.Fprintf(&tun, "auto tun0\niface tun0 inet static\n    address %s\n    netmask 255.255.255.255\n    fakenet 10.99.255.0/24\n    table", vipOf(k))
	for i := range l.Rates {
		fmt.Fprintf(&tun, " %d", 10000+i)
	}
	tun.WriteString("\n")
	for j := range l.Hosts {
		fmt.Fprintf(&tun, "    rspec %s", vipOf(j+1))
		for i := range l.Rates {
			fmt.Fprintf(&tun, ":%s", switchAddr(addr, j+1, i))
		}
		tun.WriteString("\n")
	}
	if tunFirst {
		return tun.String() + "\n" + nics.String()
	}
	return nics.String() + tun.String()
}

// switchSysctls are the per-NIC values the tests check, as "key=value" lines.
var switchSysctls = []string{"rp_filter", "arp_ignore", "arp_announce"}

func (l *Lab) nicSysctls(h string) map[string]string {
	out := map[string]string{}
	for i := range l.Rates {
		for _, k := range switchSysctls {
			key := fmt.Sprintf("net/ipv4/conf/%s/%s", l.Link(h, i), k)
			out[key] = l.Sysctl(h, key)
		}
	}
	return out
}

// switchUp makes every host strict about reverse paths (rp_filter=1, the RHEL default and what a hardened
// Debian sets), writes its interfaces file and runs the real `ifup -a`. Host A has the tun0 stanza first,
// the others last. It returns each host's NIC sysctls as they were before.
func switchUp(t *testing.T, l *Lab, addr string) map[string]map[string]string {
	t.Helper()
	before := map[string]map[string]string{}
	for k, h := range l.Hosts {
		l.In(h, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1")
		for i := range l.Rates {
			l.In(h, "sysctl", "-qw", fmt.Sprintf("net.ipv4.conf.%s.rp_filter=1", l.Link(h, i)))
		}
		before[h] = l.nicSysctls(h)
		l.WriteInterfaces(h, switchInterfaces(l, k+1, addr, k == 0))
	}
	for _, h := range l.Hosts {
		l.MustIfupdown(h, "ifup", "-a")
	}
	return before
}

// checkSwitchKernel checks every host's tables: path i's route to each peer leaves by the host's own NIC i
// via that peer's NIC i (on one subnet shared by all NICs too), and every member NIC has loose rp_filter
// and the ARP sysctls that keep each NIC answering for its own address only.
func checkSwitchKernel(t *testing.T, l *Lab, addr string) {
	t.Helper()
	for k, h := range l.Hosts {
		_, routes := l.Kernel(h).Ours()
		got := map[string]bool{}
		for _, r := range routes {
			got[fmt.Sprintf("%v via %v dev %v table %v", r["dst"], r["gateway"], r["dev"], r["table"])] = true
		}
		for j := range l.Hosts {
			if j == k {
				continue
			}
			for i := range l.Rates {
				want := fmt.Sprintf("%s via %s dev %s table %d", vipOf(j+1), switchAddr(addr, j+1, i), l.Link(h, i), 10000+i)
				if !got[want] {
					t.Errorf("%s lacks the route %q; its routes: %v", h, want, routes)
				}
			}
		}
		for key, v := range l.nicSysctls(h) {
			want := map[string]string{"rp_filter": "2", "arp_ignore": "1", "arp_announce": "2"}[key[strings.LastIndex(key, "/")+1:]]
			if v != want {
				t.Errorf("%s: %s = %s, want %s", h, key, v, want)
			}
		}
	}
}

// checkNeighbours checks, after traffic, that each host learned every peer NIC's address with that NIC's
// own MAC: no NIC answered ARP for another NIC's address (which would bring one path's frames in on the
// wrong NIC).
func checkNeighbours(t *testing.T, l *Lab, addr string) {
	t.Helper()
	mac := func(h, dev string) string {
		return strings.TrimSpace(l.In(h, "cat", "/sys/class/net/"+dev+"/address"))
	}
	for k, h := range l.Hosts {
		var neigh []map[string]any
		jsonInto(t, l.In(h, "ip", "-j", "neigh", "show"), &neigh)
		for j, p := range l.Hosts {
			if j == k {
				continue
			}
			for i := range l.Rates {
				ip, dev, want := switchAddr(addr, j+1, i), l.Link(h, i), mac(p, l.Link(p, i))
				for _, n := range neigh {
					if n["dst"] == ip && n["dev"] == dev && n["lladdr"] != nil && n["lladdr"] != want {
						t.Errorf("%s learned %s on %s as %v, but that address is on %s's %s (%s)", h, ip, dev, n["lladdr"], p, l.Link(p, i), want)
					}
				}
			}
		}
	}
}

// checkNoResidue: after `ifdown -a` no rule, route, nft table or TUN of ours is left, and every NIC sysctl
// is back to what it was before.
func checkNoResidue(t *testing.T, l *Lab, before map[string]map[string]string) {
	t.Helper()
	for _, h := range l.Hosts {
		l.MustIfupdown(h, "ifdown", "-a")
		k := l.Kernel(h)
		rules, routes := k.Ours()
		if len(rules)+len(routes) > 0 || strings.Contains(k.Nft, "linkagg") || k.HasLink("tun0") {
			t.Errorf("%s after ifdown -a: rules %v routes %v tun0 %v nft:\n%s", h, rules, routes, k.HasLink("tun0"), k.Nft)
		}
		if got := l.nicSysctls(h); fmt.Sprint(got) != fmt.Sprint(before[h]) {
			t.Errorf("%s sysctls after ifdown -a:\n got %v\nwant %v", h, got, before[h])
		}
	}
}

// deltas returns b - a per NIC.
func deltas(a, b []uint64) []uint64 {
	out := make([]uint64, len(a))
	for i := range a {
		out[i] = b[i] - a[i]
	}
	return out
}

// balanced tells whether every value is within frac of their mean.
func balanced(v []uint64, frac float64) bool {
	var sum uint64
	for _, x := range v {
		sum += x
	}
	mean := float64(sum) / float64(len(v))
	for _, x := range v {
		if mean == 0 || float64(x) < mean*(1-frac) || float64(x) > mean*(1+frac) {
			return false
		}
	}
	return true
}

// switchFlows measures, in one run, one NIC alone (a flow to the peer's NIC address, main table) and one
// flow VIP -> VIP in both directions under cubic and bbr, and checks each aggregate flow: its bytes
// balanced over the NICs on the sending side (tx) and on the receiving side (rx), not flooded to the third
// host, and at least minSwitchRatio × one NIC. The ratio itself is a benchmark (make bench: tests/bench-
// switch.sh, median of 3 on a quiet machine, target 1.9); this floor only catches a flow held to one NIC
// (1.0×, the bug of routes that all left by the subnet's first NIC) on a busy 2-core CI machine (1.70–1.97 measured here while another test ran).
const minSwitchRatio = 1.5

func switchFlows(t *testing.T, l *Lab, addr string) {
	t.Helper()
	single, err := l.Flow(IperfFlow{From: "A", To: "B", Dst: switchAddr(addr, 2, 0), Secs: 4, Omit: 1, CC: "cubic"})
	if err != nil {
		t.Fatalf("one NIC alone: %v", err)
	}
	t.Logf("one NIC alone A -> B (cubic): %.1f Mbit/s", single)
	for _, c := range []struct{ from, to, cc string }{{"A", "B", "cubic"}, {"A", "B", "bbr"}, {"B", "A", "cubic"}, {"B", "A", "bbr"}} {
		src, dst := c.from, c.to
		kdst := strings.Index("ABC", dst) + 1
		var mbit, ratio float64
		var tx, rx, third []uint64
		// a flow under the floor gets one more try: on a busy 2-core machine one bbr flow in a few dozen
		// falls to ~1.4x (seen in CI), while the bug this floor is for gives 1.0x every time
		for try := 1; try <= 2; try++ {
			tx0, rx0, third0 := l.TxBytes(src), l.RxBytes(dst), l.RxBytes("C")
			var err error
			mbit, err = l.Flow(IperfFlow{From: src, To: dst, Dst: vipOf(kdst), Secs: 4, Omit: 1, CC: c.cc})
			if err != nil {
				t.Fatalf("%s -> %s (%s): %v", src, dst, c.cc, err)
			}
			tx, rx, third = deltas(tx0, l.TxBytes(src)), deltas(rx0, l.RxBytes(dst)), deltas(third0, l.RxBytes("C"))
			ratio = mbit / single
			if ratio >= minSwitchRatio {
				break
			}
			t.Logf("try %d: one flow %s -> %s (%s): %.1f Mbit/s = %.2f x one NIC", try, src, dst, c.cc, mbit, ratio)
		}
		t.Logf("one flow %s -> %s (%s): %.1f Mbit/s = %.2f x one NIC; %s tx per NIC %v, %s rx per NIC %v, C rx %v",
			src, dst, c.cc, mbit, ratio, src, tx, dst, rx, third)
		if ratio < minSwitchRatio {
			t.Errorf("%s -> %s (%s): %.1f Mbit/s is %.2f x one NIC (%.1f), want >= %.1f", src, dst, c.cc, mbit, ratio, single, minSwitchRatio)
		}
		if !balanced(tx, 0.1) || !balanced(rx, 0.1) {
			t.Errorf("%s -> %s (%s): bytes not balanced over the NICs: %s tx %v, %s rx %v", src, dst, c.cc, src, tx, dst, rx)
		}
		var sum, flood uint64
		for i := range rx {
			sum, flood = sum+rx[i], flood+third[i]
		}
		if flood > sum/100 {
			t.Errorf("%s -> %s: C received %d bytes of a %d-byte flow: the switch floods (a MAC it never learned)", src, dst, flood, sum)
		}
	}
}

// TestE2ESwitchFlat: every NIC of every host on ONE subnet of one switch. Each path's routes must leave by
// the path's own NIC (not the first NIC of the subnet), each NIC must answer ARP only for its own address,
// rp_filter must be loose on hosts that are strict, and one flow gets both NICs in both directions.
func TestE2ESwitchFlat(t *testing.T) { switchCase(t, "swf", "flat") }

// TestE2ESwitchPerNIC: one subnet per NIC (the seed's own addressing), all on one switch: every host hears
// every ARP request on every NIC, and only the NIC holding the address may answer.
func TestE2ESwitchPerNIC(t *testing.T) { switchCase(t, "swp", "pernic") }

func switchCase(t *testing.T, prefix, addr string) {
	l := NewSwitchLab(t, prefix, []string{"A", "B", "C"}, 2, swRate)
	before := switchUp(t, l, addr)
	checkSwitchKernel(t, l, addr)
	switchFlows(t, l, addr)
	checkNeighbours(t, l, addr)
	checkNoResidue(t, l, before)
}

// peerMap is host h's per-peer part of the nft table: the `ip daddr vmap { … }` line, or "".
func (l *Lab) peerMap(h string) string {
	out, _ := exec.Command("ip", "netns", "exec", l.NS(h), "nft", "list", "table", "ip", "linkagg_tun0").CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "daddr vmap {") {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// TestE2ESwitchPeerNICDies: B's NIC eth1 dies behind the switch (its switch port goes down) while A's and
// C's carriers stay up, with `linkagg watch` on every host at its defaults (probes every 200 ms, out after 3
// misses). A must take path 2 out for B only — A -> C keeps both NICs — and put it back when B's NIC
// returns; both flows survive, and A -> B is back to half a NIC's rate soon after the path left.
func TestE2ESwitchPeerNICDies(t *testing.T) {
	l := NewSwitchLab(t, "swd", []string{"A", "B", "C"}, 2, swRate)
	before := switchUp(t, l, "flat")
	for _, h := range l.Hosts {
		startWatch(t, l, h)
	}
	toB := l.StartIperf(IperfFlow{From: "A", To: "B", Dst: vipOf(2), Secs: 10, CC: "cubic"})
	toC := l.StartIperf(IperfFlow{From: "A", To: "C", Dst: vipOf(3), Secs: 10, CC: "cubic"})
	time.Sleep(2500 * time.Millisecond)
	port := "pB1" // the switch port of B's eth1 (tests/lab/switch.sh names them p<host><nic>)
	run(t, "ip", "-n", l.Prefix+"sw", "link", "set", port, "down")
	down := time.Now()
	took := l.Eventually(5*time.Second, "A did not take path 2 out for B", func() bool {
		return strings.HasPrefix(l.peerMap("A"), "ip daddr vmap { 10.99.255.20 : goto mark_10000000 }")
	})
	out := time.Now()
	t.Logf("B's NIC dead -> A's path 2 out for B only: %s (polled every 50 ms)", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("detection took %s, want under 2 s with probes every 200 ms", took)
	}
	if m := l.peerMap("A"); strings.Contains(m, vipOf(3)) {
		t.Errorf("C lost a path too: %s", m)
	}
	// C keeps both paths: A's eth1 still carries A -> C
	txA := l.TxBytes("A")
	time.Sleep(time.Second)
	txA = deltas(txA, l.TxBytes("A"))
	t.Logf("A tx per NIC in the second after detection: %v", txA)
	if txA[1] < 1e6 {
		t.Errorf("A's eth1 carried %d bytes in a second: A -> C should still use it", txA[1])
	}
	st := l.Status("A")
	if p := st.path(2); p.State != "up" || len(p.Gateways.Down) != 1 {
		t.Errorf("status of A should show path 2 up with one peer out:\n%s", st.raw)
	}
	t.Logf("status of A during the outage:\n%s", l.linkagg("A", "status"))
	time.Sleep(1500 * time.Millisecond)
	run(t, "ip", "-n", l.Prefix+"sw", "link", "set", port, "up")
	up := time.Now()
	back := l.Eventually(5*time.Second, "A did not put path 2 back for B", func() bool { return l.peerMap("A") == "" })
	t.Logf("B's NIC back -> path 2 back for B: %s", back.Round(time.Millisecond))
	if back > 2*time.Second {
		t.Errorf("the path came back after %s, want under 2 s", back)
	}
	rb, rc := toB.Wait(), toC.Wait()
	at := func(f *Flow, tm time.Time) float64 { return tm.Sub(f.started).Seconds() }
	t.Logf("seconds into A -> B: NIC down %.1f, path out %.1f, NIC up %.1f", at(toB, down), at(toB, out), at(toB, up))
	recovered := -1.0
	for _, iv := range rb.Intervals {
		if iv.Sum.Start >= at(toB, out) && iv.Sum.Start < at(toB, up) && iv.Sum.BitsPerSecond >= swRate*1e6/2 {
			recovered = iv.Sum.Start + 0.5 - at(toB, down)
			break
		}
	}
	t.Logf("A -> B back to >= %d Mbit/s %.1f s after B's NIC died", swRate/2, recovered)
	if recovered < 0 || recovered > 3.5 {
		t.Errorf("A -> B did not get back to half a NIC's rate within 3.5 s of the NIC's death (%.1f)", recovered)
	}
	for _, r := range []struct {
		name string
		res  flowResult
	}{{"A -> B", rb}, {"A -> C", rc}} {
		var ivs []string
		for _, iv := range r.res.Intervals {
			ivs = append(ivs, fmt.Sprintf("%.0f", iv.Sum.BitsPerSecond/1e6))
		}
		t.Logf("%s: %.1f Mbit/s average; per 0.5 s: %s", r.name, r.res.End.SumReceived.BitsPerSecond/1e6, strings.Join(ivs, " "))
	}
	checkNoResidue(t, l, before)
}
