package parser

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	files := map[string]string{
		"interfaces": "auto lo\niface lo inet loopback\n\nsource interfaces.d/*\nsource-directory more.d\nsource nothing-matches-*\nsource-directory missing.d\n",
		// glob order is name order; the directory inside interfaces.d is not a file to read
		"interfaces.d/b-tun1":  tun1,
		"interfaces.d/a-tun0":  base,
		"interfaces.d/sub/x":   "garbage",
		"more.d/tun2":          strings.NewReplacer("tun1", "tun2", "10.98.", "10.97.", "1010", "1020").Replace(tun1),
		"more.d/ignored.bak":   "iface x inet static\n    table 0\n",
		"linkagg/tun3.toml":    strings.NewReplacer("tun0", "tun3", "10.99.255.", "10.96.255.", "1000", "1030").Replace(baseTOML),
		"linkagg/.hidden.toml": "not toml at all [",
		"linkagg/README":       "not toml either [",
	}
	dir := writeTree(t, files, nil)
	cfg, err := loadTree(dir, files, true)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, g := range cfg.Groups {
		ids = append(ids, g.ID()+"@"+strings.TrimPrefix(g.Pos.String(), dir+"/"))
	}
	want := "tun0@interfaces.d/a-tun0:1 tun1@interfaces.d/b-tun1:1 tun2@more.d/tun2:1 tun3@linkagg/tun3.toml:1 (tun3)"
	if got := strings.Join(ids, " "); got != want {
		t.Errorf("groups %s\nwant   %s", got, want)
	}
	if cfg.Group("tun3") == nil || cfg.Group("tun3").Source != "toml" || cfg.Group("tun0/inet6") != nil {
		t.Errorf("Config.Group lookup")
	}
}

func TestLoadEmpty(t *testing.T) {
	cfg, err := Load(LoadOptions{ConfDir: filepath.Join(t.TempDir(), "missing"), CheckPerms: true})
	if err != nil || len(cfg.Groups) != 0 {
		t.Errorf("missing conf dir: %v %v", cfg, err)
	}
	cfg, err = Load(LoadOptions{})
	if err != nil || len(cfg.Groups) != 0 {
		t.Errorf("nothing: %v %v", cfg, err)
	}
	_, err = Load(LoadOptions{Interfaces: filepath.Join(t.TempDir(), "missing")})
	if err == nil || !strings.HasSuffix(err.Error(), "missing: cannot read: no such file or directory") {
		t.Errorf("missing interfaces file: %v", err)
	}
}

// Without CheckPerms, modes don't matter (what unit tests of other packages rely on).
func TestLoadNoPermCheck(t *testing.T) {
	files := ifaces(base)
	dir := writeTree(t, files, map[string]os.FileMode{"interfaces": 0o666, "linkagg": 0o777})
	if _, err := loadTree(dir, files, false); err != nil {
		t.Error(err)
	}
}

// ParseInterfaces follows source lines relative to the file it is given.
func TestParseInterfacesSources(t *testing.T) {
	files := map[string]string{"interfaces.d/tun0": base}
	dir := writeTree(t, files, nil)
	gs, err := ParseInterfaces(filepath.Join(dir, "interfaces"), []byte("source interfaces.d/tun0\n"))
	if err != nil || len(gs) != 1 || gs[0].Pos.File != filepath.Join(dir, "interfaces.d/tun0") {
		t.Fatalf("%v %+v", err, gs)
	}
}

// The examples shipped in the package must stay valid.
func TestShippedExamples(t *testing.T) {
	for _, f := range []string{"../packaging/examples/interfaces.example", "../packaging/examples/linkagg.toml.example"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if len(mustParse(t, f, string(data))) == 0 {
			t.Errorf("%s: no groups", f)
		}
	}
}

// The size limit holds for text handed in directly too (the CLI's validate reads files itself).
func TestParseTooLarge(t *testing.T) {
	big := []byte(strings.Repeat("#\n", maxFileSize/2+1))
	if _, err := ParseInterfaces("big", big); err == nil || !strings.Contains(err.Error(), "big: file too large") {
		t.Errorf("interfaces: %v", err)
	}
	if _, err := ParseTOML("big.toml", big); err == nil || !strings.Contains(err.Error(), "big.toml: file too large") {
		t.Errorf("toml: %v", err)
	}
}
