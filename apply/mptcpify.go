package apply

// Transparent MPTCP (mptcp-transparent): a BPF program on the kernel's update_socket_protocol hook (Linux
// 6.6, fmod_ret; the kernel's "mptcpify" selftest) turns socket(AF_INET/AF_INET6, SOCK_STREAM, 0 or
// IPPROTO_TCP) into IPPROTO_MPTCP, so programs that never heard of MPTCP get one subflow per path.
//
// The hook is host-wide: every socket() of every network namespace runs it. Each program therefore checks
// first that the calling task lives in the network namespace it was made for (the namespace's cookie, unique
// per boot and never reused, unlike its inode number), and for everything else returns 0, which for fmod_ret
// means "no opinion, run the original function": several programs (groups, network namespaces) compose,
// the first one that says MPTCP wins, and a socket of another namespace is never touched.
//
// Scope. `all` is every TCP socket created in the namespace. A list of systemd units/slices is matched by
// name against the cgroup (v2) of the calling task and its ancestors, walking up at most maxCgroupDepth
// levels: systemd names a unit's cgroup directory after the unit, and a service gets a new cgroup (a new id)
// at every restart, so names keep working across restarts and for units that were not running at apply
// time, where ids resolved once would not.
//
// Objects, per group, under the bpffs (normally /sys/fs/bpf):
//
//	linkagg/<netns cookie>/<group>/link    the pinned bpf_link: attached while this pin exists
//	linkagg/<netns cookie>/<group>/units   the pinned hash map the program reads: unit names, or "" = all
//
// A run killed between attaching and pinning leaves nothing attached (the link dies with the process's
// file descriptor); one killed later leaves pins that Down finds from the group's name, without RunDir.
// The program is assembled here with the library's asm package: no C compiler is involved anywhere.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/plan"
)

const (
	// DefaultBPFFS is where systemd mounts the BPF file system at boot.
	DefaultBPFFS = "/sys/fs/bpf"
	// BPFDir is our folder in it.
	BPFDir = "linkagg"

	kernelBTF       = "/sys/kernel/btf/vmlinux"
	hookFunc        = "update_socket_protocol"
	progName        = "linkagg_mptcp" // BPF object names have at most 15 characters
	mapName         = "linkagg_units" //
	bpfLicense      = "Dual MIT/GPL"  // the tracing helpers we call are GPL-only; the project is MIT
	unitKeySize     = 256             // a systemd unit name has at most 255 bytes
	maxUnits        = 64              // per group; the parser refuses more
	maxCgroupDepth  = 16              // cgroup levels walked up from the task's own
	ipprotoMPTCP    = 262             // IPPROTO_MPTCP
	soNetnsCookie   = 71              // SO_NETNS_COOKIE (Linux 5.14), missing from x/sys/unix
	sockTypeMask    = 0xf             // SOCK_TYPE_MASK: socket(2) passes SOCK_NONBLOCK|SOCK_CLOEXEC in type
	pinLink         = "link"          //
	pinLinkNew      = "link_new"      // a replacement link before it is renamed over pinLink
	pinUnits        = "units"         //
	transparentKind = "mptcp-transparent"
)

// offsets are the kernel structure offsets the program walks, read from the running kernel's BTF.
type offsets struct {
	taskNsproxy, nsproxyNet, netCookie int16 // current->nsproxy->net_ns->net_cookie
	taskCgroups, csetDfl, cgroupKn     int16 // current->cgroups->dfl_cgrp->kn
	knName, knParent                   int16 // kernfs_node name / parent ("__parent" since 6.15)
}

var (
	offsetsOnce sync.Once
	offsetsVal  offsets
	offsetsErr  error
)

// kernelOffsets reads the offsets once per process (parsing the kernel's BTF takes tens of milliseconds).
func kernelOffsets() (offsets, error) {
	offsetsOnce.Do(func() {
		offsetsVal, offsetsErr = readOffsets()
	})
	return offsetsVal, offsetsErr
}

