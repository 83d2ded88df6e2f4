package health

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The real prober, in two fresh network namespaces joined by a veth pair: a gateway that holds its address
// answers, one that lost it does not; replies are matched by sequence and carry the request's nonce and
// the link they arrived on. Both kinds of socket: raw (a fresh
// namespace admits no group to ping sockets) and, once ping_group_range admits us, a ping socket.
func TestICMPProber(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("test needs root (CI=true: not skipping)")
		}
		t.Skip("test needs root")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("restoring the namespace: %v", err) // the thread stays locked: never reused
			return
		}
		runtime.UnlockOSThread()
	}()
	b, err := netns.New()
	must(t, err)
	defer b.Close()
	a, err := netns.New()
	must(t, err)
	defer a.Close()
	hb, err := netlink.NewHandleAt(b)
	must(t, err)
	defer hb.Close()

	must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pa0"}, PeerName: "pb0"}))
	pb, err := netlink.LinkByName("pb0")
	must(t, err)
	must(t, netlink.LinkSetNsFd(pb, int(b)))
	pa, err := netlink.LinkByName("pa0")
	must(t, err)
	for _, s := range []string{"10.7.0.10/24", "fd07::10/64"} {
		addr, _ := netlink.ParseAddr(s)
		addr.Flags = 0x02 // IFA_F_NODAD
		must(t, netlink.AddrAdd(pa, addr))
	}
	must(t, netlink.LinkSetUp(pa))
	pb, err = hb.LinkByName("pb0")
	must(t, err)
	var gwAddrs []*netlink.Addr
	for _, s := range []string{"10.7.0.20/24", "fd07::20/64"} {
		addr, _ := netlink.ParseAddr(s)
		addr.Flags = 0x02
		must(t, hb.AddrAdd(pb, addr))
		gwAddrs = append(gwAddrs, addr)
	}
	must(t, hb.LinkSetUp(pb))
	lo, _ := hb.LinkByName("lo")
	must(t, hb.LinkSetUp(lo))
	time.Sleep(200 * time.Millisecond) // carrier

	targets := []Target{
		{Link: "pa0", Src: netip.MustParseAddr("10.7.0.10"), Gateway: netip.MustParseAddr("10.7.0.20")},
		{Link: "pa0", Src: netip.MustParseAddr("fd07::10"), Gateway: netip.MustParseAddr("fd07::20")},
	}
	probe := func(p *ICMP, tg Target, seq uint16) bool {
		t.Helper()
		nonce := uint64(seq)*0x9e3779b97f4a7c15 + 1
		must(t, p.Send(Probe{Seq: seq, Nonce: nonce, Target: tg}))
		deadline := time.After(500 * time.Millisecond)
		for {
			select {
			case ans := <-p.Answers():
				if ans.Seq == seq && ans.From == tg.Gateway {
					// the gateway echoes the nonce, and the reply names the link it arrived on
					if ans.Nonce != nonce || ans.Link != tg.Link {
						t.Errorf("reply to seq %d: nonce %#x link %q, want %#x %q", seq, ans.Nonce, ans.Link, nonce, tg.Link)
					}
					return true
				}
			case <-deadline:
				return false
			}
		}
	}
	for _, kind := range []string{"raw socket", "ping socket"} {
		if kind == "ping socket" {
			must(t, os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 2147483647"), 0))
		}
		p := NewICMP()
		for _, v6 := range []bool{false, true} {
			got, err := p.Open(v6)
			must(t, err)
			if got != kind {
				t.Errorf("v6=%v: opened a %s, want a %s", v6, got, kind)
			}
		}
		seq := uint16(100)
		for _, tg := range targets {
			answered := false
			for try := 0; try < 3 && !answered; try++ { // the first may wait for neighbour resolution
				seq++
				answered = probe(p, tg, seq)
			}
			if !answered {
				t.Errorf("%s: no answer from %s", kind, tg.Gateway)
			}
		}
		// the gateway loses its addresses: no answer
		for _, addr := range gwAddrs {
			must(t, hb.AddrDel(pb, addr))
		}
		for _, tg := range targets {
			seq++
			if probe(p, tg, seq) {
				t.Errorf("%s: an answer from %s, which does not hold its address", kind, tg.Gateway)
			}
		}
		for _, addr := range gwAddrs {
			addr.Flags = 0x02
			must(t, hb.AddrAdd(pb, addr))
		}
		p.Close()
	}
	// the probe leaves by the target's link: a link that does not reach the gateway gets no answer
	must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pa1"}, PeerName: "pb1"}))
	for _, n := range []string{"pa1", "pb1"} {
		l, _ := netlink.LinkByName(n)
		must(t, netlink.LinkSetUp(l))
	}
	p := NewICMP()
	defer p.Close()
	if probe(p, Target{Link: "pa1", Src: netip.MustParseAddr("10.7.0.10"), Gateway: netip.MustParseAddr("10.7.0.20")}, 7) {
		t.Error("a probe through pa1 was answered: it did not leave by its link")
	}
	if _, err := net.InterfaceByName("pa0"); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
