package apply

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// Footprint is what one group owns in the kernel as its last run left it, kept in the run dir
// (footprint.GROUP.json, "/" of the group ID written ":"). The scope of every sync and of teardown is this
// old footprint together with the new plan, so objects of an edited or removed stanza (renumbered tables,
// a removed group, a changed path address) are still found and removed. It is written ahead of a run's
// writes (old ∪ new: a run killed half-way still knows everything it may have made) and again, exactly,
// after it succeeded.
type Footprint struct {
	Group      string        `json:"group"`
	Family     parser.Family `json:"family"`
	TUN        string        `json:"tun"`
	CreatedTUN bool          `json:"created_tun,omitempty"` // informational: ownership is the link alias
	AddedVIP   string        `json:"added_vip,omitempty"`   // the VIP prefix we added to the TUN
	OrigMTU    int           `json:"orig_mtu,omitempty"`    // MTU of a TUN not ours before we changed it
	SetMTU     int           `json:"set_mtu,omitempty"`     // the MTU we set on such a TUN
	OrigGSO    int           `json:"orig_gso,omitempty"`    // gso_max_size of a TUN not ours before we changed it
	SetGSO     int           `json:"set_gso,omitempty"`     // the gso_max_size we set on such a TUN
	Tables     []int         `json:"tables,omitempty"`      // routing tables of its rules and routes
	Nft        *plan.Nft     `json:"nft,omitempty"`         // the nft table last applied (name, family, marks)
	Endpoints  []EndpointRef `json:"endpoints,omitempty"`   // MPTCP endpoints we added
	// Transparent is the bpffs folder of the group's mptcp-transparent pins (its link and units map)
	Transparent string `json:"transparent,omitempty"`
}

// EndpointRef names one MPTCP endpoint we added: both must match for it to be ours.
type EndpointRef struct {
	ID   uint8      `json:"id"`
	Addr netip.Addr `json:"addr"`
}

func (f *Footprint) empty() bool {
	return f.TUN == "" && f.AddedVIP == "" && f.OrigMTU == 0 && f.OrigGSO == 0 && len(f.Tables) == 0 && f.Nft == nil && len(f.Endpoints) == 0 && f.Transparent == ""
}

// merge adds to f what o has that f lacks (the write-ahead footprint is old ∪ new).
func (f *Footprint) merge(o Footprint) {
	if f.TUN == "" {
		f.TUN = o.TUN
	}
	f.CreatedTUN = f.CreatedTUN || o.CreatedTUN
	if f.AddedVIP == "" {
		f.AddedVIP = o.AddedVIP
	}
	if f.OrigMTU == 0 {
		f.OrigMTU, f.SetMTU = o.OrigMTU, o.SetMTU
	}
	if f.OrigGSO == 0 {
		f.OrigGSO, f.SetGSO = o.OrigGSO, o.SetGSO
	}
	for _, t := range o.Tables {
		if !slices.Contains(f.Tables, t) {
			f.Tables = append(f.Tables, t)
		}
	}
	if f.Nft == nil {
		f.Nft = o.Nft
	}
	for _, e := range o.Endpoints {
		if !slices.Contains(f.Endpoints, e) {
			f.Endpoints = append(f.Endpoints, e)
		}
	}
	if f.Transparent == "" {
		f.Transparent = o.Transparent
	}
}

const footprintPrefix, footprintSuffix = "footprint.", ".json"

func footprintFile(group string) string {
	return footprintPrefix + strings.ReplaceAll(group, "/", ":") + footprintSuffix
}

func groupOfFile(name string) (string, bool) {
	if !strings.HasPrefix(name, footprintPrefix) || !strings.HasSuffix(name, footprintSuffix) {
		return "", false
	}
	g := strings.TrimSuffix(strings.TrimPrefix(name, footprintPrefix), footprintSuffix)
	return strings.ReplaceAll(g, ":", "/"), validGroupID(strings.ReplaceAll(g, ":", "/"))
}

// legacyGroupFile is where linkagg 0.1.0 kept a group's state ("tun0.json", "tun0_inet6.json").
func legacyGroupFile(group string) string { return strings.ReplaceAll(group, "/", "_") + ".json" }