func readOffsets() (offsets, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return offsets{}, fmt.Errorf("reading kernel BTF: %w", err)
	}
	var fn *btf.Func
	if err := spec.TypeByName(hookFunc, &fn); err != nil {
		return offsets{}, fmt.Errorf("this kernel has no %s function (the BPF hook of transparent MPTCP needs Linux 6.6 or later)", hookFunc)
	}
	var o offsets
	for _, f := range []struct {
		dst    *int16
		strct  string
		fields []string
	}{
		{&o.taskNsproxy, "task_struct", []string{"nsproxy"}},
		{&o.nsproxyNet, "nsproxy", []string{"net_ns"}},
		{&o.netCookie, "net", []string{"net_cookie"}},
		{&o.taskCgroups, "task_struct", []string{"cgroups"}},
		{&o.csetDfl, "css_set", []string{"dfl_cgrp"}},
		{&o.cgroupKn, "cgroup", []string{"kn"}},
		{&o.knName, "kernfs_node", []string{"name"}},
		{&o.knParent, "kernfs_node", []string{"__parent", "parent"}},
	} {
		var s *btf.Struct
		if err := spec.TypeByName(f.strct, &s); err != nil {
			return offsets{}, fmt.Errorf("kernel BTF: struct %s: %w", f.strct, err)
		}
		off, ok := -1, false
		for _, name := range f.fields {
			if off, ok = memberOffset(s, name); ok {
				break
			}
		}
		if !ok || off < 0 || off > 0x7fff {
			return offsets{}, fmt.Errorf("kernel BTF: struct %s has no usable field %s", f.strct, strings.Join(f.fields, " or "))
		}
		*f.dst = int16(off)
	}
	return o, nil
}

// memberOffset finds a field's byte offset, looking through anonymous structs and unions.
func memberOffset(t btf.Type, name string) (int, bool) {
	var members []btf.Member
	switch s := t.(type) {
	case *btf.Struct:
		members = s.Members
	case *btf.Union:
		members = s.Members
	default:
		return 0, false
	}
	for _, m := range members {
		if m.Name == name {
			return int(m.Offset.Bytes()), m.BitfieldSize == 0
		}
		if m.Name == "" {
			if off, ok := memberOffset(btf.UnderlyingType(m.Type), name); ok {
				return int(m.Offset.Bytes()) + off, true
			}
		}
	}
	return 0, false
}

// program assembles the fmod_ret program for the network namespace with this cookie. mapFD is the units
// map (its fd does not change the program's tag). v6 says whether AF_INET6 sockets may become MPTCP: on a
// kernel without CONFIG_MPTCP_IPV6 they would fail to open.
func program(o offsets, cookie uint64, v6 bool, mapFD int) asm.Instructions {
	const key = -unitKeySize             // the lookup key on the stack: fp-256 .. fp-1
	zeroKey := func() asm.Instructions { // r9 is 0 (callee-saved: calls keep it)
		var z asm.Instructions
		for i := 0; i < unitKeySize; i += 8 {
			z = append(z, asm.StoreMem(asm.RFP, int16(key+i), asm.R9, asm.DWord))
		}
		return z
	}
	lookup := func() asm.Instructions { // r0 = units[key]; MPTCP if found
		return asm.Instructions{
			asm.LoadMapPtr(asm.R1, mapFD),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, key),
			asm.FnMapLookupElem.Call(),
			asm.JNE.Imm(asm.R0, 0, "mptcp"),
		}
	}
	insns := asm.Instructions{
		// ctx holds the arguments as u64: family, type, protocol
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord),
		asm.JEq.Imm32(asm.R2, unix.AF_INET, "family_ok"),
	}
	if v6 {
		insns = append(insns, asm.JEq.Imm32(asm.R2, unix.AF_INET6, "family_ok"))
	}
	insns = append(insns,
		asm.Ja.Label("keep"),
		asm.LoadMem(asm.R2, asm.R6, 8, asm.DWord).WithSymbol("family_ok"),
		asm.And.Imm32(asm.R2, sockTypeMask),
		asm.JNE.Imm32(asm.R2, unix.SOCK_STREAM, "keep"),
		asm.LoadMem(asm.R2, asm.R6, 16, asm.DWord),
		asm.JEq.Imm32(asm.R2, 0, "tcp"),
		asm.JNE.Imm32(asm.R2, unix.IPPROTO_TCP, "keep"),
		// only the namespace this program was made for
		asm.FnGetCurrentTaskBtf.Call().WithSymbol("tcp"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R1, asm.R7, o.taskNsproxy, asm.DWord),
		asm.JEq.Imm(asm.R1, 0, "keep"),
		asm.LoadMem(asm.R1, asm.R1, o.nsproxyNet, asm.DWord),
		asm.JEq.Imm(asm.R1, 0, "keep"),
		asm.LoadMem(asm.R1, asm.R1, o.netCookie, asm.DWord),
		asm.LoadImm(asm.R2, int64(cookie), asm.DWord),
		asm.JNE.Reg(asm.R1, asm.R2, "keep"),
	)
	// the all-zero key is `all`
	insns = append(insns, asm.Mov.Imm(asm.R9, 0))
	insns = append(insns, zeroKey()...)
	insns = append(insns, lookup()...)
	insns = append(insns,
		asm.LoadMem(asm.R8, asm.R7, o.taskCgroups, asm.DWord),
		asm.JEq.Imm(asm.R8, 0, "keep"),
		asm.LoadMem(asm.R8, asm.R8, o.csetDfl, asm.DWord),
		asm.JEq.Imm(asm.R8, 0, "keep"),
		asm.LoadMem(asm.R8, asm.R8, o.cgroupKn, asm.DWord),
	)
	// the task's cgroup and its ancestors, by directory name (= systemd unit name), unrolled
	for range maxCgroupDepth {
		insns = append(insns, asm.JEq.Imm(asm.R8, 0, "keep"))
		insns = append(insns, zeroKey()...)
		insns = append(insns,
			asm.LoadMem(asm.R3, asm.R8, o.knName, asm.DWord),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, key),
			asm.Mov.Imm(asm.R2, unitKeySize-1), // the last byte stays 0
			asm.FnProbeReadKernelStr.Call(),
		)
		insns = append(insns, lookup()...)
		insns = append(insns, asm.LoadMem(asm.R8, asm.R8, o.knParent, asm.DWord))
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R0, 0).WithSymbol("keep"), // fmod_ret 0: the kernel's own choice
		asm.Return(),
		asm.Mov.Imm(asm.R0, ipprotoMPTCP).WithSymbol("mptcp"),
		asm.Return(),
	)
	return insns
}

