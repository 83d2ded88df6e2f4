package parser

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// MPTCP options. Seed 001 configured the out-of-tree MPTCP v0.95 kernel; these are its knobs mapped onto the
// upstream kernel (net.mptcp.* sysctls and the in-kernel path manager's endpoints), and the knobs upstream
// has no equivalent for are refused with the upstream way to get the same effect.
const (
	optMPFlags     = "mptcp-flags"        // per path: comma-separated endpoint flags, or "off"
	optMultipath   = "multipath"          // per path: on|off|backup (v0.95's `ip link set DEV multipath ...`)
	optMPSched     = "mptcp-scheduler"    // net.mptcp.scheduler
	optMPPM        = "mptcp-path-manager" // net.mptcp.path_manager (+ fullmesh flag)
	optMPChecksum  = "mptcp-checksum"     // net.mptcp.checksum_enabled
	optMPSynRetry  = "mptcp-syn-retries"  // net.mptcp.syn_retrans_before_tcp_fallback
	optMPPrimary   = "mptcp-primary"      // 1-based path the first subflow (source = VIP) takes
	optMPTransp    = "mptcp-transparent"  // off | all | UNIT...: TCP sockets made MPTCP by a BPF program
	mpOptionPrefix = "mptcp-"
)

// Endpoint flags, the kernel's MPTCP_PM_ADDR_FLAG_* bits.
const (
	MPFlagSignal   uint32 = 1 << 0
	MPFlagSubflow  uint32 = 1 << 1
	MPFlagBackup   uint32 = 1 << 2
	MPFlagFullmesh uint32 = 1 << 3
	MPFlagLaminar  uint32 = 1 << 5 // Linux 6.18
)

// MPFlagNames are the flag words in the order they are printed.
var MPFlagNames = []struct {
	Name string
	Bit  uint32
}{{"signal", MPFlagSignal}, {"subflow", MPFlagSubflow}, {"backup", MPFlagBackup}, {"fullmesh", MPFlagFullmesh}, {"laminar", MPFlagLaminar}}

// MPFlagString prints flags as the words of `mptcp-flags` ("subflow,backup"; "none" for no flag).
func MPFlagString(f uint32) string {
	var w []string
	for _, n := range MPFlagNames {
		if f&n.Bit != 0 {
			w = append(w, n.Name)
		}
	}
	if len(w) == 0 {
		return "none"
	}
	return strings.Join(w, ",")
}

// MPTCPPath is one path's endpoint as configured. Set is false when the user said nothing about the path
// (the planner picks the default); Off means no endpoint at all (v0.95's `multipath off`).
type MPTCPPath struct {
	Set   bool
	Off   bool
	Flags uint32
}

// MPTCP holds the MPTCP knobs of a group (mode mptcp or hybrid; zero in mode packet). Empty strings mean
// "leave the kernel's value alone"; a nil Paths means every path gets the default flags.
type MPTCP struct {
	Paths       []MPTCPPath // len == len(Tables)
	Scheduler   string
	PathManager string // "kernel" or "userspace"; "" = leave alone
	Fullmesh    bool   // v0.95's fullmesh path manager: the fullmesh flag on every subflow endpoint
	Checksum    string // "1", "0" or ""
	SynRetries  string // "" = leave alone
	Primary     int    // 1-based path of the first subflow; 0 = the heaviest active path
	// Transparent: every TCP socket of the host becomes MPTCP (TransparentAll), or those of processes in
	// these systemd units/slices (sorted, unique); neither = off.
	TransparentAll   bool
	TransparentUnits []string
}

// MaxTransparentUnits is how many units one group may name (the size of the BPF map).
const MaxTransparentUnits = 64

