// Package apply is the only code of linkagg that writes to the kernel. A Session (one per event) holds the
// lock and the kernel handles; under it, Apply converges the kernel to a plan.Desired, Down removes what a
// group owns, EnsureTUN creates the TUN for ifupdown's pre-up and Status compares the kernel with a plan.
//
// Every write is recorded with its undo; a failed Apply runs the undos in reverse, so the kernel is left as
// it was found. Ownership is read from kernel tags (route/rule protocol plan.RouteProtocol, nft table
// prefix plan.NftTablePrefix and rule tags, link alias plan.LinkAlias) and from each group's recorded
// footprint, so Down finds what an edited or removed stanza left, and works without the run dir too.
package apply

import (
	"errors"
	"fmt"
	"time"
)

// Options tell a Session where its state lives and how to log.
type Options struct {
	RunDir      string        // state + lock dir, e.g. /run/linkagg
	LockTimeout time.Duration // default DefaultLockTimeout
	ProcSys     string        // default /proc/sys
	BPFFS       string        // the BPF file system of mptcp-transparent's pins; default DefaultBPFFS
	Logf        func(format string, args ...any)
}

// DownOptions are Options for the one-shot Down. KeepTUN keeps the device (ifupdown pre-down: ifupdown
// still has its own down steps on it); post-down removes it.
type DownOptions struct {
	Options
	KeepTUN bool
}

// Result tells what a run did.
type Result struct {
	Writes int      // kernel writes done (0 when already converged)
	Ops    []string // human lines of what changed
}

// ErrInjected is the error of the write a test selected to fail.
var ErrInjected = errors.New("injected failure")

// ErrStopped is Apply's answer to a plan made while the group's TUN was up (plan.TUN.Running) when the TUN
// is down or gone by the time it applies: the group was stopped meanwhile, and setting the TUN up again
// would undo that stop. Nothing of the run stays; the group's own down event takes it down.
var ErrStopped = errors.New("the TUN went down or away after the plan was made: the group was stopped meanwhile, nothing applied")

// txn counts one run's kernel writes and remembers how to undo them.
type txn struct {
	s      *Session
	dry    bool // Status: record what would be done, write nothing
	writes int
	ops    []string
	undos  []undo
	drift  map[string][]string // kind -> lines (dry run)
	counts map[string]*Kind    // kind -> desired/present (Status)
	// sysctlWAL: the sysctl state was saved ahead of a write in this run (undo puts the old file back)
	sysctlWAL bool
	// held: kernel objects this run keeps open until it ends (a replaced BPF link stays attached, and the
	// undo can pin it again); close releases them, after a rollback or once the run succeeded
	held []func()
}

type undo struct {
	desc string
	fn   func() error
}

func (s *Session) txn(dry bool) *txn { return &txn{s: s, dry: dry} }

// do performs one kernel write. desc is the human line; kind groups it for Status.
func (t *txn) do(kind, desc string, fn func() error, un func() error) error {
	if t.dry {
		if t.drift == nil {
			t.drift = map[string][]string{}
		}
		t.drift[kind] = append(t.drift[kind], desc)
		return nil
	}
	t.s.writes++
	if t.s.failAt > 0 && t.s.writes == t.s.failAt {
		t.s.writes--
		return fmt.Errorf("%s: %w (write %d)", desc, ErrInjected, t.s.writes+1)
	}
	if err := fn(); err != nil {
		t.s.writes--
		return fmt.Errorf("%s: %w", desc, err)
	}
	t.writes++
	t.ops = append(t.ops, desc)
	t.logf("%s", desc)
	if un != nil {
		t.undos = append(t.undos, undo{desc, un})
	}
	return nil
}

// journal records an undo that is not a kernel write (a state file put back).
func (t *txn) journal(desc string, un func() error) {
	if !t.dry {
		t.undos = append(t.undos, undo{desc, un})
	}
}

// count records, for Status, how many objects of a kind are desired, present, and owned but not desired.
func (t *txn) count(kind string, desired, present, extra int) {
	if t.counts == nil {
		t.counts = map[string]*Kind{}
	}
	k := t.counts[kind]
	if k == nil {
		k = &Kind{Kind: kind}
		t.counts[kind] = k
	}
	k.Desired += desired
	k.Present += present
	k.Extra += extra
}

func (t *txn) logf(format string, args ...any) { t.s.logf(format, args...) }

// rollback runs the undos in reverse. It returns the errors of undos that failed.
func (t *txn) rollback() error {
	var errs []error
	for i := len(t.undos) - 1; i >= 0; i-- {
		u := t.undos[i]
		if err := u.fn(); err != nil {
			errs = append(errs, fmt.Errorf("undo %q: %w", u.desc, err))
		} else {
			t.logf("undone: %s", u.desc)
		}
	}
	t.undos = nil
	return errors.Join(errs...)
}

// hold keeps release for close.
func (t *txn) hold(release func()) { t.held = append(t.held, release) }

// close releases what the run held.
func (t *txn) close() {
	for i := len(t.held) - 1; i >= 0; i-- {
		t.held[i]()
	}
	t.held = nil
}

func (t *txn) result() Result { return Result{Writes: t.writes, Ops: t.ops} }
