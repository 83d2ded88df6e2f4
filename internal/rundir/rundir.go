// Package rundir is linkagg's state directory (/run/linkagg): created 0700, refused when someone other
// than us could have written it, and read and written only through its directory descriptor with
// O_NOFOLLOW, so a symlink planted in it never makes root write (or read) through it.
package rundir

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxFile bounds what one state file may hold; a larger one is not ours.
const MaxFile = 1 << 20

// Dir is an opened, checked run directory.
type Dir struct {
	Path string
	fd   int
}

// Error says the run directory itself cannot be trusted or made; it is one line for the admin.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// Open checks path and opens it, creating it 0700 when missing (its parent must exist). It is refused when
// it is a symlink, not a directory, not owned by the effective user (root in production), or writable by
// group or others. A directory of ours with a looser read mode (0755 from linkagg 0.1.0) is tightened to 0700.
func Open(path string) (*Dir, error) { return open(path, true) }

// OpenExisting opens path for reading with the same checks, but neither creates nor changes it; a
// directory owned by root is trusted too (a user's `linkagg status`).
func OpenExisting(path string) (*Dir, error) { return open(path, false) }

func open(path string, write bool) (*Dir, error) {
	if path == "" {
		return nil, &Error{"run dir: no path given"}
	}
	path = filepath.Clean(path)
	if write {
		if err := unix.Mkdir(path, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, &Error{fmt.Sprintf("run dir %s: cannot create: %v", path, err)}
		}
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, &Error{fmt.Sprintf("run dir %s is not a directory (a symlink?): refusing (root writes there)", path)}
		}
		return nil, &Error{fmt.Sprintf("run dir %s: cannot open: %v", path, err)}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &Error{fmt.Sprintf("run dir %s: %v", path, err)}
	}
	if err := trusted(path, &st, !write); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if write && st.Mode&0o077 != 0 {
		if err := unix.Fchmod(fd, 0o700); err != nil {
			unix.Close(fd)
			return nil, &Error{fmt.Sprintf("run dir %s: cannot make it 0700: %v", path, err)}
		}
	}
	return &Dir{Path: path, fd: fd}, nil
}

func trusted(path string, st *unix.Stat_t, rootToo bool) error {
	if uid := uint32(os.Geteuid()); st.Uid != uid && !(rootToo && st.Uid == 0) {
		return &Error{fmt.Sprintf("run dir %s is owned by uid %d, not %d: refusing (root writes there)", path, st.Uid, uid)}
	}
	if st.Mode&0o022 != 0 {
		return &Error{fmt.Sprintf("run dir %s is writable by group/others (mode %04o): refusing (root writes there)", path, st.Mode&0o7777)}
	}
	return nil
}

// Close releases the directory descriptor.
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// Fd is the directory descriptor (for flock).
func (d *Dir) Fd() int { return d.fd }

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
		return fmt.Errorf("bad state file name %q", name)
	}
	return nil
}

// OpenFile opens name inside the directory without following a symlink; a file that exists must be a
// regular file owned by us. flags are unix.O_* flags; O_NOFOLLOW, O_CLOEXEC and O_NONBLOCK are added
// (O_NONBLOCK: a FIFO planted under the name never blocks the open).
func (d *Dir) OpenFile(name string, flags int, mode uint32) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	fd, err := unix.Openat(d.fd, name, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, mode)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s is a symlink: refusing to follow it", filepath.Join(d.Path, name))
		}
		return nil, &os.PathError{Op: "open", Path: filepath.Join(d.Path, name), Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not a regular file: refusing", filepath.Join(d.Path, name))
	}
	if st.Uid != uint32(os.Geteuid()) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is owned by uid %d: refusing", filepath.Join(d.Path, name), st.Uid)
	}
	// back to blocking mode for regular reads and writes
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(d.Path, name)), nil
}

// Read returns the content of name; a missing file gives (nil, nil).
func (d *Dir) Read(name string) ([]byte, error) {
	f, err := d.OpenFile(name, unix.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: not ours", f.Name(), MaxFile)
	}
	return b, nil
}

// Write replaces name atomically: a new temporary file (O_EXCL|O_NOFOLLOW, random name) is written, synced
// and renamed over name. A symlink planted as name is replaced, never followed.
func (d *Dir) Write(name string, data []byte) error {
	if err := checkName(name); err != nil {
		return err
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	// the writer's pid is in the name: RemoveStale knows a temporary whose writer died
	tmp := fmt.Sprintf(".%s.%d.%s.tmp", name, os.Getpid(), hex.EncodeToString(rnd[:]))
	f, err := d.OpenFile(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(d.fd, tmp, d.fd, name)
	}
	if err != nil {
		_ = unix.Unlinkat(d.fd, tmp, 0)
		return fmt.Errorf("writing %s: %w", filepath.Join(d.Path, name), err)
	}
	return nil
}

// Remove deletes name (a symlink itself, never its target); a missing name is no error.
func (d *Dir) Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := unix.Unlinkat(d.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s: %w", filepath.Join(d.Path, name), err)
	}
	return nil
}

// ReadJSON decodes name into v; a missing or empty file leaves v alone.
func (d *Dir) ReadJSON(name string, v any) error {
	b, err := d.Read(name)
	if err != nil || len(b) == 0 {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(d.Path, name), err)
	}
	return nil
}

// WriteJSON writes v as indented JSON, atomically.
func (d *Dir) WriteJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return d.Write(name, append(b, '\n'))
}

func (d *Dir) listAll() ([]string, error) {
	dup, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), d.Path)
	defer f.Close()
	return f.Readdirnames(-1)
}

// List names the entries of the directory that end in suffix (dot files, our temporaries, excluded).
func (d *Dir) List(suffix string) ([]string, error) {
	names, err := d.listAll()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if strings.HasSuffix(n, suffix) && !strings.HasPrefix(n, ".") {
			out = append(out, n)
		}
	}
	return out, nil
}

// RemoveStale deletes the temporary files of writers that died before renaming them (a run killed
// mid-write). Temporaries of live writers are left alone.
func (d *Dir) RemoveStale() error {
	all, err := d.listAll()
	if err != nil {
		return err
	}
	for _, n := range all {
		if !strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".tmp") {
			continue
		}
		parts := strings.Split(strings.TrimSuffix(n, ".tmp"), ".")
		if len(parts) < 3 {
			continue
		}
		pid, err := strconv.Atoi(parts[len(parts)-2])
		if err != nil || pid <= 0 {
			continue
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			_ = unix.Unlinkat(d.fd, n, 0)
		}
	}
	return nil
}
