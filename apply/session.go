package apply

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	nlconn "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/internal/rundir"
)

// Session is one event's hold on the host: the run dir and its lock, and the kernel handles of one network
// namespace (netlink, generic netlink for MPTCP, nftables, /proc/sys). The engine opens one per event and
// does snapshot → plan → precheck → apply → save under it, so a run that waited for the lock plans from
// what the previous run left, never from what it saw before waiting.
type Session struct {
	o      Options
	dir    *rundir.Dir // nil for a read-only session whose run dir does not exist
	unlock func()
	ns     netns.NsHandle
	nl     *netlink.Handle
	genl   *nl.NetlinkSocket // lazily, for MPTCP
	proc   string
	// failAt: test hook, the Nth kernel write (1-based) of this session fails with ErrInjected; 0 = never
	failAt int
	writes int // kernel writes of this session, across its runs (failAt counts them)
	// failSave: test hook, saving the state after a run's writes fails with this error
	failSave error
	// nftDefaultBuffers: test hook, the nftables sockets keep the kernel's default buffer sizes
	nftDefaultBuffers bool
}

// Open starts a session in the calling thread's network namespace: it checks (and creates) the run dir and
// takes the lock, waiting at most Options.LockTimeout.
func Open(o Options) (*Session, error) {
	dir, err := rundir.Open(o.RunDir)
	if err != nil {
		return nil, err
	}
	unlock, err := lock(dir, o.LockTimeout)
	if err != nil {
		dir.Close()
		return nil, err
	}
	s, err := newSession(o, dir)
	if err != nil {
		unlock()
		dir.Close()
		return nil, err
	}
	s.unlock = unlock
	if err := dir.RemoveStale(); err != nil {
		s.logf("cleaning %s: %v", dir.Path, err)
	}
	return s, nil
}

// OpenReadOnly starts a session that takes no lock and writes nothing (status): it reads the run dir when
// it exists and is trustworthy, and the kernel.
func OpenReadOnly(o Options) (*Session, error) {
	var dir *rundir.Dir
	if fi, err := os.Lstat(o.RunDir); err == nil && fi.IsDir() {
		if dir, err = rundir.OpenExisting(o.RunDir); err != nil {
			return nil, err
		}
	}
	return newSession(o, dir)
}

func newSession(o Options, dir *rundir.Dir) (*Session, error) {
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("opening the network namespace: %w", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netlink: %w", err)
	}
	proc := o.ProcSys
	if proc == "" {
		proc = "/proc/sys"
	}
	return &Session{o: o, dir: dir, ns: ns, nl: h, proc: strings.TrimSuffix(proc, "/")}, nil
}

// Close releases the lock and every handle.
func (s *Session) Close() {
	if s == nil {
		return
	}
	if s.genl != nil {
		s.genl.Close()
	}
	if s.nl != nil {
		s.nl.Close()
	}
	if s.ns.IsOpen() {
		s.ns.Close()
	}
	if s.unlock != nil {
		s.unlock()
	}
	s.dir.Close()
}

// bpffs is where the session looks for mptcp-transparent pins.
func (s *Session) bpffs() string {
	if s.o.BPFFS != "" {
		return s.o.BPFFS
	}
	return DefaultBPFFS
}

// RunDir is the session's checked run dir (nil when read-only and absent).
func (s *Session) RunDir() *rundir.Dir { return s.dir }

func (s *Session) logf(format string, args ...any) {
	if s.o.Logf != nil {
		s.o.Logf(format, args...)
	}
}

// nft opens a netlink socket to nftables in the session's namespace for one transaction.
func (s *Session) nft() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithNetNSFd(int(s.ns))}
	if !s.nftDefaultBuffers {
		opts = append(opts, nftables.WithSockOptions(nftBuffers))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

// nftBufferBytes sizes the send and receive buffers of our nftables sockets. google/nftables sends a
// whole transaction in one sendmsg (refused with EMSGSIZE beyond the send buffer) and asks an
// acknowledgement for every message of it, which the kernel queues before we read any: with the default
// 208 KiB receive buffer, a table of ~110 paths or more overflows it (ENOBUFS), although the kernel
// committed the transaction. Like nft(8), we force larger buffers (CAP_NET_ADMIN), or else raise them as far
// as net.core.{w,r}mem_max allow; parser.MaxSequenceFor keeps validated tables within the default send
// buffer anyway, and replaceNft reads the table back after ENOBUFS.
const nftBufferBytes = 4 << 20

func nftBuffers(c *nlconn.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil // best effort
	}
	_ = rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], nftBufferBytes) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], nftBufferBytes)
			}
		}
	})
	return nil
}

// genlExec runs one generic netlink request on the session's socket.
func (s *Session) genlExec(req *nl.NetlinkRequest) ([][]byte, error) {
	if s.genl == nil {
		sock, err := nl.GetNetlinkSocketAt(s.ns, netns.None(), unix.NETLINK_GENERIC)
		if err != nil {
			return nil, fmt.Errorf("generic netlink socket: %w", err)
		}
		if err := sock.SetSendTimeout(&nl.SocketTimeoutTv); err != nil {
			sock.Close()
			return nil, err
		}
		if err := sock.SetReceiveTimeout(&nl.SocketTimeoutTv); err != nil {
			sock.Close()
			return nil, err
		}
		s.genl = sock
	}
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_GENERIC: {Socket: s.genl}}
	return req.Execute(unix.NETLINK_GENERIC, 0)
}

// ---- kernel reads shared by every step ----

func (s *Session) linkList() ([]netlink.Link, error) { return retry(s.nl.LinkList) }

func (s *Session) addrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	return retry(func() ([]netlink.Addr, error) { return s.nl.AddrList(l, family) })
}

// linkByName returns nil, nil when there is no such link.
func (s *Session) linkByName(name string) (netlink.Link, error) {
	l, err := s.nl.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, nil
		}
		return nil, fmt.Errorf("looking up %s: %w", name, err)
	}
	return l, nil
}

// linkByIndex returns nil, nil when there is no such link.
func (s *Session) linkByIndex(index int) (netlink.Link, error) {
	l, err := s.nl.LinkByIndex(index)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, nil
		}
		return nil, fmt.Errorf("looking up link %d: %w", index, err)
	}
	return l, nil
}

func (s *Session) linkName(index int) string {
	if l, err := s.linkByIndex(index); err == nil && l != nil {
		return l.Attrs().Name
	}
	return fmt.Sprintf("if%d", index)
}

// listRoutes dumps the routes of every table of one family.
func (s *Session) listRoutes(family int) ([]netlink.Route, error) {
	return retry(func() ([]netlink.Route, error) {
		return s.nl.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
}

func (s *Session) listRules(family int) ([]netlink.Rule, error) {
	return retry(func() ([]netlink.Rule, error) { return s.nl.RuleList(family) })
}
