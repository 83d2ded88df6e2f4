package parser

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// withSchedulers pretends the running kernel offers these MPTCP schedulers.
func withSchedulers(t *testing.T, s ...string) {
	old := AvailableSchedulers
	AvailableSchedulers = func() []string { return s }
	t.Cleanup(func() { AvailableSchedulers = old })
}

func parseOne(t *testing.T, text string) (Group, error) {
	t.Helper()
	gs, err := ParseInterfaces("interfaces", []byte(text))
	if err != nil {
		return Group{}, err
	}
	if len(gs) != 1 {
		t.Fatalf("want one group, got %d", len(gs))
	}
	return gs[0], nil
}

// Seed 001's v0.95 knobs, each mapped onto the upstream kernel.
func TestMPTCPKnobMapping(t *testing.T) {
	withSchedulers(t, "default", "bpf_rr")
	for _, c := range []struct {
		name  string
		lines []string
		check func(m MPTCP) bool
	}{
		{"defaults", nil, func(m MPTCP) bool {
			return !m.Paths[0].Set && !m.Paths[1].Set && m.Scheduler == "" && m.Checksum == "" && m.Primary == 0
		}},
		{"flags per path", []string{"mptcp-flags subflow,backup signal"}, func(m MPTCP) bool {
			return m.Paths[0] == MPTCPPath{Set: true, Flags: MPFlagSubflow | MPFlagBackup} && m.Paths[1] == MPTCPPath{Set: true, Flags: MPFlagSignal}
		}},
		{"laminar and none", []string{"mptcp-flags laminar none"}, func(m MPTCP) bool {
			return m.Paths[0].Flags == MPFlagLaminar && m.Paths[1] == MPTCPPath{Set: true}
		}},
		{"multipath on off", []string{"multipath on off"}, func(m MPTCP) bool { return !m.Paths[0].Set && m.Paths[1].Off }},
		{"multipath backup", []string{"multipath backup on"}, func(m MPTCP) bool {
			return m.Paths[0].Flags == MPFlagSubflow|MPFlagBackup
		}},
		{"fullmesh path manager -> fullmesh flag", []string{"mptcp-path-manager fullmesh", "mptcp-flags subflow off"}, func(m MPTCP) bool {
			return m.PathManager == "kernel" && m.Fullmesh && m.Paths[0].Flags == MPFlagSubflow|MPFlagFullmesh && m.Paths[1].Off && m.Paths[1].Flags == 0
		}},
		{"userspace path manager", []string{"mptcp-path-manager netlink"}, func(m MPTCP) bool { return m.PathManager == "userspace" }},
		{"checksum", []string{"mptcp-checksum on"}, func(m MPTCP) bool { return m.Checksum == "1" }},
		{"checksum off", []string{"mptcp-checksum off"}, func(m MPTCP) bool { return m.Checksum == "0" }},
		{"scheduler in kernel", []string{"mptcp-scheduler bpf_rr"}, func(m MPTCP) bool { return m.Scheduler == "bpf_rr" }},
		{"syn retries", []string{"mptcp-syn-retries 2"}, func(m MPTCP) bool { return m.SynRetries == "2" }},
		{"primary", []string{"mptcp-primary 2"}, func(m MPTCP) bool { return m.Primary == 2 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := base + "    mode mptcp\n"
			for _, l := range c.lines {
				text += "    " + l + "\n"
			}
			g, err := parseOne(t, text)
			if err != nil {
				t.Fatal(err)
			}
			if !c.check(g.MPTCP) {
				t.Errorf("got %+v", g.MPTCP)
			}
		})
	}
}

// What upstream lacks is refused with one line that names the option's line and what to use instead.
func TestMPTCPRefused(t *testing.T) {
	withSchedulers(t, "default")
	for _, c := range []struct {
		line, phrase string
	}{
		{"mptcp-path-manager ndiffports", "upstream Linux has no ndiffports path manager"},
		{"mptcp-path-manager binder", "upstream Linux has no binder path manager"},
		{"mptcp-scheduler roundrobin", "mptcp-scheduler roundrobin: not available in this kernel (net.mptcp.available_schedulers: default); upstream Linux has no roundrobin scheduler built in"},
		{"mptcp-scheduler redundant", "use mptcp-scheduler default"},
		{"mptcp-flags subflow", "mptcp-flags has 1 value: expected one per path (2)"},
		{"mptcp-flags subflow,turbo subflow", `unknown flag "turbo"`},
		{"mptcp-flags fullmesh,signal subflow", "fullmesh together with signal"},
		{"multipath maybe on", `multipath "maybe": expected on, off or backup`},
		{"mptcp-checksum sometimes", `expected on or off`},
		{"mptcp-primary 3", "expected a path number 1..2"},
	} {
		_, err := parseOne(t, base+"    mode mptcp\n    "+c.line+"\n")
		if err == nil || !strings.Contains(err.Error(), c.phrase) || !strings.HasPrefix(err.Error(), "interfaces:9: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want one line at interfaces:9 containing %q", c.line, err, c.phrase)
		}
	}
	// in mode packet an MPTCP option would do nothing: refused
	if _, err := parseOne(t, base+"    mptcp-flags subflow subflow\n"); err == nil || !strings.Contains(err.Error(), "needs mode mptcp or hybrid") {
		t.Errorf("mptcp option in mode packet: %v", err)
	}
}