// netnsCookie is the cookie of the calling thread's network namespace.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, soNetnsCookie)
	if err != nil {
		return 0, fmt.Errorf("reading the network namespace cookie (SO_NETNS_COOKIE, Linux 5.14): %w", err)
	}
	return c, nil
}

// mptcpProtocols tells whether the kernel registered MPTCP for IPv4 and IPv6 (/proc/net/protocols).
func mptcpProtocols() (v4, v6 bool) {
	f, err := os.Open("/proc/net/protocols")
	if err != nil {
		return false, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		switch strings.Fields(s.Text() + " x")[0] {
		case "MPTCP":
			v4 = true
		case "MPTCPv6":
			v6 = true
		}
	}
	return v4, v6
}

// TransparentMissing says what the kernel or the host lacks for mptcp-transparent, in one line, or nil.
// It reads only: files, the kernel's BTF, and (as root) a trial load of the program that is never attached,
// so the verifier's verdict is known before the group's first write.
func TransparentMissing(bpffs string) error {
	if _, err := os.Stat(kernelBTF); err != nil {
		return fmt.Errorf("mptcp-transparent: this kernel has no BTF (%s; CONFIG_DEBUG_INFO_BTF=y is needed)", kernelBTF)
	}
	if v4, _ := mptcpProtocols(); !v4 {
		return errors.New("mptcp-transparent: this kernel has no MPTCP (CONFIG_MPTCP=y is needed; /proc/net/protocols lists no MPTCP)")
	}
	o, err := kernelOffsets()
	if err != nil {
		return fmt.Errorf("mptcp-transparent: %w", err)
	}
	if !isBPFFS(bpffs) {
		return fmt.Errorf("mptcp-transparent: no BPF file system mounted at %s (systemd mounts it at boot; by hand: mount -t bpf bpf %s)", bpffs, bpffs)
	}
	if os.Geteuid() != 0 {
		return nil // the trial load needs CAP_BPF+CAP_PERFMON; apply runs it as root
	}
	m, p, err := loadProgram(o, 0)
	if err != nil {
		return fmt.Errorf("mptcp-transparent: %w", err)
	}
	p.Close()
	m.Close()
	return nil
}

// loadProgram creates an empty units map and loads the program for the namespace with this cookie; nothing
// is attached or pinned.
func loadProgram(o offsets, cookie uint64) (*ebpf.Map, *ebpf.Program, error) {
	m, err := newUnitsMap()
	if err != nil {
		return nil, nil, err
	}
	p, err := newProgram(o, cookie, m)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, p, nil
}

