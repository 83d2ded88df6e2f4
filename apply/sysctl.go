package apply

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/plan"
)

func sysctlPath(proc, key string) (string, error) {
	k := strings.TrimPrefix(strings.ReplaceAll(key, ".", "/"), "/")
	if strings.Contains(key, "/") {
		k = strings.TrimPrefix(key, "/") // a key with slashes keeps its dots (interface names like eth0.10)
	}
	if k == "" || path.Clean(k) != k || strings.HasPrefix(k, "..") {
		return "", fmt.Errorf("bad sysctl key %q", key)
	}
	return proc + "/" + k, nil
}

func (s *Session) readSysctl(key string) (string, error) {
	p, err := sysctlPath(s.proc, key)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func (s *Session) writeSysctl(key, value string) error {
	p, err := sysctlPath(s.proc, key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// setSysctl writes key=value through the transaction, with the old value as undo.
func setSysctl(t *txn, key, old, value, why string) error {
	return t.do("sysctls", fmt.Sprintf("%s sysctl %s = %s (was %s)", why, key, value, old),
		func() error { return t.s.writeSysctl(key, value) },
		func() error { return t.s.writeSysctl(key, old) })
}

// keyIndex is the interface index a per-interface key belongs to (0 for a host-wide key).
func (s *Session) keyIndex(key string) (int, error) {
	dev, _, ok := ifaceKey(key)
	if !ok {
		return 0, nil
	}
	l, err := s.linkByName(dev)
	if err != nil {
		return 0, err
	}
	if l == nil {
		return -1, nil
	}
	return l.Attrs().Index, nil
}

// currentKey is where claim c lives now: under the current name of its interface ("" when it is gone).
func (s *Session) currentKey(c *sysctlClaim) (string, error) {
	if c.IfIndex == 0 {
		return c.Key, nil
	}
	l, err := s.linkByIndex(c.IfIndex)
	if err != nil || l == nil {
		return "", err
	}
	_, leaf, _ := ifaceKey(c.Key)
	return "net/ipv4/conf/" + l.Attrs().Name + "/" + leaf, nil
}

// syncSysctls sets the desired sysctls, claiming them for the group in st, and releases the keys the group
// no longer wants (restoring the original when no group claims them any more).
func syncSysctls(t *txn, group string, want []plan.Sysctl, st *sysctlState) ([]*sysctlClaim, error) {
	var present int
	var kept []*sysctlClaim
	for _, w := range want {
		if !managedKey(w.Key) {
			return nil, fmt.Errorf("sysctl %s is not one linkagg manages", w.Key)
		}
		idx, err := t.s.keyIndex(w.Key)
		if err != nil {
			return nil, err
		}
		cur, err := t.s.readSysctl(w.Key)
		if err != nil || idx < 0 {
			if t.dry {
				t.do("sysctls", fmt.Sprintf("set sysctl %s = %s (unreadable: %v)", w.Key, w.Value, err), nil, nil)
				continue
			}
			return nil, fmt.Errorf("reading sysctl %s: %w", w.Key, err)
		}
		c := st.claim(w.Key, idx)
		if c == nil {
			c = &sysctlClaim{Key: w.Key, IfIndex: idx, Orig: cur}
			st.Claims = append(st.Claims, c)
		}
		c.Key = w.Key
		if !c.has(group) {
			c.Groups = append(c.Groups, group)
		}
		kept = append(kept, c)
		if cur == w.Value {
			present++
			continue
		}
		// write-ahead: the original value is on disk before we change it, so a run killed right after the
		// write still restores it at teardown
		if !t.dry {
			if err := walSysctlState(t, st); err != nil {
				return nil, fmt.Errorf("saving sysctl state: %w", err)
			}
		}
		if err := setSysctl(t, w.Key, cur, w.Value, "set"); err != nil {
			return nil, err
		}
	}
	t.count("sysctls", len(want), present, 0)
	return kept, nil
}

// releaseOtherSysctls gives back the group's claims that are not in kept (a member that left the group:
// its rp_filter goes back once the nft table no longer sends packets through it).
func releaseOtherSysctls(t *txn, group string, kept []*sysctlClaim, st *sysctlState) error {
	for _, c := range slices.Clone(st.Claims) {
		if slices.Contains(kept, c) {
			continue
		}
		if err := releaseSysctl(t, group, c, st); err != nil {
			return err
		}
	}
	return nil
}

// releaseSysctl drops group's claim c and restores the original when nobody claims it any more.
func releaseSysctl(t *txn, group string, c *sysctlClaim, st *sysctlState) error {
	if !c.has(group) {
		return nil
	}
	c.drop(group)
	if len(c.Groups) > 0 {
		return nil
	}
	st.remove(c)
	key, err := t.s.currentKey(c)
	if err != nil {
		return err
	}
	if key == "" {
		return nil // the interface is gone
	}
	cur, err := t.s.readSysctl(key)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading sysctl %s: %w", key, err)
	}
	if cur == c.Orig {
		return nil
	}
	return setSysctl(t, key, cur, c.Orig, "restore")
}

func releaseAllSysctls(t *txn, group string, st *sysctlState) error {
	var errs []error
	for _, c := range slices.Clone(st.Claims) {
		if err := releaseSysctl(t, group, c, st); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// walSysctlState saves st before a sysctl write. The first time in a run it also journals putting the
// file back as it was, so a rolled-back run leaves the run dir as it found it.
func walSysctlState(t *txn, st *sysctlState) error {
	if !t.sysctlWAL {
		prev, err := t.s.dir.Read("sysctl.json")
		if err != nil {
			return err
		}
		t.journal("write-ahead sysctl state", func() error {
			if prev == nil {
				return t.s.dir.Remove("sysctl.json")
			}
			return t.s.dir.Write("sysctl.json", prev)
		})
		t.sysctlWAL = true
	}
	return t.s.saveSysctlState(*st)
}
