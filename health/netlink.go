package health

import (
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/linkagg/linkagg-hooks/plan"
)

// NetlinkSource is the real link source: netlink link and address notifications, and snapshots from
// snapshot (apply.Links: the same view the planners get).
type NetlinkSource struct {
	snapshot func() ([]plan.Local, error)
	changes  chan string
	errs     chan error
}

// Subscribe starts listening until done is closed. Subscribe before the first snapshot, so that no change
// falls between the two.
func Subscribe(snapshot func() ([]plan.Local, error), done <-chan struct{}) (*NetlinkSource, error) {
	s := &NetlinkSource{snapshot: snapshot, changes: make(chan string, 256), errs: make(chan error, 2)}
	links := make(chan netlink.LinkUpdate, 256)
	addrs := make(chan netlink.AddrUpdate, 256)
	onErr := func(err error) {
		select {
		case s.errs <- fmt.Errorf("netlink subscription: %w", err):
		default:
		}
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr, ReceiveBufferSize: 1 << 20}); err != nil {
		return nil, fmt.Errorf("subscribing to link updates: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr, ReceiveBufferSize: 1 << 20}); err != nil {
		return nil, fmt.Errorf("subscribing to address updates: %w", err)
	}
	go func() {
		defer close(s.changes)
		for links != nil || addrs != nil {
			var what string
			select {
			case u, ok := <-links:
				if !ok {
					links = nil
					continue
				}
				what = fmt.Sprintf("link %s flags %s oper %s", u.Attrs().Name, u.Attrs().Flags, u.Attrs().OperState)
			case u, ok := <-addrs:
				if !ok {
					addrs = nil
					continue
				}
				what = fmt.Sprintf("address %s %s", u.LinkAddress.String(), map[bool]string{true: "added", false: "removed"}[u.NewAddr])
			case <-done:
				return
			}
			select {
			case s.changes <- what:
			case <-done:
				return
			}
		}
	}()
	return s, nil
}

func (s *NetlinkSource) Snapshot() ([]plan.Local, error) { return s.snapshot() }
func (s *NetlinkSource) Changes() <-chan string          { return s.changes }
func (s *NetlinkSource) Errors() <-chan error            { return s.errs }