var ifaceRe = regexp.MustCompile(`^[^/:\s]{1,15}$`)

func validIface(s string) bool { return ifaceRe.MatchString(s) && s != "." && s != ".." }

func validGroupID(g string) bool {
	iface, fam, ok := strings.Cut(g, "/")
	return validIface(iface) && (!ok || fam == "inet6")
}

// loadFootprint reads the group's footprint. What it says is checked before it is acted on: fields that
// are not of a kind we make are dropped with a warning, never used.
func (s *Session) loadFootprint(group string) (Footprint, error) {
	fp := Footprint{Group: group}
	if s.dir == nil {
		return fp, nil
	}
	found, err := s.dir.Read(footprintFile(group))
	if err != nil {
		return fp, err
	}
	if found == nil { // linkagg 0.1.0's state file of the group
		var old struct {
			CreatedTUN bool      `json:"created_tun"`
			AddedVIP   string    `json:"added_vip"`
			OrigMTU    int       `json:"orig_mtu"`
			Nft        *plan.Nft `json:"nft"`
		}
		if err := s.dir.ReadJSON(legacyGroupFile(group), &old); err != nil {
			s.logf("ignoring %s: %v", legacyGroupFile(group), err)
		}
		fp.CreatedTUN, fp.AddedVIP, fp.OrigMTU, fp.Nft = old.CreatedTUN, old.AddedVIP, old.OrigMTU, old.Nft
	} else if err := s.dir.ReadJSON(footprintFile(group), &fp); err != nil {
		s.logf("ignoring the footprint of %s: %v", group, err)
		fp = Footprint{Group: group}
	}
	fp.Group = group
	s.checkFootprint(&fp)
	return fp, nil
}

// checkFootprint drops what a footprint may not claim.
func (s *Session) checkFootprint(fp *Footprint) {
	warn := func(what string, v any) {
		s.logf("footprint of %s: ignoring %s %v: not something linkagg makes", fp.Group, what, v)
	}
	iface, fam, _ := strings.Cut(fp.Group, "/")
	wantFam := parser.Inet
	if fam == "inet6" {
		wantFam = parser.Inet6
	}
	if fp.Family != wantFam {
		fp.Family = wantFam
	}
	if fp.TUN != "" && fp.TUN != iface {
		warn("tun", fp.TUN)
	}
	fp.TUN = iface
	if fp.AddedVIP != "" {
		p, err := netip.ParsePrefix(fp.AddedVIP)
		if err != nil || !p.IsSingleIP() || p.Addr().Is4() != (wantFam == parser.Inet) {
			warn("address", fp.AddedVIP)
			fp.AddedVIP = ""
		}
	}
	if fp.OrigMTU != 0 && (fp.OrigMTU < 68 || fp.OrigMTU > 65535 || fp.SetMTU == 0) {
		warn("mtu", fp.OrigMTU)
		fp.OrigMTU, fp.SetMTU = 0, 0
	}
	if fp.OrigGSO != 0 && (fp.OrigGSO < 1 || fp.OrigGSO > 1<<20 || fp.SetGSO < parser.MinGSOMaxSize || fp.SetGSO > parser.MaxGSOMaxSize) {
		warn("gso_max_size", fp.OrigGSO)
		fp.OrigGSO, fp.SetGSO = 0, 0
	}
	fp.Tables = slices.DeleteFunc(fp.Tables, func(t int) bool {
		bad := !validTable(t)
		if bad {
			warn("table", t)
		}
		return bad
	})
	if n := fp.Nft; n != nil && (n.Table != plan.NftTablePrefix+iface || n.Family != wantFam || len(n.Sequence) == 0) {
		warn("nft table", n.Table)
		fp.Nft = nil
	}
	fp.Endpoints = slices.DeleteFunc(fp.Endpoints, func(e EndpointRef) bool {
		bad := e.ID < EndpointIDMin || e.ID > EndpointIDMax || !e.Addr.IsValid() || e.Addr.Is4() != (wantFam == parser.Inet)
		if bad {
			warn("mptcp endpoint", e)
		}
		return bad
	})
	// a pin folder is only ever this namespace's folder of this group (Down finds it by name anyway)
	if fp.Transparent != "" {
		if dir, _, err := transparentDir(s.bpffs(), fp.Group); err != nil || dir != fp.Transparent {
			warn("mptcp-transparent pins", fp.Transparent)
			fp.Transparent = ""
		}
	}
}

