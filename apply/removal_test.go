package apply

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/linkagg/linkagg-hooks/plan"
)

// Make-before-break, measured: while a path leaves under a flow, no packet may fall into the TUN (marked
// into a path whose rule or route is already gone, it would find only the fakenet route via the TUN in
// main). For each kind of removal a UDP flow to the peer's VIP runs while the plan changes, a counter at
// postrouting counts what leaves by tun0 (must be 0), and the run's own write log gives the removal
// window: from the first write that takes away a leaving path's rule or route to the nft write that stops
// marking into it (0 when the table goes first).
func TestRemovalUnderFlow(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	recv := e.peerB()
	defer recv.Close()

	two := group("a", 0, 1)
	peerOut := group("a", 0, 1) // the peer loses path 2: its route there goes, it gets a sequence of its own
	peerOut.Routes = peerOut.Routes[:2]
	n := *peerOut.Nft
	n.Peers = []plan.PeerSequence{{VIPs: []netip.Addr{netip.MustParseAddr("10.99.255.20")}, Sequence: []uint32{0x10000000}}}
	peerOut.Nft = &n
	cases := []struct {
		name     string
		from, to plan.Desired
	}{
		{"member leaves", two, group("a", 0)},
		{"peer loses a path", two, peerOut},
		{"tables renumbered", two, renumbered(two, 20000)},
	}
	e.nft("add", "table", "ip", "tuncount")
	e.nft("add", "chain", "ip", "tuncount", "post", "{ type filter hook postrouting priority 0 ; }")
	e.nft("add", "rule", "ip", "tuncount", "post", "oifname", "tun0", "counter")
	for _, c := range cases {
		_, err := Down(c.to, DownOptions{Options: e.opts()})
		e.must(err)
		_, err = Apply(c.from, e.opts())
		e.must(err)
		e.nft("reset", "counters", "table", "ip", "tuncount")

		var log []stamped
		var mu sync.Mutex
		o := e.opts()
		o.Logf = func(f string, a ...any) {
			mu.Lock()
			log = append(log, stamped{time.Now(), fmt.Sprintf(f, a...)})
			mu.Unlock()
		}
		sent := e.flow(func() {
			_, err := Apply(c.to, o)
			e.must(err)
		})
		tun := tunCounter(e.nft("list", "table", "ip", "tuncount"))
		win := removalWindow(log)
		t.Logf("%s: %d datagrams sent during the change, %d into tun0; removal window %s", c.name, sent, tun, win)
		for _, l := range log {
			t.Logf("  %s %s", l.at.Format("15:04:05.000000"), l.line)
		}
		if sent == 0 {
			t.Errorf("%s: no datagram was sent during the change", c.name)
		}
		if tun != 0 {
			t.Errorf("%s: %d packets went into tun0 while the path left", c.name, tun)
		}
	}
	_, err := Down(two, DownOptions{Options: e.opts()})
	e.must(err)
}

type stamped struct {
	at   time.Time
	line string
}

// flow sends UDP datagrams from the VIP to the peer's VIP as fast as it can while change runs, and says
// how many it sent meanwhile. The socket is made on the test's thread, so it lives in namespace A.
func (e *env) flow(change func()) int64 {
	e.t.Helper()
	send, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP("10.99.255.10")})
	e.must(err)
	defer send.Close()
	dst := &net.UDPAddr{IP: net.ParseIP("10.99.255.20"), Port: 4789}
	var sent, during atomic.Int64
	var changing atomic.Bool
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := send.WriteToUDP([]byte("flow"), dst); err == nil {
				sent.Add(1)
				if changing.Load() {
					during.Add(1)
				}
			}
		}
	}()
	for sent.Load() < 1000 { // the flow runs (and the gateways' MACs are known) before the change
		time.Sleep(time.Millisecond)
	}
	changing.Store(true)
	change()
	changing.Store(false)
	close(stop)
	<-done
	return during.Load()
}

// tunCounter reads the packets of the one counter of the tuncount table.
func tunCounter(out string) int {
	var n int
	if i := strings.Index(out, "counter packets "); i >= 0 {
		fmt.Sscanf(out[i:], "counter packets %d", &n)
	}
	return n
}

// removalWindow is the time from the run's first deletion of a route or rule to its first nft write, when
// the deletion came first; 0 when the nft table changed before anything was removed.
func removalWindow(log []stamped) time.Duration {
	var del, nft time.Time
	for _, l := range log {
		switch {
		case del.IsZero() && (strings.HasPrefix(l.line, "delete route") || strings.HasPrefix(l.line, "delete rule")):
			del = l.at
		case nft.IsZero() && strings.Contains(l.line, "nft table"):
			nft = l.at
		}
	}
	if del.IsZero() || nft.IsZero() || !del.Before(nft) {
		return 0
	}
	return nft.Sub(del)
}