// TOML takes the same options under the same (kebab-case) keys.
func TestMPTCPTOML(t *testing.T) {
	withSchedulers(t, "default")
	gs, err := ParseTOML("a.toml", []byte(baseTOML+`mode = "mptcp"
mptcp-flags = ["subflow,backup", "off"]
mptcp-checksum = "on"
mptcp-scheduler = "default"
mptcp-primary = 2
`))
	if err != nil {
		t.Fatal(err)
	}
	m := gs[0].MPTCP
	if m.Paths[0].Flags != MPFlagSubflow|MPFlagBackup || !m.Paths[1].Off || m.Checksum != "1" || m.Scheduler != "default" || m.Primary != 2 {
		t.Errorf("got %+v", m)
	}
	if _, err := ParseTOML("a.toml", []byte(baseTOML+"mode = \"mptcp\"\nmptcp-path-manager = \"ndiffports\"\n")); err == nil || !strings.Contains(err.Error(), "ndiffports") {
		t.Errorf("ndiffports in TOML: %v", err)
	}
}

// mptcp-transparent: off, all, or unit names (sorted); TOML takes a string or an array.
func TestMPTCPTransparent(t *testing.T) {
	for _, c := range []struct {
		line  string
		all   bool
		units []string
	}{
		{"mptcp-transparent off", false, nil},
		{"mptcp-transparent all", true, nil},
		{"mptcp-transparent user.slice ssh.service", false, []string{"ssh.service", "user.slice"}},
		{"mptcp-transparent getty@tty1.service session-3.scope system-getty.slice", false, []string{"getty@tty1.service", "session-3.scope", "system-getty.slice"}},
	} {
		g, err := parseOne(t, base+"    mode hybrid\n    "+c.line+"\n")
		if err != nil {
			t.Fatalf("%s: %v", c.line, err)
		}
		if g.MPTCP.TransparentAll != c.all || !slices.Equal(g.MPTCP.TransparentUnits, c.units) {
			t.Errorf("%s: got all=%v units=%v", c.line, g.MPTCP.TransparentAll, g.MPTCP.TransparentUnits)
		}
	}
	for _, c := range []struct{ line, phrase string }{
		{"mptcp-transparent all ssh.service", "mptcp-transparent all: expected alone"},
		{"mptcp-transparent ssh", `mptcp-transparent "ssh": expected off, all, or systemd unit names ending in .service, .scope or .slice`},
		{"mptcp-transparent ssh.socket", "ending in .service, .scope or .slice"},
		{"mptcp-transparent getty@.service", "a template has no processes"},
		{"mptcp-transparent -.slice", "the root slice holds every process; say all"},
		{"mptcp-transparent a.service a.service", "a.service given twice"},
		{"mptcp-transparent a/b.service", `'/' is not allowed`},
		{"mptcp-transparent " + strings.Repeat("x", 250) + ".service", "expected at most 255"},
	} {
		_, err := parseOne(t, base+"    mode mptcp\n    "+c.line+"\n")
		if err == nil || !strings.Contains(err.Error(), c.phrase) || !strings.HasPrefix(err.Error(), "interfaces:9: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%.40s: got %v, want one line at interfaces:9 containing %q", c.line, err, c.phrase)
		}
	}
	var many []string
	for i := range MaxTransparentUnits + 1 {
		many = append(many, fmt.Sprintf("u%d.service", i))
	}
	if _, err := parseOne(t, base+"    mode mptcp\n    mptcp-transparent "+strings.Join(many, " ")+"\n"); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Errorf("65 units: %v", err)
	}
	// mode packet: refused, even off
	for _, v := range []string{"all", "off"} {
		if _, err := parseOne(t, base+"    mptcp-transparent "+v+"\n"); err == nil || err.Error() != "interfaces:8: mptcp-transparent needs mode mptcp or hybrid (this group is mode packet)" {
			t.Errorf("mode packet, %s: %v", v, err)
		}
	}
	for text, want := range map[string][]string{
		`mptcp-transparent = "all"`:                         nil,
		`mptcp-transparent = ["user.slice", "ssh.service"]`: {"ssh.service", "user.slice"},
	} {
		gs, err := ParseTOML("a.toml", []byte(baseTOML+"mode = \"mptcp\"\n"+text+"\n"))
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if m := gs[0].MPTCP; m.TransparentAll != (want == nil) || !slices.Equal(m.TransparentUnits, want) {
			t.Errorf("%s: got %+v", text, m)
		}
	}
	if _, err := ParseTOML("a.toml", []byte(baseTOML+"mode = \"mptcp\"\nmptcp-transparent = 1\n")); err == nil || !strings.Contains(err.Error(), "expected a string or an array of strings, got an integer") {
		t.Errorf("TOML integer: %v", err)
	}
}
