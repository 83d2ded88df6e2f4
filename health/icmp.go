package health

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"unsafe"

	"golang.org/x/sys/unix"
)

// ICMP is the real prober: one socket per address family for all targets (not one per probe), each echo
// request sent out of its target's link from its source address (IP_PKTINFO), the replies read by one
// goroutine per socket. It uses a ping socket (SOCK_DGRAM, no privilege where net.ipv4.ping_group_range
// lets the process's group in; the kernel then picks the echo identifier and hands over only our replies)
// and falls back to a raw socket (CAP_NET_RAW), whose replies are told apart by the identifier.
//
// The sequence number of every request comes from the Monitor, in the one goroutine that calls Send, and
// the identifier is fixed per socket: nothing is shared between goroutines but the answers channel.
type ICMP struct {
	mu      sync.Mutex
	socks   map[int]*echoSocket // by address family
	answers chan Answer
	closed  bool
}

type echoSocket struct {
	conn net.PacketConn
	ping bool   // a ping socket: the kernel sets and checks the identifier
	id   uint16 // raw socket: our identifier
	v6   bool
	kind string
}

// NewICMP makes a prober; sockets open on the first probe of each family.
func NewICMP() *ICMP {
	return &ICMP{socks: map[int]*echoSocket{}, answers: make(chan Answer, 4096)}
}

// Open opens the socket of one family now (so that a missing privilege shows at start), and says which kind.
func (p *ICMP) Open(v6 bool) (kind string, err error) {
	s, err := p.socket(v6)
	if err != nil {
		return "", err
	}
	return s.kind, nil
}

func (p *ICMP) Answers() <-chan Answer { return p.answers }

// Close closes the sockets; their readers end.
func (p *ICMP) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, s := range p.socks {
		s.conn.Close()
	}
}

func (p *ICMP) socket(v6 bool) (*echoSocket, error) {
	fam := unix.AF_INET
	if v6 {
		fam = unix.AF_INET6
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.socks[fam]; s != nil {
		return s, nil
	}
	if p.closed {
		return nil, errors.New("prober closed")
	}
	s, err := openEcho(v6)
	if err != nil {
		return nil, err
	}
	p.socks[fam] = s
	go s.read(p.answers)
	return s, nil
}

func openEcho(v6 bool) (*echoSocket, error) {
	fam, proto, network, wildcard := unix.AF_INET, unix.IPPROTO_ICMP, "ip4:icmp", "0.0.0.0"
	if v6 {
		fam, proto, network, wildcard = unix.AF_INET6, unix.IPPROTO_ICMPV6, "ip6:ipv6-icmp", "::"
	}
	// a ping socket first: no privilege needed where ping_group_range admits us
	if fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto); err == nil {
		f := os.NewFile(uintptr(fd), "ping")
		c, err := net.FilePacketConn(f)
		f.Close()
		if err == nil {
			return &echoSocket{conn: c, ping: true, v6: v6, kind: "ping socket"}, nil
		}
	}
	c, err := net.ListenPacket(network, wildcard)
	if err != nil {
		return nil, fmt.Errorf("opening an ICMP socket (needs CAP_NET_RAW, or net.ipv4.ping_group_range admitting the watcher's group): %w", err)
	}
	return &echoSocket{conn: c, id: uint16(os.Getpid()), v6: v6, kind: "raw socket"}, nil
}

// Send sends one echo request for p.
func (p *ICMP) Send(pr Probe) error {
	t := pr.Target
	s, err := p.socket(t.Gateway.Is6())
	if err != nil {
		return err
	}
	ifi, err := net.InterfaceByName(t.Link)
	if err != nil {
		return err
	}
	msg := EchoRequest(t.Gateway.Is6(), s.id, pr.Seq)
	var oob []byte
	if s.v6 {
		oob = pktinfo6(ifi.Index, t.Src)
	} else {
		oob = pktinfo4(ifi.Index, t.Src)
	}
	ip := net.IP(t.Gateway.AsSlice())
	switch c := s.conn.(type) {
	case *net.IPConn:
		_, _, err = c.WriteMsgIP(msg, oob, &net.IPAddr{IP: ip})
	case *net.UDPConn:
		_, _, err = c.WriteMsgUDP(msg, oob, &net.UDPAddr{IP: ip})
	default:
		_, err = s.conn.WriteTo(msg, &net.IPAddr{IP: ip})
	}
	return err
}

// EchoRequest is an ICMP (or ICMPv6) echo request with identifier id and sequence seq and an 8-byte
// payload. The IPv4 checksum is computed here; the kernel computes the ICMPv6 one (and both on a ping
// socket, which also replaces id).
func EchoRequest(v6 bool, id, seq uint16) []byte {
	b := make([]byte, 16)
	b[0] = 8
	if v6 {
		b[0] = 128
	}
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "linkagg\x00")
	if !v6 {
		binary.BigEndian.PutUint16(b[2:], checksum(b))
	}
	return b
}

// ParseEchoReply returns the identifier and sequence of an echo reply (an ICMP message without IP header).
func ParseEchoReply(v6 bool, b []byte) (id, seq uint16, ok bool) {
	want := byte(0)
	if v6 {
		want = 129
	}
	if len(b) < 8 || b[0] != want || b[1] != 0 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), true
}

func (s *echoSocket) read(out chan<- Answer) {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		id, seq, ok := ParseEchoReply(s.v6, buf[:n])
		if !ok || (!s.ping && id != s.id) {
			continue // another program's ping, or not a reply
		}
		var ip net.IP
		switch a := from.(type) {
		case *net.IPAddr:
			ip = a.IP
		case *net.UDPAddr:
			ip = a.IP
		}
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		select {
		case out <- Answer{Seq: seq, From: addr.Unmap()}:
		default: // the loop is far behind: this answer counts as missed
		}
	}
}

func pktinfo4(ifindex int, src netip.Addr) []byte {
	b := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	info.Ifindex = int32(ifindex)
	if src.Is4() {
		info.Spec_dst = src.As4()
	}
	return b
}

func pktinfo6(ifindex int, src netip.Addr) []byte {
	b := make([]byte, unix.CmsgSpace(unix.SizeofInet6Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	info.Ifindex = uint32(ifindex)
	if src.Is6() {
		info.Addr = src.As16()
	}
	return b
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