func newUnitsMap() (*ebpf.Map, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: mapName, Type: ebpf.Hash, KeySize: unitKeySize, ValueSize: 1, MaxEntries: maxUnits})
	if err != nil {
		return nil, fmt.Errorf("creating the BPF map: %w", err)
	}
	return m, nil
}

func newProgram(o offsets, cookie uint64, m *ebpf.Map) (*ebpf.Program, error) {
	_, v6 := mptcpProtocols()
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Name: progName, Type: ebpf.Tracing, AttachType: ebpf.AttachModifyReturn, AttachTo: hookFunc,
		Instructions: program(o, cookie, v6, m.FD()), License: bpfLicense,
	}, ebpf.ProgramOptions{})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("the kernel refused the BPF program on %s: %s", hookFunc, fmt.Sprintf("%+v", ve))
		}
		if errors.Is(err, unix.EPERM) && os.Geteuid() == 0 {
			// as root with CAP_BPF: the kernel (lockdown, a security module, a hardened build) forbids
			// trampoline programs (fentry/fexit/fmod_ret) altogether
			return nil, fmt.Errorf("this kernel refuses BPF trampoline programs (fmod_ret on %s): operation not permitted", hookFunc)
		}
		return nil, fmt.Errorf("loading the BPF program on %s (needs Linux 6.6 or later with CONFIG_MPTCP): %v", hookFunc, err)
	}
	return p, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// expectedTag is the tag (the kernel's hash of the instructions) of the program this binary would load
// now, to tell a program of an older linkagg or another kernel layout.
func expectedTag(cookie uint64) (string, error) {
	o, err := kernelOffsets()
	if err != nil {
		return "", err
	}
	_, v6 := mptcpProtocols()
	insns := program(o, cookie, v6, 0)
	// Marshal resolves the jump labels in place, as loading does; the tag is over the resolved code (in the
	// machine's byte order, which ProgramSpec.Tag knows; asm's marshalling takes only binary.Little/BigEndian)
	if err := insns.Marshal(io.Discard, binary.LittleEndian); err != nil {
		return "", err
	}
	return (&ebpf.ProgramSpec{Instructions: insns}).Tag()
}

// escapeGroup makes a group ID a bpffs name: bpffs refuses dots, and "tun0/inet6" holds a slash.
func escapeGroup(g string) string {
	var b strings.Builder
	for _, c := range []byte(g) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func unescapeGroup(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// netnsDir is our bpffs folder of the calling thread's network namespace.
func netnsDir(bpffs string) (string, uint64, error) {
	c, err := netnsCookie()
	if err != nil {
		return "", 0, err
	}
	return filepath.Join(bpffs, BPFDir, strconv.FormatUint(c, 10)), c, nil
}

// Transparent is what the kernel holds for one group, as found.
type Transparent struct {
	Group   string
	Dir     string           // the pin folder
	Scope   plan.Transparent // from the units map
	Map     bool             // a units map is pinned
	MapOK   bool             // ... and it has the layout this binary uses (else apply replaces it)
	Linked  bool             // a pinned link exists
	LinkID  link.ID          //
	ProgID  ebpf.ProgramID   //
	Tag     string           // the program's tag
	Current bool             // the program is the one this binary would load now
	Stale   []string         // other pins in the folder (a replacement link of a killed run)
}

func (t *Transparent) String() string {
	if !t.Linked {
		return fmt.Sprintf("mptcp-transparent %s: NOT attached (pins in %s: units map only)", t.Scope, t.Dir)
	}
	s := fmt.Sprintf("mptcp-transparent %s: program %s id %d, link id %d, pinned at %s", t.Scope, progName, t.ProgID, t.LinkID, filepath.Join(t.Dir, pinLink))
	if !t.Current {
		s += " (an older program: apply replaces it)"
	}
	return s
}

// isBPFFS tells whether path is the root or a folder of a BPF file system.
func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && uint32(st.Type) == unix.BPF_FS_MAGIC
}

// transparentDir is the pin folder of group in the calling thread's network namespace.
func transparentDir(bpffs, group string) (string, uint64, error) {
	base, cookie, err := netnsDir(bpffs)
	if err != nil {
		return "", 0, err
	}
	return filepath.Join(base, escapeGroup(group)), cookie, nil
}

// FindTransparent reads the pins of group in the calling thread's network namespace; nil when there are
// none (also when there is no bpffs: then nothing of ours can exist).
func FindTransparent(bpffs, group string) (*Transparent, error) {
	if !isBPFFS(bpffs) {
		return nil, nil
	}
	dir, cookie, err := transparentDir(bpffs, group)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t := &Transparent{Group: group, Dir: dir}
	for _, e := range ents {
		switch e.Name() {
		case pinLink:
			if err := readLink(t, filepath.Join(dir, pinLink), cookie); err != nil {
				return nil, err
			}
		case pinUnits:
			m, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinUnits), nil)
			if err != nil {
				return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, pinUnits), err)
			}
			t.Map, t.MapOK = true, compatibleMap(m)
			if t.MapOK {
				t.Scope, err = readUnits(m)
			}
			m.Close()
			if err != nil {
				return nil, err
			}
		default:
			t.Stale = append(t.Stale, e.Name())
		}
	}
	return t, nil
}

