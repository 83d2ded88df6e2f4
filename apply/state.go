package apply

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/linkagg/linkagg-hooks/plan"
)

// groupState is what a group remembers under RunDir beyond the kernel tags.
type groupState struct {
	Group      string    `json:"group"`
	CreatedTUN bool      `json:"created_tun,omitempty"` // informational: ownership is the link alias
	AddedVIP   string    `json:"added_vip,omitempty"`   // the VIP prefix we added to the TUN
	OrigMTU    int       `json:"orig_mtu,omitempty"`    // MTU of a TUN not ours before we changed it
	Nft        *plan.Nft `json:"nft,omitempty"`         // last applied nft spec (to undo a replacement)
}

// sysctlState is RunDir/sysctl.json: per key, the value before any group changed it and the groups
// that claim it.
type sysctlState map[string]*sysctlClaim

type sysctlClaim struct {
	Orig   string   `json:"orig"`
	Groups []string `json:"groups"`
}

func groupFile(dir, group string) string {
	return filepath.Join(dir, strings.ReplaceAll(group, "/", "_")+".json")
}

func sysctlFile(dir string) string { return filepath.Join(dir, "sysctl.json") }

func loadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// saveJSON writes v atomically; an empty value removes the file.
func saveJSON(path string, v any, empty bool) error {
	if empty {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func loadGroupState(dir, group string) (groupState, error) {
	st := groupState{Group: group}
	err := loadJSON(groupFile(dir, group), &st)
	st.Group = group
	return st, err
}

func saveGroupState(dir string, st groupState) error {
	empty := reflect.DeepEqual(st, groupState{Group: st.Group})
	return saveJSON(groupFile(dir, st.Group), st, empty)
}

func loadSysctlState(dir string) (sysctlState, error) {
	st := sysctlState{}
	err := loadJSON(sysctlFile(dir), &st)
	if st == nil {
		st = sysctlState{}
	}
	return st, err
}

func saveSysctlState(dir string, st sysctlState) error {
	return saveJSON(sysctlFile(dir), st, len(st) == 0)
}

func (c *sysctlClaim) has(g string) bool {
	for _, x := range c.Groups {
		if x == g {
			return true
		}
	}
	return false
}

func (c *sysctlClaim) drop(g string) {
	out := c.Groups[:0]
	for _, x := range c.Groups {
		if x != g {
			out = append(out, x)
		}
	}
	c.Groups = out
}
