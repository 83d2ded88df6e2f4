package apply

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	vnl "github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// The kernel's MPTCP path manager is driven through generic netlink family "mptcp_pm"
// (include/uapi/linux/mptcp_pm.h); x/sys/unix has no constants for it.
const (
	mptcpFamilyName = "mptcp_pm"
	mptcpVersion    = 1

	mpCmdAddAddr   = 1
	mpCmdDelAddr   = 2
	mpCmdGetAddr   = 3
	mpCmdSetLimits = 5
	mpCmdGetLimits = 6

	mpAttrAddr        = 1
	mpAttrRcvAddAddrs = 2
	mpAttrSubflows    = 3

	mpAddrFamily = 1
	mpAddrID     = 2
	mpAddrAddr4  = 3
	mpAddrAddr6  = 4
	mpAddrFlags  = 6
	mpAddrIfIdx  = 7

	mpFlagImplicit = 1 << 4
)

// Endpoint ownership. The kernel keeps no owner tag on an endpoint, so ours are those whose ID lies in a
// range we reserve AND whose address is one of the group's own path addresses: other software (mptcpd,
// NetworkManager, an admin's `ip mptcp endpoint add`) lets the kernel pick IDs from 1 upwards, and even an
// ID in our range on another address is left alone. This works without the state under RunDir.
const (
	EndpointIDMin = 200
	EndpointIDMax = 254
)

// mpEndpoint is one endpoint as the kernel reports it.
type mpEndpoint struct {
	ID      uint8
	Addr    netip.Addr
	Flags   uint32
	IfIndex int
}

func (s *Session) describeEndpoint(e mpEndpoint) string {
	out := fmt.Sprintf("%s id %d %s", e.Addr, e.ID, parser.MPFlagString(e.Flags))
	if e.IfIndex != 0 {
		out += " dev " + s.linkName(e.IfIndex)
	}
	return out
}

// ownedEndpoint: an id of our range and an address of the group's paths, or an endpoint its footprint
// records (id and address both).
func ownedEndpoint(e mpEndpoint, d plan.Desired, fp Footprint) bool {
	if e.ID < EndpointIDMin || e.ID > EndpointIDMax {
		return false
	}
	if slices.Contains(fp.Endpoints, EndpointRef{ID: e.ID, Addr: e.Addr}) {
		return true
	}
	return slices.ContainsFunc(d.Paths, func(p plan.Path) bool { return p.Own == e.Addr })
}

func (s *Session) mptcpRequest(cmd uint8, flags int) (*nl.NetlinkRequest, error) {
	f, err := s.nl.GenlFamilyGet(mptcpFamilyName)
	if err != nil {
		return nil, fmt.Errorf("generic netlink family %s (kernel without CONFIG_MPTCP?): %w", mptcpFamilyName, err)
	}
	req := nl.NewNetlinkRequest(int(f.ID), flags)
	req.AddData(&nl.Genlmsg{Command: cmd, Version: mptcpVersion})
	return req, nil
}

func (s *Session) mptcpExec(cmd uint8, flags int, attrs ...*nl.RtAttr) ([][]byte, error) {
	req, err := s.mptcpRequest(cmd, flags)
	if err != nil {
		return nil, err
	}
	for _, a := range attrs {
		req.AddData(a)
	}
	return s.genlExec(req)
}

func endpointAttr(e mpEndpoint) *nl.RtAttr {
	a := nl.NewRtAttr(mpAttrAddr|unix.NLA_F_NESTED, nil)
	if e.Addr.Is4() {
		a.AddRtAttr(mpAddrFamily, nl.Uint16Attr(unix.AF_INET))
		b := e.Addr.As4()
		a.AddRtAttr(mpAddrAddr4, b[:])
	} else {
		a.AddRtAttr(mpAddrFamily, nl.Uint16Attr(unix.AF_INET6))
		b := e.Addr.As16()
		a.AddRtAttr(mpAddrAddr6, b[:])
	}
	if e.ID != 0 {
		a.AddRtAttr(mpAddrID, []byte{e.ID})
	}
	a.AddRtAttr(mpAddrFlags, nl.Uint32Attr(e.Flags))
	if e.IfIndex != 0 {
		a.AddRtAttr(mpAddrIfIdx, nl.Uint32Attr(uint32(e.IfIndex)))
	}
	return a
}

func (s *Session) listEndpoints() ([]mpEndpoint, error) {
	msgs, err := s.mptcpExec(mpCmdGetAddr, unix.NLM_F_DUMP)
	if err != nil {
		return nil, fmt.Errorf("listing MPTCP endpoints: %w", err)
	}
	var out []mpEndpoint
	for _, m := range msgs {
		if len(m) < nl.SizeofGenlmsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[nl.SizeofGenlmsg:])
		if err != nil {
			return nil, err
		}
		for _, a := range attrs {
			if a.Attr.Type&^unix.NLA_F_NESTED != mpAttrAddr {
				continue
			}
			e, err := parseEndpoint(a.Value)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
	}
	return out, nil
}