func readLink(t *Transparent, path string, cookie uint64) error {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	t.Linked, t.LinkID, t.ProgID = true, info.ID, info.Program
	p, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return fmt.Errorf("program %d of %s: %w", info.Program, path, err)
	}
	defer p.Close()
	pi, err := p.Info()
	if err != nil {
		return err
	}
	t.Tag = pi.Tag
	want, err := expectedTag(cookie)
	t.Current = err == nil && want == pi.Tag
	return nil
}

func readUnits(m *ebpf.Map) (plan.Transparent, error) {
	var s plan.Transparent
	var k [unitKeySize]byte
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		name := string(k[:strings.IndexByte(string(k[:]), 0)])
		if name == "" {
			s.All = true
		} else {
			s.Units = append(s.Units, name)
		}
	}
	slices.Sort(s.Units)
	if s.All {
		s.Units = nil
	}
	return s, it.Err()
}

func unitKey(name string) [unitKeySize]byte {
	var k [unitKeySize]byte
	copy(k[:unitKeySize-1], name)
	return k
}

// scopeKeys are the map's keys for a scope: "" for all, else the unit names.
func scopeKeys(s plan.Transparent) []string {
	if s.All {
		return []string{""}
	}
	return s.Units
}

// setUnits makes the map hold exactly the keys of s.
func setUnits(m *ebpf.Map, s plan.Transparent) error {
	cur, err := readUnits(m)
	if err != nil {
		return err
	}
	want := scopeKeys(s)
	for _, k := range want {
		if err := m.Update(unitKey(k), uint8(1), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("BPF map update: %w", err)
		}
	}
	for _, k := range scopeKeys(cur) {
		if !slices.Contains(want, k) {
			if err := m.Delete(unitKey(k)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("BPF map delete: %w", err)
			}
		}
	}
	return nil
}

// withPinnedMap runs f on the map pinned at path.
func withPinnedMap(path string, f func(*ebpf.Map) error) error {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer m.Close()
	return f(m)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}

// removeEmptyDirs removes the group's folder and our folders above it once they are empty.
func removeEmptyDirs(bpffs, dir string) error {
	for _, d := range []string{dir, filepath.Dir(dir), filepath.Join(bpffs, BPFDir)} {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
			return fmt.Errorf("removing %s: %w", d, err)
		}
	}
	return nil
}

// AttachTransparent makes the kernel hold exactly scope s for group in the calling thread's network
// namespace: a units map with s, and a pinned link of the current program that reads it. What is already
// right is kept (a changed scope is a map update; the link stays). It reports whether it wrote anything;
// on an error its own writes are undone. Session.Apply does the same steps in its journal.
func AttachTransparent(bpffs, group string, s plan.Transparent) (bool, error) {
	if err := TransparentMissing(bpffs); err != nil {
		return false, err
	}
	cur, err := FindTransparent(bpffs, group)
	if err != nil {
		return false, err
	}
	t := (&Session{}).txn(false)
	defer t.close()
	if err := attachTransparent(t, bpffs, group, s, cur); err != nil {
		if rerr := t.rollback(); rerr != nil {
			return true, errors.Join(err, rerr)
		}
		return false, err
	}
	return t.writes > 0, nil
}

