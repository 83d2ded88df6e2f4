package parser

import (
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