func parseEndpoint(b []byte) (mpEndpoint, error) {
	var e mpEndpoint
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return e, err
	}
	for _, a := range attrs {
		v := a.Value
		switch a.Attr.Type &^ unix.NLA_F_NESTED {
		case mpAddrID:
			if len(v) >= 1 {
				e.ID = v[0]
			}
		case mpAddrAddr4:
			if len(v) == 4 {
				e.Addr = netip.AddrFrom4([4]byte(v))
			}
		case mpAddrAddr6:
			if len(v) == 16 {
				e.Addr = netip.AddrFrom16([16]byte(v))
			}
		case mpAddrFlags:
			if len(v) >= 4 {
				e.Flags = binary.NativeEndian.Uint32(v)
			}
		case mpAddrIfIdx:
			if len(v) >= 4 {
				e.IfIndex = int(int32(binary.NativeEndian.Uint32(v)))
			}
		}
	}
	return e, nil
}

func (s *Session) addEndpoint(e mpEndpoint) error {
	_, err := s.mptcpExec(mpCmdAddAddr, unix.NLM_F_ACK, endpointAttr(e))
	if err != nil && e.Flags&parser.MPFlagLaminar != 0 && errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("%w (the laminar flag needs Linux 6.18 or later)", err)
	}
	return err
}

func (s *Session) delEndpoint(e mpEndpoint) error {
	_, err := s.mptcpExec(mpCmdDelAddr, unix.NLM_F_ACK, endpointAttr(mpEndpoint{ID: e.ID, Addr: e.Addr}))
	return err
}

func (s *Session) getLimits() (plan.Limits, error) {
	msgs, err := s.mptcpExec(mpCmdGetLimits, 0)
	if err != nil {
		return plan.Limits{}, fmt.Errorf("reading MPTCP limits: %w", err)
	}
	var l plan.Limits
	for _, m := range msgs {
		if len(m) < nl.SizeofGenlmsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[nl.SizeofGenlmsg:])
		if err != nil {
			return l, err
		}
		for _, a := range attrs {
			if len(a.Value) < 4 {
				continue
			}
			switch a.Attr.Type {
			case mpAttrSubflows:
				l.Subflows = binary.NativeEndian.Uint32(a.Value)
			case mpAttrRcvAddAddrs:
				l.AddAddrAccepted = binary.NativeEndian.Uint32(a.Value)
			}
		}
	}
	return l, nil
}

func (s *Session) setLimits(l plan.Limits) error {
	_, err := s.mptcpExec(mpCmdSetLimits, unix.NLM_F_ACK,
		nl.NewRtAttr(mpAttrRcvAddAddrs, nl.Uint32Attr(l.AddAddrAccepted)),
		nl.NewRtAttr(mpAttrSubflows, nl.Uint32Attr(l.Subflows)))
	return err
}

// updateMPTCPState writes st now and, on rollback, writes back what was there: the state must follow the
// kernel writes it describes. Not a kernel write, so FailAt does not count it.
func updateMPTCPState(t *txn, old, st mptcpState) error {
	if t.dry {
		return nil
	}
	if err := t.s.saveMPTCPState(st); err != nil {
		return fmt.Errorf("saving MPTCP state: %w", err)
	}
	t.journal("mptcp state", func() error { return t.s.saveMPTCPState(old) })
	return nil
}

func cloneMPTCPState(st mptcpState) mptcpState {
	c := mptcpState{Orig: st.Orig, Claims: map[string]plan.Limits{}}
	for k, v := range st.Claims {
		c.Claims[k] = v
	}
	return c
}