// attachTransparent is the journalled form of AttachTransparent, from what FindTransparent found (cur):
// stale pins removed, the units map made (or its keys set), and a link of the current program pinned. Each
// is one write of t with its undo; a dry t only records what would be done.
func attachTransparent(t *txn, bpffs, group string, s plan.Transparent, cur *Transparent) error {
	dir, cookie, err := transparentDir(bpffs, group)
	if err != nil {
		return err
	}
	done := cur != nil && cur.Linked && cur.Current && len(cur.Stale) == 0 && cur.MapOK && cur.Scope.Equal(s)
	t.count(transparentKind, 1, b2i(done), 0)
	if done {
		return nil
	}
	for _, n := range stale(cur) {
		p := filepath.Join(dir, n)
		if err := t.do(transparentKind, "remove the stale pin "+p+" (left by a killed run)",
			func() error { return removeIfExists(p) }, nil); err != nil {
			return err
		}
	}
	unitsPath, linkPath := filepath.Join(dir, pinUnits), filepath.Join(dir, pinLink)
	newMap := cur == nil || !cur.MapOK
	if newMap {
		var old *ebpf.Map // an incompatible map we replace, held so that the undo can pin it again
		if err := t.do(transparentKind, fmt.Sprintf("create BPF map %s (mptcp-transparent %s)", unitsPath, s),
			func() error {
				if err := os.MkdirAll(dir, 0o700); err != nil {
					return fmt.Errorf("creating %s: %w", dir, err)
				}
				m, err := newUnitsMap()
				if err != nil {
					return err
				}
				defer m.Close()
				// filled before it is pinned: a program never reads a half-written scope
				if err := setUnits(m, s); err != nil {
					return err
				}
				if cur != nil && cur.Map {
					if old, err = heldMap(unitsPath); err != nil {
						return err
					}
					t.hold(func() { old.Close() })
					if err := removeIfExists(unitsPath); err != nil {
						return err
					}
				}
				if err := m.Pin(unitsPath); err != nil {
					return fmt.Errorf("pinning %s: %w", unitsPath, err)
				}
				return nil
			},
			func() error {
				if err := removeIfExists(unitsPath); err != nil {
					return err
				}
				if old != nil {
					return old.Pin(unitsPath)
				}
				return removeEmptyDirs(bpffs, dir)
			}); err != nil {
			return err
		}
	} else if !cur.Scope.Equal(s) {
		was := cur.Scope
		if err := t.do(transparentKind, fmt.Sprintf("set mptcp-transparent scope %s (was %s) in %s", s, was, unitsPath),
			func() error { return withPinnedMap(unitsPath, func(m *ebpf.Map) error { return setUnits(m, s) }) },
			func() error { return withPinnedMap(unitsPath, func(m *ebpf.Map) error { return setUnits(m, was) }) }); err != nil {
			return err
		}
	}
	if !newMap && cur.Linked && cur.Current {
		return nil
	}
	var old link.Link // the link we replace: held, so it stays attached until the run ends, and the undo can pin it again
	var prog ebpf.ProgramID
	return t.do(transparentKind, fmt.Sprintf("attach mptcp-transparent %s: BPF program %s (fmod_ret on %s), link pinned at %s", s, progName, hookFunc, linkPath),
		func() error {
			o, err := kernelOffsets()
			if err != nil {
				return err
			}
			var p *ebpf.Program
			if err := withPinnedMap(unitsPath, func(m *ebpf.Map) error { p, err = newProgram(o, cookie, m); return err }); err != nil {
				return err
			}
			defer p.Close()
			if cur != nil && cur.Linked {
				if old, err = link.NewFromID(cur.LinkID); err != nil {
					return fmt.Errorf("opening link %d: %w", cur.LinkID, err)
				}
				t.hold(func() { old.Close() })
			}
			l, err := link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachModifyReturn})
			if err != nil {
				return fmt.Errorf("attaching to %s: %w", hookFunc, err)
			}
			defer l.Close() // the pin holds it from here on; without the pin it goes with this process
			if info, err := l.Info(); err == nil {
				prog = info.Program
			}
			tmp := filepath.Join(dir, pinLinkNew)
			if err := l.Pin(tmp); err != nil {
				return fmt.Errorf("pinning %s: %w", tmp, err)
			}
			// rename replaces an old link's pin atomically; the old program stays attached while we hold it
			if err := os.Rename(tmp, linkPath); err != nil {
				_ = os.Remove(tmp)
				return fmt.Errorf("pinning %s: %w", linkPath, err)
			}
			return nil
		},
		func() error {
			if err := removeIfExists(linkPath); err != nil {
				return err
			}
			if old != nil {
				return old.Pin(linkPath)
			}
			return waitGone([]ebpf.ProgramID{prog})
		})
}

