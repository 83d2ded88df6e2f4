package apply

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/linkagg/linkagg-hooks/plan"
)

// procSys is where sysctls live; a variable so a test could point it elsewhere.
var procSys = "/proc/sys"

func sysctlPath(key string) (string, error) {
	k := strings.TrimPrefix(strings.ReplaceAll(key, ".", "/"), "/")
	if strings.Contains(key, "/") {
		k = strings.TrimPrefix(key, "/") // a key with slashes keeps its dots (interface names like eth0.10)
	}
	if k == "" || path.Clean(k) != k || strings.HasPrefix(k, "..") {
		return "", fmt.Errorf("bad sysctl key %q", key)
	}
	return procSys + "/" + k, nil
}

func readSysctl(key string) (string, error) {
	p, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(key, value string) error {
	p, err := sysctlPath(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
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
		func() error { return writeSysctl(key, value) },
		func() error { return writeSysctl(key, old) })
}

// syncSysctls sets the desired sysctls, claiming them for the group in st, and releases the keys the group
// no longer wants (restoring the original when no group claims them any more).
func syncSysctls(t *txn, group string, want []plan.Sysctl, st sysctlState) error {
	var present int
	for _, s := range want {
		cur, err := readSysctl(s.Key)
		if err != nil {
			if t.dry {
				t.do("sysctls", fmt.Sprintf("set sysctl %s = %s (unreadable: %v)", s.Key, s.Value, err), nil, nil)
				continue
			}
			return fmt.Errorf("reading sysctl %s: %w", s.Key, err)
		}
		c := st[s.Key]
		if c == nil {
			c = &sysctlClaim{Orig: cur}
			st[s.Key] = c
		}
		if !c.has(group) {
			c.Groups = append(c.Groups, group)
		}
		if cur == s.Value {
			present++
			continue
		}
		// write-ahead: the original value is on disk before we change it, so a run killed right after the
		// write still restores it at teardown
		if !t.dry && t.o.RunDir != "" {
			if err := walSysctlState(t, st); err != nil {
				return fmt.Errorf("saving sysctl state: %w", err)
			}
		}
		if err := setSysctl(t, s.Key, cur, s.Value, "set"); err != nil {
			return err
		}
	}
	t.count("sysctls", len(want), present, 0)
	keys := make([]string, 0, len(st))
	for k := range st {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if slices.ContainsFunc(want, func(s plan.Sysctl) bool { return s.Key == k }) {
			continue
		}
		if err := releaseSysctl(t, group, k, st); err != nil {
			return err
		}
	}
	return nil
}

// releaseSysctl drops group's claim on key and restores the original when nobody claims it any more.
func releaseSysctl(t *txn, group, key string, st sysctlState) error {
	c := st[key]
	if c == nil || !c.has(group) {
		return nil
	}
	c.drop(group)
	if len(c.Groups) > 0 {
		return nil
	}
	delete(st, key)
	cur, err := readSysctl(key)
	if errors.Is(err, os.ErrNotExist) {
		return nil // the interface is gone
	}
	if err != nil {
		return fmt.Errorf("reading sysctl %s: %w", key, err)
	}
	if cur == c.Orig {
		return nil
	}
	return setSysctl(t, key, cur, c.Orig, "restore")
}

func releaseAllSysctls(t *txn, group string, st sysctlState) error {
	keys := make([]string, 0, len(st))
	for k := range st {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var errs []error
	for _, k := range keys {
		if err := releaseSysctl(t, group, k, st); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// walSysctlState saves st before a sysctl write. The first time in a run it also journals putting the
// file back as it was, so a rolled-back run leaves the run dir as it found it.
func walSysctlState(t *txn, st sysctlState) error {
	path := sysctlFile(t.o.RunDir)
	if !t.sysctlWAL {
		prev, err := os.ReadFile(path)
		existed := err == nil
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		t.undos = append(t.undos, undo{"write-ahead sysctl state", func() error {
			if existed {
				return os.WriteFile(path, prev, 0o644)
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			return nil
		}})
		t.sysctlWAL = true
	}
	return saveSysctlState(t.o.RunDir, st)
}
