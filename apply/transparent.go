package apply

// mptcp-transparent as one step of a group's run (the program and its pins: mptcpify.go).

import (
	"fmt"

	"github.com/linkagg/linkagg-hooks/plan"
)

// syncTransparent makes the group's pins what d says: attached with d.Transparent's scope, or none. next
// records the pin folder while the group has one.
func syncTransparent(t *txn, d plan.Desired, next *Footprint) error {
	bpffs := t.s.bpffs()
	cur, err := FindTransparent(bpffs, d.Group)
	if err != nil {
		return err
	}
	if d.Transparent == nil {
		t.count(transparentKind, 0, 0, b2i(cur != nil))
		next.Transparent = ""
		return detachTransparent(t, bpffs, d.Group, cur, true)
	}
	if next.Transparent, _, err = transparentDir(bpffs, d.Group); err != nil {
		return err
	}
	return attachTransparent(t, bpffs, d.Group, *d.Transparent, cur)
}

// removeTransparent detaches the group's program and removes its pins (Down), found by the group's name.
func removeTransparent(t *txn, group string) error {
	bpffs := t.s.bpffs()
	cur, err := FindTransparent(bpffs, group)
	if err != nil {
		return err
	}
	return detachTransparent(t, bpffs, group, cur, false)
}

// transparentPossible refuses, before the first write, a plan with mptcp-transparent on a host that cannot
// run the program: one line naming what is missing (the hook, BTF, MPTCP, a bpffs, or the kernel's consent
// to trampoline programs). A group whose current program is attached already needs no trial.
func (s *Session) transparentPossible(d plan.Desired) error {
	if d.Transparent == nil {
		return nil
	}
	if cur, err := FindTransparent(s.bpffs(), d.Group); err == nil && cur != nil && cur.Linked && cur.Current {
		return nil
	}
	if err := TransparentMissing(s.bpffs()); err != nil {
		return &ConflictError{Option: transparentKind, Msg: err.Error()}
	}
	return nil
}

// TransparentStatus is mptcp-transparent as status shows it: the scope the plan wants (nil: none) and the
// group's pins as found (nil: none).
type TransparentStatus struct {
	Want  *plan.Transparent
	Found *Transparent
}

func (s *Session) transparentStatus(d plan.Desired) (*TransparentStatus, error) {
	found, err := FindTransparent(s.bpffs(), d.Group)
	if err != nil {
		return nil, err
	}
	if d.Transparent == nil && found == nil {
		return nil, nil
	}
	return &TransparentStatus{Want: d.Transparent, Found: found}, nil
}

// Attached tells whether the planned scope is in force: the current program linked, reading a map with
// that scope.
func (s *TransparentStatus) Attached() bool {
	f := s.Found
	return s.Want != nil && f != nil && f.Linked && f.MapOK && f.Scope.Equal(*s.Want)
}

func (s *TransparentStatus) String() string {
	switch {
	case s.Want == nil:
		return fmt.Sprintf("%s (not configured: apply removes it)", s.Found)
	case s.Found == nil:
		return fmt.Sprintf("mptcp-transparent %s: NOT attached (no pins)", s.Want)
	case !s.Found.Scope.Equal(*s.Want):
		return fmt.Sprintf("%s; configured: %s (apply changes the scope)", s.Found, s.Want)
	}
	return s.Found.String()
}
