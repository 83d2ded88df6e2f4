package health

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ICMP is the real prober: one socket per address family for all targets (not one per probe), each echo
// request sent out of its target's link from its source address (IP_PKTINFO), the replies read by one
// goroutine per socket. It uses a ping socket (SOCK_DGRAM, no privilege where net.ipv4.ping_group_range
// lets the process's group in; the kernel then picks the echo identifier and hands over only our replies)
// and falls back to a raw socket (CAP_NET_RAW), whose replies are told apart by the identifier.
//
// The sequence number and nonce of every request come from the Monitor, in the one goroutine that calls
// Send, and the identifier is fixed per socket; a reply carries the link it arrived on (IP_PKTINFO), named
// as the last probe that left by that interface named it. Shared between goroutines: the answers channel
// and that map of names, under mu.
type ICMP struct {
	mu      sync.Mutex
	socks   map[int]*echoSocket // by address family
	answers chan Answer
	closed  bool
	links   map[int]string // ifindex -> the link name a probe last left by, to name a reply's arrival link
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
	return &ICMP{socks: map[int]*echoSocket{}, answers: make(chan Answer, 4096), links: map[int]string{}}
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
	go s.read(p.answers, p.linkName)
	return s, nil
}

// linkName names the link of ifindex as the last probe that left by it did ("" if none did).
func (p *ICMP) linkName(ifindex int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.links[ifindex]
}

// recvPktinfo asks the kernel for each datagram's arrival interface (IP_PKTINFO, IPV6_RECVPKTINFO).
func recvPktinfo(c net.PacketConn, v6 bool) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return errors.New("not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		if v6 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		}
	}); err != nil {
		return err
	}
	return serr
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
			if err := recvPktinfo(c, v6); err != nil {
				c.Close()
				return nil, fmt.Errorf("asking for the arrival link of replies: %w", err)
			}
			return &echoSocket{conn: c, ping: true, v6: v6, kind: "ping socket"}, nil
		}
	}
	c, err := net.ListenPacket(network, wildcard)
	if err != nil {
		return nil, fmt.Errorf("opening an ICMP socket (needs CAP_NET_RAW, or net.ipv4.ping_group_range admitting the watcher's group): %w", err)
	}
	if err := recvPktinfo(c, v6); err != nil {
		c.Close()
		return nil, fmt.Errorf("asking for the arrival link of replies: %w", err)
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
	p.mu.Lock()
	p.links[ifi.Index] = t.Link
	p.mu.Unlock()
	msg := EchoRequest(t.Gateway.Is6(), s.id, pr.Seq, pr.Nonce)
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

// echoMagic opens the payload of our echo requests; the probe's nonce follows it.
const echoMagic = "linkagg\x00"

// EchoRequest is an ICMP (or ICMPv6) echo request with identifier id, sequence seq and a 16-byte payload:
// echoMagic and the nonce. The IPv4 checksum is computed here; the kernel computes the ICMPv6 one (and both
// on a ping socket, which also replaces id).
func EchoRequest(v6 bool, id, seq uint16, nonce uint64) []byte {
	b := make([]byte, 24)
	b[0] = 8
	if v6 {
		b[0] = 128
	}
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], echoMagic)
	binary.BigEndian.PutUint64(b[16:], nonce)
	if !v6 {
		binary.BigEndian.PutUint16(b[2:], checksum(b))
	}
	return b
}

// ParseEchoReply returns the identifier, sequence and nonce of an echo reply to one of our requests (an
// ICMP message without IP header); ok is false for anything else.
func ParseEchoReply(v6 bool, b []byte) (id, seq uint16, nonce uint64, ok bool) {
	want := byte(0)
	if v6 {
		want = 129
	}
	if len(b) < 24 || b[0] != want || b[1] != 0 || string(b[8:16]) != echoMagic {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), binary.BigEndian.Uint64(b[16:]), true
}

// arrival is the interface index of an IP_PKTINFO or IPV6_PKTINFO control message in oob (0: none).
func arrival(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			return int((*unix.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0])).Ifindex)
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			return int((*unix.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0])).Ifindex)
		}
	}
	return 0
}

func (s *echoSocket) read(out chan<- Answer, linkName func(ifindex int) string) {
	buf := make([]byte, 1500)
	oob := make([]byte, 128)
	for {
		var (
			n, oobn int
			ip      net.IP
			err     error
		)
		switch c := s.conn.(type) {
		case *net.IPConn:
			var a *net.IPAddr
			n, oobn, _, a, err = c.ReadMsgIP(buf, oob)
			if a != nil {
				ip = a.IP
			}
		case *net.UDPConn:
			var a *net.UDPAddr
			n, oobn, _, a, err = c.ReadMsgUDP(buf, oob)
			if a != nil {
				ip = a.IP
			}
		default:
			err = net.ErrClosed
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		msg := buf[:n]
		if !s.ping && !s.v6 {
			// a raw IPv4 socket's ReadMsgIP keeps the IP header (ReadFrom strips it)
			if n < 20 || msg[0]>>4 != 4 || int(msg[0]&0x0f)*4 > n {
				continue
			}
			msg = msg[int(msg[0]&0x0f)*4:]
		}
		id, seq, nonce, ok := ParseEchoReply(s.v6, msg)
		if !ok || (!s.ping && id != s.id) {
			continue // another program's ping, or not a reply
		}
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		select {
		case out <- Answer{Seq: seq, Nonce: nonce, From: addr.Unmap(), Link: linkName(arrival(oob[:oobn]))}:
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
