// Package apply is the only code of linkagg that writes to the kernel. It converges the kernel to a
// plan.Desired (Apply), removes what a group owns (Down), creates the TUN for ifupdown's pre-up
// (EnsureTUN) and compares the kernel with a plan (Status).
//
// Every write is recorded with its undo; a failed Apply runs the undos in reverse, so the kernel is left as
// it was found. Ownership is read from kernel tags (route/rule protocol plan.RouteProtocol, nft table
// prefix plan.NftTablePrefix, link alias plan.LinkAlias), so Down works without the state under RunDir.
package apply

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Options tell Apply, Down and EnsureTUN where their state lives and how to log.
type Options struct {
	RunDir      string        // state + lock dir, e.g. /run/linkagg
	LockTimeout time.Duration // default 30s
	FailAt      int           // test hook: the Nth kernel write (1-based) fails with an injected error; 0 = never
	Logf        func(format string, args ...any)
}

// DownOptions are Options for Down. KeepTUN keeps the device (ifupdown pre-down: ifupdown still has
// its own down steps on it); post-down removes it.
type DownOptions struct {
	Options
	KeepTUN bool
}

// Result tells what a run did.
type Result struct {
	Writes int      // kernel writes done (0 when already converged)
	Ops    []string // human lines of what changed
}

// ErrInjected is the error of the write selected by Options.FailAt.
var ErrInjected = errors.New("injected failure")

// txn counts kernel writes and remembers how to undo them.
type txn struct {
	o      Options
	dry    bool // Status: record what would be done, write nothing
	writes int
	ops    []string
	undos  []undo
	drift  map[string][]string // kind -> lines (dry run)
	counts map[string]*Kind    // kind -> desired/present (Status)
	// sysctlWAL: the sysctl state was saved ahead of a write in this run (undo puts the old file back)
	sysctlWAL bool
}

type undo struct {
	desc string
	fn   func() error
}

// do performs one kernel write. desc is the human line; kind groups it for Status.
func (t *txn) do(kind, desc string, fn func() error, un func() error) error {
	if t.dry {
		if t.drift == nil {
			t.drift = map[string][]string{}
		}
		t.drift[kind] = append(t.drift[kind], desc)
		return nil
	}
	t.writes++
	if t.o.FailAt > 0 && t.writes == t.o.FailAt {
		t.writes-- // not written
		return fmt.Errorf("%s: %w (write %d)", desc, ErrInjected, t.writes)
	}
	if err := fn(); err != nil {
		t.writes-- // nothing was written
		return fmt.Errorf("%s: %w", desc, err)
	}
	t.ops = append(t.ops, desc)
	t.logf("%s", desc)
	if un != nil {
		t.undos = append(t.undos, undo{desc, un})
	}
	return nil
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

func (t *txn) logf(format string, args ...any) {
	if t.o.Logf != nil {
		t.o.Logf(format, args...)
	}
}

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

func (t *txn) result() Result { return Result{Writes: t.writes, Ops: t.ops} }

// lock takes the exclusive flock on RunDir/lock, creating RunDir if missing.
func lock(o Options) (func(), error) {
	if o.RunDir == "" {
		return nil, errors.New("apply: Options.RunDir is empty")
	}
	if err := os.MkdirAll(o.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating run dir: %w", err)
	}
	path := filepath.Join(o.RunDir, "lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock: %w", err)
	}
	timeout := o.LockTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another linkagg run holds %s for more than %s", path, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
