package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/cmd/internal/engine"
	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// probeFails is how many probes in a row must go unanswered before a link counts as passing no traffic:
// one lost echo is normal on a loaded link.
const probeFails = 3

// probeTarget is one member link and the gateway its probe asks: the gateway, on that link's own subnet, of
// the first peer that has one there.
type probeTarget struct {
	link    string
	src, gw netip.Addr
}

// probeTargets lists, for every running group, each member link with carrier and a peer gateway on its
// subnet. A link already taken out for a failed probe is still listed, so that its recovery is seen.
func probeTargets(e *engine.Engine) ([]probeTarget, error) {
	var out []probeTarget
	err := e.Run(true, func(ev *engine.Event) error {
		seen := map[string]bool{}
		for _, g := range ev.RunningGroups() {
			for i, own := range g.Own {
				l := holder(ev.Links, own)
				if l == nil || !l.Up || !l.Carrier || seen[l.Name] {
					continue
				}
				if gw, ok := gatewayOn(l, g, i); ok {
					seen[l.Name] = true
					out = append(out, probeTarget{link: l.Name, src: own, gw: gw})
				}
			}
		}
		return nil
	})
	return out, err
}

func holder(links []plan.Local, a netip.Addr) *plan.Local {
	for i := range links {
		for _, p := range links[i].Addrs {
			if p.Addr() == a {
				return &links[i]
			}
		}
	}
	return nil
}

func gatewayOn(l *plan.Local, g *parser.Group, path int) (netip.Addr, bool) {
	for _, peer := range g.Peers {
		gw := peer.Gateways[path]
		for _, p := range l.Addrs {
			if p.Contains(gw) && p.Addr() != gw {
				return gw, true
			}
		}
	}
	return netip.Addr{}, false
}

var echoID atomic.Uint32

// probeAll sends one ICMP echo per target, all at once, and reports which were answered within timeout.
func probeAll(ts []probeTarget, timeout time.Duration) map[string]bool {
	res := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, t := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, _ := echo(t, timeout)
			mu.Lock()
			res[t.link] = ok
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res
}

// echo sends one ICMP (or ICMPv6) echo request from t.src out of t.link to t.gw on a raw socket bound to
// the link, and waits for the matching reply. The product executes no ping: this is the whole probe.
func echo(t probeTarget, timeout time.Duration) (bool, error) {
	v6 := t.gw.Is6()
	fam, proto, reqType, repType := unix.AF_INET, unix.IPPROTO_ICMP, byte(8), byte(0)
	if v6 {
		fam, proto, reqType, repType = unix.AF_INET6, unix.IPPROTO_ICMPV6, 128, 129
	}
	fd, err := unix.Socket(fam, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return false, fmt.Errorf("raw socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, t.link); err != nil {
		return false, fmt.Errorf("binding to %s: %w", t.link, err)
	}
	var src, dst unix.Sockaddr
	if v6 {
		src, dst = &unix.SockaddrInet6{Addr: t.src.As16()}, &unix.SockaddrInet6{Addr: t.gw.As16()}
	} else {
		src, dst = &unix.SockaddrInet4{Addr: t.src.As4()}, &unix.SockaddrInet4{Addr: t.gw.As4()}
	}
	if err := unix.Bind(fd, src); err != nil {
		return false, fmt.Errorf("binding to %s: %w", t.src, err)
	}
	id := uint16(os.Getpid()) ^ uint16(echoID.Add(1)<<8)
	seq := uint16(echoID.Load())
	pkt := make([]byte, 16)
	pkt[0] = reqType
	binary.BigEndian.PutUint16(pkt[4:], id)
	binary.BigEndian.PutUint16(pkt[6:], seq)
	copy(pkt[8:], "linkagg\x00")
	if !v6 { // the kernel computes the ICMPv6 checksum itself
		binary.BigEndian.PutUint16(pkt[2:], checksum(pkt))
	}
	if err := unix.Sendto(fd, pkt, 0, dst); err != nil {
		return false, err
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(left.Milliseconds())+1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return false, err
		}
		if n <= 0 {
			continue
		}
		m, from, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			continue
		}
		b := buf[:m]
		if !v6 && len(b) > 0 {
			b = b[int(b[0]&0x0f)*4:] // a raw IPv4 socket hands over the IP header too
		}
		if len(b) < 8 || b[0] != repType || binary.BigEndian.Uint16(b[4:]) != id || binary.BigEndian.Uint16(b[6:]) != seq {
			continue
		}
		var a netip.Addr
		switch f := from.(type) {
		case *unix.SockaddrInet4:
			a = netip.AddrFrom4(f.Addr)
		case *unix.SockaddrInet6:
			a = netip.AddrFrom16(f.Addr)
		}
		if a == t.gw {
			return true, nil
		}
	}
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
