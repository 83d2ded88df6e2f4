package parser

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// LoadOptions says where the configuration lives.
type LoadOptions struct {
	Interfaces string // path of the interfaces file; "" = skip
	ConfDir    string // TOML drop-in dir; "" = skip; missing dir = no groups, not an error
	// CheckPerms refuses files and directories writable by group or others: root acts on their content.
	CheckPerms bool
}

// maxFileSize bounds what one configuration file may hold; a bigger one is a mistake (or an attack).
const maxFileSize = 1 << 20

// Load reads the interfaces file (following its source lines) and then every ConfDir/*.toml in name
// order, and validates the groups together.
func Load(o LoadOptions) (*Config, error) {
	var groups []Group
	if o.Interfaces != "" {
		data, err := readConfig(o.Interfaces, o.CheckPerms)
		if err != nil {
			return nil, err
		}
		l := &loader{checkPerms: o.CheckPerms}
		gs, err := l.interfaces(o.Interfaces, data)
		if err != nil {
			return nil, err
		}
		groups = append(groups, gs...)
	}
	if o.ConfDir != "" {
		files, err := tomlFiles(o.ConfDir, o.CheckPerms)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			data, err := readConfig(f, o.CheckPerms)
			if err != nil {
				return nil, err
			}
			gs, err := ParseTOML(f, data)
			if err != nil {
				return nil, err
			}
			groups = append(groups, gs...)
		}
	}
	if err := Validate(groups); err != nil {
		return nil, err
	}
	return &Config{Groups: groups}, nil
}

// tomlFiles lists dir/*.toml by name. Dot files are skipped: editors leave lock files and backups there.
func tomlFiles(dir string, checkPerms bool) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &Error{Pos: Pos{File: dir}, Msg: "cannot read directory: " + unwrapPath(err).Error()}
	}
	if checkPerms {
		if err := checkMode(dir); err != nil {
			return nil, err
		}
	}
	var files []string
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".toml") || strings.HasPrefix(n, ".") {
			continue
		}
		f := filepath.Join(dir, n)
		if fi, err := os.Stat(f); err == nil && fi.IsDir() {
			continue
		}
		files = append(files, f)
	}
	sort.Strings(files)
	return files, nil
}

// readConfig reads one configuration file, refusing what is too big, what is not a regular file (a FIFO
// would block the open forever, a device is not a configuration) and, with checkPerms, what someone other
// than root (or the user running this) owns or could have written: the file, the directory holding it
// and, for a symlink, its target and the directory holding the target.
func readConfig(path string, checkPerms bool) ([]byte, error) {
	fi, err := os.Stat(path) // follows symlinks: the target is what gets read
	if err != nil {
		return nil, &Error{Pos: Pos{File: path}, Msg: "cannot read: " + unwrapPath(err).Error()}
	}
	name := path // how messages name the file: with its target when it is a symlink
	target := ""
	if li, err := os.Lstat(path); err == nil && li.Mode()&fs.ModeSymlink != 0 {
		if target, err = filepath.EvalSymlinks(path); err != nil {
			return nil, &Error{Pos: Pos{File: path}, Msg: "cannot read: " + unwrapPath(err).Error()}
		}
		name = fmt.Sprintf("%s (symlink to %s)", path, target)
	}
	if fi.IsDir() {
		return nil, &Error{Pos: Pos{File: path}, Msg: "is a directory: expected a file"}
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(path, name, fi)
	}
	if checkPerms {
		if err := trusted(path, "file "+name, fi); err != nil {
			return nil, err
		}
		if err := checkMode(filepath.Dir(path)); err != nil {
			return nil, err
		}
		if target != "" {
			dir := filepath.Dir(target)
			di, err := os.Stat(dir)
			if err != nil {
				return nil, &Error{Pos: Pos{File: dir}, Msg: "cannot read: " + unwrapPath(err).Error()}
			}
			if err := trusted(dir, fmt.Sprintf("directory %s (holding %s's target)", dir, path), di); err != nil {
				return nil, err
			}
		}
	}
	if fi.Size() > maxFileSize {
		return nil, tooLarge(path, fi.Size())
	}
	// O_NONBLOCK: if the file was swapped for a FIFO since the Stat, the open still returns at once, and the
	// Stat of what was opened refuses it (regular files ignore the flag)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, &Error{Pos: Pos{File: path}, Msg: "cannot read: " + unwrapPath(err).Error()}
	}
	defer f.Close()
	if opened, err := f.Stat(); err != nil {
		return nil, &Error{Pos: Pos{File: path}, Msg: "cannot read: " + unwrapPath(err).Error()}
	} else if !os.SameFile(fi, opened) {
		return nil, &Error{Pos: Pos{File: path}, Msg: "changed while being opened: expected a file that stays put"}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, &Error{Pos: Pos{File: path}, Msg: "cannot read: " + unwrapPath(err).Error()}
	}
	if len(data) > maxFileSize {
		return nil, tooLarge(path, int64(len(data)))
	}
	return data, nil
}

// ReadFile reads one configuration file as Load does, without the ownership and mode checks: only a
// regular file of at most 1 MiB (`linkagg validate FILE`).
func ReadFile(path string) ([]byte, error) { return readConfig(path, false) }

// ReadConfigFile reads one file root acts on, with Load's checks: a regular file of at most 1 MiB, owned
// by root (or the user running this), not writable by group or others, nor is the directory holding it.
func ReadConfigFile(path string) ([]byte, error) { return readConfig(path, true) }

func notRegular(path, name string, fi fs.FileInfo) error {
	kind := "not a regular file"
	switch m := fi.Mode(); {
	case m&fs.ModeNamedPipe != 0:
		kind = "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		kind = "a socket"
	case m&fs.ModeCharDevice != 0:
		kind = "a character device"
	case m&fs.ModeDevice != 0:
		kind = "a block device"
	}
	return &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("file %s is %s: expected a regular file", name, kind)}
}

// checkMode checks a directory (or file) by its path, following symlinks.
func checkMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return &Error{Pos: Pos{File: path}, Msg: "cannot read: " + unwrapPath(err).Error()}
	}
	what := "file " + path
	if fi.IsDir() {
		what = "directory " + path
	}
	return trusted(path, what, fi)
}

// trusted refuses what root should not act on: an owner other than root or the user running this, or
// write permission for group or others. what names the object in the message ("file X", "directory Y").
func trusted(path, what string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := int(st.Uid); uid != 0 && uid != os.Geteuid() {
			want := "root"
			if os.Geteuid() != 0 {
				want = fmt.Sprintf("root or uid %d (the user running this)", os.Geteuid())
			}
			return &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("%s is owned by uid %d: expected %s: refusing (root runs this)", what, uid, want)}
		}
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("%s is writable by group/others (mode %04o): refusing (root runs this)", what, fi.Mode().Perm())}
	}
	return nil
}

func tooLarge(path string, n int64) error {
	return &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("file too large (%d bytes): expected at most %d", n, maxFileSize)}
}

// unwrapPath drops the path an *fs.PathError repeats: our Error names the file already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
