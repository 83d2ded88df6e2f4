// Command linkagg-networkd is the hook networkd-dispatcher runs from its state folders
// (/usr/lib/networkd-dispatcher/{routable,degraded,carrier,no-carrier,off}.d) for every link whose operational
// state changes. It reads IFACE, STATE, OperationalState, AdministrativeState, IP_ADDRS, IP6_ADDRS and the
// `json` variable, and converges the groups of /etc/linkagg/*.toml that use the interface: a group's own
// TUN brings it up or down, a member NIC's carrier joins or leaves its path. The dispatcher passes its own
// environment through, so LINKAGG_CONFDIR, LINKAGG_INTERFACES and LINKAGG_RUNDIR set on its service apply
// here too. The exit status is 1 when something could not be done (the dispatcher logs it); the reason is
// in the journal under the identifier linkagg-networkd.
package main

import (
	"fmt"
	"os"

	"github.com/linkagg/linkagg-hooks/cmd/internal/engine"
	"github.com/linkagg/linkagg-hooks/hooks"
)

func main() {
	ev, ok := hooks.FromNetworkd(os.Getenv, os.Getenv("json"))
	if !ok {
		os.Exit(0)
	}
	log := engine.NewLogger("linkagg-networkd", os.Getenv("LINKAGG_VERBOSE") == "1")
	e := engine.New(log)
	// at the deadline: a failure for the event of a group's own TUN, none for any other interface's
	stop := e.Watchdog(fmt.Sprintf("%s %s: ", ev.Iface, ev.State), func() int {
		if e.OwnEvent.Load() {
			return 1
		}
		return 0
	})
	err := e.HandleNetworkd(ev)
	stop()
	if err != nil {
		log.Errorf("%s %s: %v", ev.Iface, ev.State, err)
		os.Exit(1)
	}
}
