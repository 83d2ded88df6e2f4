// Command linkagg-ifupdown is the hook ifupdown runs from /etc/network/if-{pre-up,up,down,post-down}.d
// for every interface. It exits 0 at once for events that are not ours (`ifup -a` meta calls, other
// families) and fails an ifup only when the interface's own stanza is a linkagg group that cannot be set up.
// A run that takes longer than LINKAGG_TIMEOUT (default 20s; the environment or /etc/default/linkagg) is
// ended by its watchdog, so no hook can hang `ifup -a` at boot.
package main

import (
	"fmt"
	"os"

	"github.com/linkagg/linkagg-hooks/cmd/internal/engine"
	"github.com/linkagg/linkagg-hooks/hooks"
)

func main() {
	in, ok := hooks.FromIfupdown(os.Getenv)
	if !ok {
		os.Exit(0)
	}
	log := engine.NewLogger("linkagg-ifupdown", in.Verbose)
	e := engine.New(log)
	ours := hooks.HasLinkaggOptions(os.Getenv)
	// at the deadline: ifup of our own stanza fails, any other interface's event never does
	stop := e.Watchdog(fmt.Sprintf("%s %s %s: ", in.Iface, in.Family, in.Phase), func() int {
		if ours {
			return 1
		}
		return 0
	})
	err := e.Handle(in, ours)
	stop()
	if err != nil {
		log.Errorf("%s %s %s: %v", in.Iface, in.Family, in.Phase, err)
		if ours {
			os.Exit(1)
		}
	}
}