// syncMPTCP converges the group's endpoints and its claim on the limits, and records in fp the endpoints
// of ours that are there afterwards. A Desired without MPTCP (mode packet) has no endpoint and no claim,
// so switching a group back to packet mode removes them.
func syncMPTCP(t *txn, d plan.Desired, fp *Footprint) error {
	s := t.s
	owned := *fp
	fp.Endpoints = nil
	if d.MPTCP == nil {
		if _, err := s.nl.GenlFamilyGet(mptcpFamilyName); err != nil {
			return nil // no MPTCP in this kernel: nothing of ours can exist
		}
	}
	var want []plan.Endpoint
	if d.MPTCP != nil {
		want = d.MPTCP.Endpoints
	}
	all, err := s.listEndpoints()
	if err != nil {
		return err
	}
	used := map[uint8]bool{}
	for _, e := range all {
		used[e.ID] = true
	}
	matched := make([]bool, len(want))
	var present, extra int
	for _, e := range all {
		if !ownedEndpoint(e, d, owned) {
			continue
		}
		i := slices.IndexFunc(want, func(w plan.Endpoint) bool { return w.Addr == e.Addr })
		if i >= 0 && !matched[i] && e.Flags&^mpFlagImplicit == want[i].Flags && e.IfIndex == s.devIndex(want[i].Dev) {
			matched[i] = true
			present++
			fp.Endpoints = append(fp.Endpoints, EndpointRef{ID: e.ID, Addr: e.Addr})
			continue
		}
		extra++
		e := e
		if err := t.do("mptcp", "delete mptcp endpoint "+s.describeEndpoint(e),
			func() error { return s.delEndpoint(e) },
			func() error { return s.addEndpoint(e) }); err != nil {
			return err
		}
		delete(used, e.ID)
	}
	for i, w := range want {
		if matched[i] {
			continue
		}
		for _, e := range all {
			if e.Addr == w.Addr && !ownedEndpoint(e, d, owned) {
				return fmt.Errorf("path %d: address %s already has an MPTCP endpoint of other software (%s); remove it, or give this path mptcp-flags off", w.Path+1, w.Addr, s.describeEndpoint(e))
			}
		}
		id := 0
		for c := EndpointIDMin; c <= EndpointIDMax; c++ {
			if !used[uint8(c)] {
				id = c
				break
			}
		}
		if id == 0 {
			return fmt.Errorf("no free MPTCP endpoint id in %d..%d", EndpointIDMin, EndpointIDMax)
		}
		used[uint8(id)] = true
		ifx := s.devIndex(w.Dev)
		if ifx == 0 && w.Dev != "" && !t.dry {
			return fmt.Errorf("mptcp endpoint %s: device %s does not exist", w.Addr, w.Dev)
		}
		e := mpEndpoint{ID: uint8(id), Addr: w.Addr, Flags: w.Flags, IfIndex: ifx}
		desc := fmt.Sprintf("add mptcp endpoint %s id %d dev %s %s", w.Addr, id, w.Dev, parser.MPFlagString(w.Flags))
		if err := t.do("mptcp", desc,
			func() error { return s.addEndpoint(e) },
			func() error { return s.delEndpoint(e) }); err != nil {
			return err
		}
		fp.Endpoints = append(fp.Endpoints, EndpointRef{ID: e.ID, Addr: e.Addr})
	}
	if d.MPTCP != nil || extra > 0 {
		t.count("mptcp", len(want), present, extra)
	}
	return syncLimits(t, d)
}

func (s *Session) devIndex(name string) int {
	if name == "" {
		return 0
	}
	l, err := s.linkByName(name)
	if err != nil || l == nil {
		return 0
	}
	return l.Attrs().Index
}

// syncLimits records the group's claim and raises the kernel's limits to the largest claim; it never
// lowers them below what the host had. When the last claim goes, the host's old values come back.
func syncLimits(t *txn, d plan.Desired) error {
	s := t.s
	st, err := s.loadMPTCPState()
	if err != nil {
		return err
	}
	old := cloneMPTCPState(st)
	if st.Claims == nil {
		st.Claims = map[string]plan.Limits{}
	}
	cur, err := s.getLimits()
	if err != nil {
		return err
	}
	if d.MPTCP == nil {
		if _, ok := st.Claims[d.Group]; !ok {
			return nil
		}
		delete(st.Claims, d.Group)
		if len(st.Claims) == 0 && cur != st.Orig {
			orig := st.Orig
			if err := t.do("mptcp", fmt.Sprintf("restore mptcp limits subflows %d add_addr_accepted %d", orig.Subflows, orig.AddAddrAccepted),
				func() error { return s.setLimits(orig) },
				func() error { return s.setLimits(cur) }); err != nil {
				return err
			}
		}
		return updateMPTCPState(t, old, st)
	}
	if len(st.Claims) == 0 {
		st.Orig = cur
	}
	st.Claims[d.Group] = d.MPTCP.Limits
	target := cur
	for _, c := range st.Claims {
		target.Subflows = max(target.Subflows, c.Subflows)
		target.AddAddrAccepted = max(target.AddAddrAccepted, c.AddAddrAccepted)
	}
	t.count("mptcp", 1, b2i(target == cur), 0)
	if target != cur {
		if err := t.do("mptcp", fmt.Sprintf("set mptcp limits subflows %d add_addr_accepted %d (was %d %d)", target.Subflows, target.AddAddrAccepted, cur.Subflows, cur.AddAddrAccepted),
			func() error { return s.setLimits(target) },
			func() error { return s.setLimits(cur) }); err != nil {
			return err
		}
	}
	if t.dry {
		return nil
	}
	return updateMPTCPState(t, old, st)
}