func (s *Session) saveFootprint(fp Footprint) error {
	if s.dir == nil {
		return errors.New("no run dir")
	}
	if fp.empty() {
		if err := s.dir.Remove(footprintFile(fp.Group)); err != nil {
			return err
		}
	} else if err := s.dir.WriteJSON(footprintFile(fp.Group), fp); err != nil {
		return err
	}
	return s.dir.Remove(legacyGroupFile(fp.Group))
}

// Footprints lists the groups that have a footprint in the run dir.
func (s *Session) Footprints() ([]string, error) {
	if s.dir == nil {
		return nil, nil
	}
	names, err := s.dir.List(footprintSuffix)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		if g, ok := groupOfFile(n); ok {
			out = append(out, g)
		}
	}
	slices.Sort(out)
	return out, nil
}

// ---- sysctl claims ----

// sysctlState is RUNDIR/sysctl.json: for every sysctl a group set, the value before any group changed it
// and the groups that claim it. Per-interface keys are claimed by interface index, so a member NIC renamed
// while up is still restored (under its new name) and one that is gone is forgotten.
type sysctlState struct {
	Claims []*sysctlClaim `json:"claims"`
}

type sysctlClaim struct {
	Key     string   `json:"key"`               // as set, e.g. net/ipv4/conf/eth0/rp_filter
	IfIndex int      `json:"ifindex,omitempty"` // per-interface keys: the interface it belongs to
	Orig    string   `json:"orig"`
	Groups  []string `json:"groups"`
}

// managedGlobal are the host-wide sysctls a group may set; managedPerIface the per-interface ones. A
// saved claim on anything else is ignored with a warning: linkagg never writes a key because a file said so.
var (
	managedGlobal = []string{
		"net/mptcp/enabled", "net/mptcp/checksum_enabled", "net/mptcp/scheduler",
		"net/mptcp/path_manager", "net/mptcp/syn_retrans_before_tcp_fallback",
		"net/ipv4/tcp_min_rtt_wlen", // only with the group option tcp-min-rtt-wlen
	}
	managedPerIface = []string{"rp_filter", "arp_ignore", "arp_announce"}
)

// ifaceKey splits net/ipv4/conf/DEV/LEAF; ok only for a managed per-interface leaf.
func ifaceKey(key string) (dev, leaf string, ok bool) {
	rest, found := strings.CutPrefix(key, "net/ipv4/conf/")
	if !found {
		return "", "", false
	}
	dev, leaf, found = strings.Cut(rest, "/")
	if !found || !validIface(dev) || dev == "all" || dev == "default" || !slices.Contains(managedPerIface, leaf) {
		return "", "", false
	}
	return dev, leaf, true
}

func managedKey(key string) bool {
	_, _, ok := ifaceKey(key)
	return ok || slices.Contains(managedGlobal, key)
}

var sysctlValueRe = regexp.MustCompile(`^[[:graph:] \t]{0,64}$`)

func (c *sysctlClaim) has(g string) bool { return slices.Contains(c.Groups, g) }

func (c *sysctlClaim) drop(g string) {
	c.Groups = slices.DeleteFunc(c.Groups, func(x string) bool { return x == g })
}

// claim finds the claim of key (set on the interface with ifindex, 0 for a host-wide key).
func (st *sysctlState) claim(key string, ifindex int) *sysctlClaim {
	_, leaf, perIface := ifaceKey(key)
	for _, c := range st.Claims {
		if perIface && c.IfIndex == ifindex {
			if _, l, _ := ifaceKey(c.Key); l == leaf {
				return c
			}
		} else if !perIface && c.IfIndex == 0 && c.Key == key {
			return c
		}
	}
	return nil
}