// AvailableSchedulers lists the MPTCP schedulers of the running kernel; nil when unknown (no MPTCP, or
// not Linux). A variable so tests can pretend another kernel. Reading /proc is the only way to tell, and
// `linkagg validate` must refuse a scheduler the kernel lacks before anything is applied.
var AvailableSchedulers = func() []string {
	b, err := os.ReadFile("/proc/sys/net/mptcp/available_schedulers")
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

func init() {
	for _, o := range []string{optMPFlags, optMultipath, optMPSched, optMPPM, optMPChecksum, optMPSynRetry, optMPPrimary, optMPTransp} {
		ourOptions[o] = true
	}
	tomlKeys[optMPFlags] = kStrings
	tomlKeys[optMultipath] = kStrings
	tomlKeys[optMPSched] = kString
	tomlKeys[optMPPM] = kString
	tomlKeys[optMPChecksum] = kString
	tomlKeys[optMPSynRetry] = kInt
	tomlKeys[optMPPrimary] = kInt
	tomlKeys[optMPTransp] = kStringOrStrings
	tomlKeyList += ", " + strings.Join([]string{optMPFlags, optMultipath, optMPSched, optMPPM, optMPChecksum, optMPSynRetry, optMPPrimary, optMPTransp}, ", ")
}

// buildMPTCP reads the MPTCP options; they are refused in mode packet, where they would silently do nothing.
func buildMPTCP(r *rawGroup, g *Group) error {
	m := MPTCP{Paths: make([]MPTCPPath, len(g.Tables))}
	for _, o := range r.opts {
		if o.name == optMultipath || strings.HasPrefix(o.name, mpOptionPrefix) {
			if g.Mode == ModePacket {
				return errAt(o.pos, "%s needs mode mptcp or hybrid (this group is mode packet)", o.name)
			}
		}
	}
	perPath := func(name string, parse func(w word) (MPTCPPath, error)) error {
		o, ok := r.get(name)
		if !ok {
			return nil
		}
		if len(o.words) != len(g.Tables) {
			return errAt(o.pos, "%s has %s: expected one per path (%d)", name, values(len(o.words)), len(g.Tables))
		}
		for i, w := range o.words {
			p, err := parse(w)
			if err != nil {
				return err
			}
			if m.Paths[i].Set {
				return errAt(w.pos, "%s: path %d already has its flags from %s (give one of mptcp-flags and multipath)", name, i+1, optMPFlags)
			}
			m.Paths[i] = p
		}
		return nil
	}
	if err := perPath(optMPFlags, parseMPFlags); err != nil {
		return err
	}
	if err := perPath(optMultipath, func(w word) (MPTCPPath, error) {
		switch w.s {
		case "on":
			return MPTCPPath{}, nil // the default flags
		case "off":
			return MPTCPPath{Set: true, Off: true}, nil
		case "backup":
			return MPTCPPath{Set: true, Flags: MPFlagSubflow | MPFlagBackup}, nil
		}
		return MPTCPPath{}, errAt(w.pos, "multipath %q: expected on, off or backup", w.s)
	}); err != nil {
		return err
	}

	if w, ok, err := r.single(optMPSched); err != nil {
		return err
	} else if ok {
		s, err := mapScheduler(w)
		if err != nil {
			return err
		}
		m.Scheduler = s
	}
	if w, ok, err := r.single(optMPPM); err != nil {
		return err
	} else if ok {
		switch w.s {
		case "kernel", "in-kernel", "default":
			m.PathManager = "kernel"
		case "fullmesh":
			m.PathManager, m.Fullmesh = "kernel", true
		case "userspace", "netlink":
			m.PathManager = "userspace"
		case "ndiffports":
			return errAt(w.pos, "mptcp-path-manager ndiffports: upstream Linux has no ndiffports path manager (it opened several subflows over one path); use one endpoint per path (the default) or a userspace path manager (mptcpd)")
		case "binder":
			return errAt(w.pos, "mptcp-path-manager binder: upstream Linux has no binder path manager (loose source routing through gateways); use mode mptcp with one path per gateway in rspec")
		default:
			return errAt(w.pos, "mptcp-path-manager %q: expected kernel, fullmesh or userspace", w.s)
		}
	}
	if w, ok, err := r.single(optMPChecksum); err != nil {
		return err
	} else if ok {
		switch w.s {
		case "on", "1", "true", "yes":
			m.Checksum = "1"
		case "off", "0", "false", "no":
			m.Checksum = "0"
		default:
			return errAt(w.pos, "mptcp-checksum %q: expected on or off", w.s)
		}
	}
	if w, ok, err := r.single(optMPSynRetry); err != nil {
		return err
	} else if ok {
		n, err := strconv.Atoi(w.s)
		if err != nil || n < 0 || n > 10 {
			return errAt(w.pos, "mptcp-syn-retries %q: expected an integer 0..10", w.s)
		}
		m.SynRetries = strconv.Itoa(n)
	}
	if w, ok, err := r.single(optMPPrimary); err != nil {
		return err
	} else if ok {
		n, err := strconv.Atoi(w.s)
		if err != nil || n < 1 || n > len(g.Tables) {
			return errAt(w.pos, "mptcp-primary %q: expected a path number 1..%d", w.s, len(g.Tables))
		}
		m.Primary = n
	}
	if o, ok := r.get(optMPTransp); ok {
		if err := parseTransparent(o, &m); err != nil {
			return err
		}
	}
	if m.Fullmesh {
		for i := range m.Paths {
			if !m.Paths[i].Off {
				m.Paths[i].Flags |= MPFlagFullmesh
			}
		}
	}
	if g.Mode != ModePacket {
		g.MPTCP = m
	}
	return nil
}

// parseMPFlags reads one path's word: "subflow,backup", "signal", "off" (no endpoint), "none" (an endpoint
// without flags: it accepts joins but opens nothing).
func parseMPFlags(w word) (MPTCPPath, error) {
	if w.s == "off" {
		return MPTCPPath{Set: true, Off: true}, nil
	}
	p := MPTCPPath{Set: true}
	if w.s == "none" {
		return p, nil
	}
	for _, f := range strings.Split(w.s, ",") {
		i := slices.IndexFunc(MPFlagNames, func(n struct {
			Name string
			Bit  uint32
		}) bool {
			return n.Name == f
		})
		if i < 0 {
			return p, errAt(w.pos, "mptcp-flags %q: unknown flag %q: expected subflow, signal, backup, fullmesh, laminar (comma-separated), none or off", w.s, f)
		}
		p.Flags |= MPFlagNames[i].Bit
	}
	if p.Flags&MPFlagFullmesh != 0 && p.Flags&MPFlagSignal != 0 {
		return p, errAt(w.pos, "mptcp-flags %q: the kernel refuses fullmesh together with signal", w.s)
	}
	return p, nil
}

// mapScheduler maps v0.95 scheduler names onto upstream and refuses what the running kernel lacks.
func mapScheduler(w word) (string, error) {
	s := w.s
	if s == "" || strings.ContainsAny(s, "/. \t") || len(s) > 15 {
		return "", errAt(w.pos, "mptcp-scheduler %q: expected a scheduler name", s)
	}
	avail := AvailableSchedulers()
	if avail != nil && !slices.Contains(avail, s) {
		hint := ""
		switch s {
		case "roundrobin", "redundant", "blest":
			hint = fmt.Sprintf("; upstream Linux has no %s scheduler built in (it may come as a BPF scheduler, e.g. bpf_rr / bpf_red, loaded by mptcp BPF tooling)", s)
		}
		return "", errAt(w.pos, "mptcp-scheduler %s: not available in this kernel (net.mptcp.available_schedulers: %s)%s; use mptcp-scheduler default", s, strings.Join(avail, " "), hint)
	}
	return s, nil
}

// parseTransparent reads `mptcp-transparent off|all|UNIT...`. Units are matched by the name of their cgroup,
// which systemd names after the unit; only units that hold processes (services, scopes, slices) have one.
func parseTransparent(o option, m *MPTCP) error {
	if len(o.words) == 0 {
		return errAt(o.pos, "mptcp-transparent: expected off, all, or systemd unit names (ssh.service user.slice)")
	}
	for _, w := range o.words {
		switch {
		case w.s == "off" || w.s == "all":
			if len(o.words) != 1 {
				return errAt(w.pos, "mptcp-transparent %s: expected alone (not with unit names)", w.s)
			}
			m.TransparentAll = w.s == "all"
			return nil
		case w.s == "-.slice":
			return errAt(w.pos, "mptcp-transparent -.slice: the root slice holds every process; say all")
		case strings.HasSuffix(w.s, "@.service"):
			return errAt(w.pos, "mptcp-transparent %s: a template has no processes; name an instance (getty@tty1.service) or the slice of its instances (system-getty.slice)", w.s)
		}
		if err := unitName(w); err != nil {
			return err
		}
		if slices.Contains(m.TransparentUnits, w.s) {
			return errAt(w.pos, "mptcp-transparent: %s given twice", w.s)
		}
		m.TransparentUnits = append(m.TransparentUnits, w.s)
	}
	if len(m.TransparentUnits) > MaxTransparentUnits {
		return errAt(o.pos, "mptcp-transparent names %d units: expected at most %d (name their slice instead)", len(m.TransparentUnits), MaxTransparentUnits)
	}
	slices.Sort(m.TransparentUnits)
	return nil
}

// unitName checks a systemd unit name: NAME.service, NAME.scope or NAME.slice, at most 255 bytes of
// letters, digits and ":-_.\\@" (systemd's own rule).
func unitName(w word) error {
	suffix := ""
	for _, s := range []string{".service", ".scope", ".slice"} {
		if strings.HasSuffix(w.s, s) && len(w.s) > len(s) {
			suffix = s
		}
	}
	if suffix == "" {
		return errAt(w.pos, "mptcp-transparent %q: expected off, all, or systemd unit names ending in .service, .scope or .slice", w.s)
	}
	if len(w.s) > 255 {
		return errAt(w.pos, "mptcp-transparent: unit name of %d bytes: expected at most 255", len(w.s))
	}
	for _, c := range w.s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(":-_.\\@", c)) {
			return errAt(w.pos, "mptcp-transparent %q: %q is not allowed in a systemd unit name", w.s, c)
		}
	}
	return nil
}