// removeMPTCP deletes the group's endpoints and drops its claim on the limits (Down).
func removeMPTCP(t *txn, d plan.Desired, fp *Footprint) error {
	down := d
	down.MPTCP = nil
	return syncMPTCP(t, down, fp)
}

// MPTCPStatus is what `linkagg status` shows of MPTCP: every endpoint (ours marked) and the limits.
type MPTCPStatus struct {
	Endpoints []string
	Limits    plan.Limits
	// Subflows counts, per path index, the established TCP sockets to a peer VIP leaving from that path's
	// address (MPTCP subflows: a plain TCP socket to a VIP binds the VIP), plus those from the VIP on the
	// primary path (first subflows, or plain TCP). Read with inet_diag; which MPTCP connection a subflow
	// belongs to is not shown (that needs the ULP info of each socket).
	Subflows map[int]int
}

func (s *Session) mptcpStatus(d plan.Desired, fp Footprint) (*MPTCPStatus, error) {
	if d.MPTCP == nil {
		return nil, nil
	}
	all, err := s.listEndpoints()
	if err != nil {
		return nil, err
	}
	st := &MPTCPStatus{}
	for _, e := range all {
		line := s.describeEndpoint(e)
		if ownedEndpoint(e, d, fp) {
			for _, p := range d.Paths {
				if p.Own == e.Addr {
					line = fmt.Sprintf("path %d: %s (ours)", p.Index+1, line)
				}
			}
		}
		st.Endpoints = append(st.Endpoints, line)
	}
	if st.Limits, err = s.getLimits(); err != nil {
		return nil, err
	}
	st.Subflows = s.countSubflows(d)
	return st, nil
}

// SubflowStats is what the established TCP sockets of one path (MPTCP subflows) sent and received, summed
// over the sockets open now (a socket that closed takes its bytes with it).
type SubflowStats struct {
	Subflows      int    `json:"count"`
	BytesSent     uint64 `json:"bytes_sent"`
	BytesReceived uint64 `json:"bytes_received"`
}

func (s *Session) countSubflows(d plan.Desired) map[int]int {
	out := map[int]int{}
	for i, sf := range s.Subflows(d) {
		out[i] = sf.Subflows
	}
	return out
}

// Subflows reads, per path index, the established TCP sockets to a peer VIP leaving from that path's
// address, plus those from the VIP on the MPTCP primary path, with their tcp_info byte counters. Read only;
// an error of the socket dump gives an empty map.
func (s *Session) Subflows(d plan.Desired) map[int]SubflowStats {
	fam := uint8(unix.AF_INET)
	if d.Family == parser.Inet6 {
		fam = unix.AF_INET6
	}
	socks, err := s.nl.SocketDiagTCPInfo(fam)
	if err != nil && !errors.Is(err, vnl.ErrDumpInterrupted) {
		return map[int]SubflowStats{}
	}
	primary := -1
	if d.MPTCP != nil {
		primary = d.MPTCP.Primary
	}
	out := map[int]SubflowStats{}
	for _, r := range socks {
		sk := r.InetDiagMsg
		if sk == nil || sk.State != 1 { // TCP_ESTABLISHED
			continue
		}
		src, _ := netip.AddrFromSlice(sk.ID.Source)
		dst, _ := netip.AddrFromSlice(sk.ID.Destination)
		src, dst = src.Unmap(), dst.Unmap()
		if !slices.ContainsFunc(d.Routes, func(r plan.Route) bool { return r.Table != plan.MainTable && r.Dst.Contains(dst) }) {
			continue // not to a peer VIP
		}
		for _, p := range d.Paths {
			if p.Own == src || (src == d.VIP.Addr() && p.Index == primary) {
				sf := out[p.Index]
				sf.Subflows++
				if r.TCPInfo != nil {
					sf.BytesSent += r.TCPInfo.Bytes_sent
					sf.BytesReceived += r.TCPInfo.Bytes_received
				}
				out[p.Index] = sf
			}
		}
	}
	return out
}

func (s *MPTCPStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  mptcp limits subflows %d add_addr_accepted %d\n", s.Limits.Subflows, s.Limits.AddAddrAccepted)
	for _, e := range s.Endpoints {
		fmt.Fprintf(&b, "  mptcp endpoint %s\n", e)
	}
	idx := make([]int, 0, len(s.Subflows))
	for i := range s.Subflows {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for _, i := range idx {
		fmt.Fprintf(&b, "  mptcp path %d: %d open subflows to peer VIPs\n", i+1, s.Subflows[i])
	}
	return b.String()
}
