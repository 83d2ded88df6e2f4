package apply

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ReleaseQueued deletes the neighbour entries of dev that are still being resolved (INCOMPLETE, PROBE).
// It is for a member link that just lost its carrier: packets sent through it in the moment before its
// path left the mark sequence wait in such an entry's queue until resolution fails (about 3 s). While
// they wait, TCP will not retransmit them (the kernel does not resend a segment whose earlier copy is
// still queued on the host), so one striped flow stalls for those seconds although its other paths work.
// Deleting the entry frees the queue at once; the kernel makes a new entry when the link returns. Entries
// that are resolved, permanent or static are left alone. Returns how many were deleted.
func (s *Session) ReleaseQueued(dev string) (int, error) {
	l, err := s.linkByName(dev)
	if err != nil || l == nil {
		return 0, err
	}
	n := 0
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		neighs, err := retry(func() ([]netlink.Neigh, error) { return s.nl.NeighList(l.Attrs().Index, fam) })
		if err != nil {
			return n, fmt.Errorf("listing neighbours of %s: %w", dev, err)
		}
		for _, ne := range neighs {
			if ne.State&(unix.NUD_INCOMPLETE|unix.NUD_PROBE) == 0 || ne.State&(unix.NUD_PERMANENT|unix.NUD_NOARP) != 0 {
				continue
			}
			if err := s.nl.NeighDel(&ne); err != nil && err != unix.ENOENT {
				return n, fmt.Errorf("deleting neighbour %s on %s: %w", ne.IP, dev, err)
			}
			n++
		}
	}
	return n, nil
}
