package apply

import (
	"net"

	"github.com/vishvananda/netlink"
)

// NIC is a member link's kernel counters (what `ip -s link` shows), for status. Read only.
type NIC struct {
	Name      string
	Exists    bool
	Up        bool
	Carrier   bool
	RxBytes   uint64
	TxBytes   uint64
	RxPackets uint64
	TxPackets uint64
	RxErrors  uint64
	TxErrors  uint64
	RxDropped uint64
	TxDropped uint64
}

// NICStats reads link name's counters; a missing link gives Exists false and no error.
func (s *Session) NICStats(name string) (NIC, error) {
	n := NIC{Name: name}
	l, err := s.linkByName(name)
	if err != nil || l == nil {
		return n, err
	}
	a := l.Attrs()
	n.Exists = true
	n.Up = a.Flags&net.FlagUp != 0
	n.Carrier = n.Up && (a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown)
	if s := a.Statistics; s != nil {
		n.RxBytes, n.TxBytes, n.RxPackets, n.TxPackets = s.RxBytes, s.TxBytes, s.RxPackets, s.TxPackets
		n.RxErrors, n.TxErrors, n.RxDropped, n.TxDropped = s.RxErrors, s.TxErrors, s.RxDropped, s.TxDropped
	}
	return n, nil
}
