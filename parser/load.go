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

// readConfig reads one configuration file, refusing what is too big and, with checkPerms, what someone
// other than its owner could have written (the file or the directory holding it).
func readConfig(path string, checkPerms bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &Error{Pos: Pos{File: path}, Msg: "cannot read: " + unwrapPath(err).Error()}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, &Error{Pos: Pos{File: path}, Msg: "cannot read: " + unwrapPath(err).Error()}
	}
	if fi.IsDir() {
		return nil, &Error{Pos: Pos{File: path}, Msg: "is a directory: expected a file"}
	}
	if checkPerms {
		if err := modeOK(path, fi); err != nil {
			return nil, err
		}
		if err := checkMode(filepath.Dir(path)); err != nil {
			return nil, err
		}
	}
	if fi.Size() > maxFileSize {
		return nil, tooLarge(path, fi.Size())
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

func checkMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return &Error{Pos: Pos{File: path}, Msg: "cannot read: " + unwrapPath(err).Error()}
	}
	return modeOK(path, fi)
}

func modeOK(path string, fi fs.FileInfo) error {
	if fi.Mode().Perm()&0o022 == 0 {
		return nil
	}
	what := "file"
	if fi.IsDir() {
		what = "directory"
	}
	return &Error{Pos: Pos{File: path}, Msg: fmt.Sprintf("%s %s is writable by group/others (mode %04o): refusing (root runs this)", what, path, fi.Mode().Perm())}
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