func (st *sysctlState) remove(c *sysctlClaim) {
	st.Claims = slices.DeleteFunc(st.Claims, func(x *sysctlClaim) bool { return x == c })
}

func (s *Session) loadSysctlState() (sysctlState, error) {
	var st sysctlState
	if s.dir == nil {
		return st, nil
	}
	b, err := s.dir.Read("sysctl.json")
	if err != nil || len(b) == 0 {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Claims == nil {
		// linkagg 0.1.0 wrote {"KEY": {"orig": ..., "groups": [...]}}: adopt it, keyed by today's ifindex
		var old map[string]struct {
			Orig   string   `json:"orig"`
			Groups []string `json:"groups"`
		}
		if jerr := json.Unmarshal(b, &old); jerr != nil {
			s.logf("ignoring %s/sysctl.json: %v", s.dir.Path, err)
			return sysctlState{}, nil
		}
		st = sysctlState{}
		keys := make([]string, 0, len(old))
		for k := range old {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			c := &sysctlClaim{Key: k, Orig: old[k].Orig, Groups: old[k].Groups}
			if dev, _, ok := ifaceKey(k); ok {
				l, err := s.linkByName(dev)
				if err != nil || l == nil {
					continue
				}
				c.IfIndex = l.Attrs().Index
			}
			st.Claims = append(st.Claims, c)
		}
	}
	// trust nothing a file says beyond the keys we manage
	st.Claims = slices.DeleteFunc(st.Claims, func(c *sysctlClaim) bool {
		_, _, perIface := ifaceKey(c.Key)
		ok := c != nil && managedKey(c.Key) && sysctlValueRe.MatchString(c.Orig) && perIface == (c.IfIndex > 0) && len(c.Groups) > 0
		if !ok && c != nil {
			s.logf("warning: ignoring a saved claim on sysctl %q in %s/sysctl.json: not a sysctl linkagg manages", c.Key, s.dir.Path)
		}
		return !ok
	})
	return st, nil
}

func (s *Session) saveSysctlState(st sysctlState) error {
	if s.dir == nil {
		return errors.New("no run dir")
	}
	if len(st.Claims) == 0 {
		return s.dir.Remove("sysctl.json")
	}
	return s.dir.WriteJSON("sysctl.json", st)
}

// ---- MPTCP limits ----

// mptcpState is RUNDIR/mptcp.json: the limits the host had before any group raised them, and what each
// group needs. Limits are per network namespace and shared by every group, like sysctls.
type mptcpState struct {
	Orig   plan.Limits            `json:"orig"`
	Claims map[string]plan.Limits `json:"claims,omitempty"`
}

func (s *Session) loadMPTCPState() (mptcpState, error) {
	var st mptcpState
	if s.dir == nil {
		return st, nil
	}
	if err := s.dir.ReadJSON("mptcp.json", &st); err != nil {
		s.logf("ignoring %s/mptcp.json: %v", s.dir.Path, err)
		return mptcpState{}, nil
	}
	for g := range st.Claims {
		if !validGroupID(g) {
			delete(st.Claims, g)
		}
	}
	return st, nil
}

func (s *Session) saveMPTCPState(st mptcpState) error {
	if s.dir == nil {
		return nil
	}
	if len(st.Claims) == 0 {
		return s.dir.Remove("mptcp.json")
	}
	return s.dir.WriteJSON("mptcp.json", st)
}

// markerPath is RUNDIR/NAME.creating: a TUN being created (see ensureTUN).
func (s *Session) marker(name string) string { return name + ".creating" }

func (s *Session) hasMarker(name string) bool {
	if s.dir == nil {
		return false
	}
	f, err := s.dir.OpenFile(s.marker(name), os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

func (s *Session) describeDir() string {
	if s.dir == nil {
		return s.o.RunDir
	}
	return s.dir.Path
}

// validTable: a routing table a group may use (not unspec, default, main or local).
func validTable(t int) bool { return t > 0 && t <= 0xffffffff && t != 253 && t != 254 && t != 255 }