// heldMap opens the map pinned at path by its id, so that the object holds no pin path (its Pin makes a
// new pin; one loaded from the pin would think itself pinned there still).
func heldMap(path string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		return nil, err
	}
	id, ok := info.ID()
	if !ok {
		return nil, fmt.Errorf("%s: the kernel gives no map id", path)
	}
	return ebpf.NewMapFromID(id)
}

// detachTransparent removes the group's pins (cur, as found) as one write of t. Its undo makes the same
// scope attached again (a new link of the current program, or the units map alone if that was all).
func detachTransparent(t *txn, bpffs, group string, cur *Transparent, undo bool) error {
	if cur == nil {
		return nil
	}
	var un func() error
	if undo && cur.MapOK {
		un = func() error {
			if !cur.Linked {
				return restoreUnitsMap(bpffs, group, cur.Scope)
			}
			_, err := AttachTransparent(bpffs, group, cur.Scope)
			return err
		}
	}
	return t.do(transparentKind, fmt.Sprintf("detach mptcp-transparent %s (remove the pins in %s)", cur.Scope, cur.Dir),
		func() error { _, err := DetachTransparent(bpffs, group); return err }, un)
}

func restoreUnitsMap(bpffs, group string, s plan.Transparent) error {
	dir, _, err := transparentDir(bpffs, group)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	m, err := newUnitsMap()
	if err != nil {
		return err
	}
	defer m.Close()
	if err := setUnits(m, s); err != nil {
		return err
	}
	return m.Pin(filepath.Join(dir, pinUnits))
}

func stale(t *Transparent) []string {
	if t == nil {
		return nil
	}
	return t.Stale
}

func compatibleMap(m *ebpf.Map) bool {
	return m != nil && m.Type() == ebpf.Hash && m.KeySize() == unitKeySize && m.ValueSize() == 1 && m.MaxEntries() >= maxUnits
}

// DetachTransparent removes group's pins in the calling thread's network namespace (which detaches the
// program) and our folders once empty. It reports whether there was anything.
func DetachTransparent(bpffs, group string) (bool, error) {
	if !isBPFFS(bpffs) {
		return false, nil // no bpffs here: nothing of ours can be pinned
	}
	dir, _, err := transparentDir(bpffs, group)
	if err != nil {
		return false, err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// the programs of our links: gone from the kernel only once no trampoline calls them any more
	var progs []ebpf.ProgramID
	for _, e := range ents {
		if l, err := link.LoadPinnedLink(filepath.Join(dir, e.Name()), nil); err == nil {
			if info, err := l.Info(); err == nil {
				progs = append(progs, info.Program)
			}
			l.Close()
		}
	}
	// the link first: the program stops deciding before its map goes
	slices.SortFunc(ents, func(a, b os.DirEntry) int { return b2i(a.Name() != pinLink) - b2i(b.Name() != pinLink) })
	for _, e := range ents {
		if err := removeIfExists(filepath.Join(dir, e.Name())); err != nil {
			return true, err
		}
	}
	if err := removeEmptyDirs(bpffs, dir); err != nil {
		return true, err
	}
	return true, waitGone(progs)
}

// waitGone waits until the kernel has freed these programs. Unpinning a link detaches it from a workqueue,
// a moment later; a caller that goes on to restore net.mptcp.enabled=0 must not race a program that still
// makes MPTCP sockets (they would fail to open).
func waitGone(progs []ebpf.ProgramID) error {
	deadline := time.Now().Add(5 * time.Second)
	for _, id := range progs {
		for {
			p, err := ebpf.NewProgramFromID(id)
			if err != nil {
				break // ENOENT: freed, so no longer attached anywhere
			}
			p.Close()
			if time.Now().After(deadline) {
				return fmt.Errorf("BPF program %d is still loaded 5s after its link was unpinned (does another process hold it?)", id)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return nil
}

// TransparentGroups lists the groups with pins in the calling thread's network namespace (for a group
// that left the configuration while its program stayed attached).
func TransparentGroups(bpffs string) ([]string, error) {
	if !isBPFFS(bpffs) {
		return nil, nil
	}
	base, _, err := netnsDir(bpffs)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(base)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out []string
	for _, e := range ents {
		out = append(out, unescapeGroup(e.Name()))
	}
	return out, err
}
