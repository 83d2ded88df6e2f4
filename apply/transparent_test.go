package apply

// Kernel tests of mptcp-transparent as a step of Session.Apply and Down (run by TestTransparent, in the VM
// on a kernel that refuses the program).

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/parser"
	"github.com/linkagg/linkagg-hooks/plan"
)

// tOpts are the env's options with a private bpffs.
func (e *env) tOpts(fs string) Options { return Options{RunDir: e.run, BPFFS: fs} }

// transparentDesired is mptcpDesired(0, 1) with mptcp-transparent scope s.
func transparentDesired(s plan.Transparent) plan.Desired {
	d := mptcpDesired(0, 1)
	d.Transparent = &s
	return d
}

// tStatus is Status with the private bpffs.
func (e *env) tStatus(fs string, d plan.Desired) Report {
	e.t.Helper()
	s, err := OpenReadOnly(e.tOpts(fs))
	e.must(err)
	defer s.Close()
	r, err := s.Status(d)
	e.must(err)
	return r
}

// transparentSnapshot is everything of mptcp-transparent the kernel holds for namespace A, without ids
// (an undone detach attaches a new link): the bpffs tree with each pin's kind and content, the links of
// our program for A that the kernel lists, and what a TCP socket of A becomes.
func (e *env) transparentSnapshot(fs string) string {
	e.t.Helper()
	var b strings.Builder
	filepath.WalkDir(fs, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			fmt.Fprintf(&b, "walk %s: %v\n", p, err)
			return nil
		}
		rel, _ := filepath.Rel(fs, p)
		switch {
		case d.IsDir():
			fmt.Fprintf(&b, "dir %s\n", rel)
		case d.Name() == pinUnits:
			m, err := ebpf.LoadPinnedMap(p, nil)
			e.must(err)
			fmt.Fprintf(&b, "map %s type=%s key=%d value=%d max=%d", rel, m.Type(), m.KeySize(), m.ValueSize(), m.MaxEntries())
			if compatibleMap(m) {
				s, err := readUnits(m)
				e.must(err)
				fmt.Fprintf(&b, " scope=%s", s)
			}
			m.Close()
			b.WriteString("\n")
		default:
			l, err := link.LoadPinnedLink(p, nil)
			e.must(err)
			info, err := l.Info()
			e.must(err)
			prog, err := ebpf.NewProgramFromID(info.Program)
			e.must(err)
			pi, err := prog.Info()
			e.must(err)
			fmt.Fprintf(&b, "link %s program %s tag %s\n", rel, pi.Name, pi.Tag)
			prog.Close()
			l.Close()
		}
		return nil
	})
	fmt.Fprintf(&b, "kernel links for A: %d\n", len(kernelLinks(e.t, cookieOf(e.t))))
	fmt.Fprintf(&b, "tcp socket protocol %d\n", tcpProto(e.t))
	return b.String()
}

// plantOldProgram pins, where the group's pins go, a link of a program this binary would not load now (the
// IPv6 choice flipped: another tag, as an older linkagg's program would have), reading a units map with s.
func plantOldProgram(t *testing.T, fs, group string, s plan.Transparent) {
	t.Helper()
	dir, cookie, err := transparentDir(fs, group)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := newUnitsMap()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := setUnits(m, s); err != nil {
		t.Fatal(err)
	}
	if err := m.Pin(filepath.Join(dir, pinUnits)); err != nil {
		t.Fatal(err)
	}
	o, err := kernelOffsets()
	if err != nil {
		t.Fatal(err)
	}
	_, v6 := mptcpProtocols()
	p, err := ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{Name: progName, Type: ebpf.Tracing, AttachType: ebpf.AttachModifyReturn,
		AttachTo: hookFunc, Instructions: program(o, cookie, !v6, m.FD()), License: bpfLicense}, ebpf.ProgramOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachModifyReturn})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Pin(filepath.Join(dir, pinLink)); err != nil {
		t.Fatal(err)
	}
}

// plantForeignLayoutMap pins, as the group's units map, a map of another layout (as another version of
// linkagg might have made), without a link.
func plantForeignLayoutMap(t *testing.T, fs, group string) {
	t.Helper()
	dir, _, err := transparentDir(fs, group)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 64, ValueSize: 1, MaxEntries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(dir, pinUnits)); err != nil {
		t.Fatal(err)
	}
}

// transparentApplyDown: Apply of a mode mptcp plan with `mptcp-transparent all` attaches the program after
// net.mptcp.enabled=1 (a TCP socket of the namespace becomes MPTCP), records the pin folder in the
// footprint and shows it in Status; a second Apply writes nothing; a scope change is one map write with the
// same link; a plan without the option detaches it; Down removes the program, its link and every pin (the
// kernel's own list) and restores net.mptcp.enabled.
func transparentApplyDown(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	fs := newBPFFS(t)
	needTransparent(t, fs)
	e.veths(2)
	e.mptcpPre()
	pre := e.mptcpSnapshot() + e.transparentSnapshot(fs)
	cookie := cookieOf(t)
	d := transparentDesired(plan.Transparent{All: true})
	res, err := Apply(d, e.tOpts(fs))
	e.must(err)
	t.Logf("apply: %d writes:\n  %s", res.Writes, strings.Join(res.Ops, "\n  "))
	if links := kernelLinks(t, cookie); len(links) != 1 {
		t.Fatalf("kernel links of our program for A: %v, want 1", links)
	}
	if p := tcpProto(t); p != ipprotoMPTCP {
		t.Errorf("a TCP socket of A after apply: protocol %d, want MPTCP", p)
	}
	var fp Footprint
	b, err := os.ReadFile(filepath.Join(e.run, footprintFile("tun0")))
	e.must(err)
	e.must(json.Unmarshal(b, &fp))
	dir, _, err := transparentDir(fs, "tun0")
	e.must(err)
	if fp.Transparent != dir {
		t.Errorf("footprint records pins %q, want %q", fp.Transparent, dir)
	}
	st := e.tStatus(fs, d)
	if !st.Converged || st.Transparent == nil || !st.Transparent.Attached() || !strings.Contains(st.String(), "mptcp-transparent all: program linkagg_mptcp id") {
		t.Errorf("status after apply:\n%s", st)
	}
	if !slices.ContainsFunc(st.Kinds, func(k Kind) bool { return k.Kind == transparentKind && k.Desired == 1 && k.Present == 1 }) {
		t.Errorf("status kinds %+v lack mptcp-transparent desired 1 present 1", st.Kinds)
	}
	if res, err := Apply(d, e.tOpts(fs)); err != nil || res.Writes != 0 {
		t.Errorf("second apply: %d writes %q, %v", res.Writes, res.Ops, err)
	}

	// a scope change: status shows it as drift, apply writes the map only
	units := transparentDesired(plan.Transparent{Units: []string{"lgtest-x.service"}})
	if st := e.tStatus(fs, units); st.Converged || !slices.ContainsFunc(st.Drift, func(s string) bool {
		return strings.Contains(s, "set mptcp-transparent scope lgtest-x.service (was all)")
	}) {
		t.Errorf("status of a changed scope:\n%s\n%q", st, st.Drift)
	}
	links := kernelLinks(t, cookie)
	res, err = Apply(units, e.tOpts(fs))
	e.must(err)
	if res.Writes != 1 || !slices.Equal(kernelLinks(t, cookie), links) {
		t.Errorf("scope change: %d writes %q, links %v (were %v)", res.Writes, res.Ops, kernelLinks(t, cookie), links)
	}
	if p := tcpProto(t); p != unix.IPPROTO_TCP {
		t.Errorf("the test process is in no unit of the scope: protocol %d", p)
	}

	// the option removed while up: detached, and the footprint forgets the pins
	res, err = Apply(mptcpDesired(0, 1), e.tOpts(fs))
	e.must(err)
	if len(kernelLinks(t, cookie)) != 0 || !slices.ContainsFunc(res.Ops, func(s string) bool { return strings.HasPrefix(s, "detach mptcp-transparent") }) {
		t.Errorf("apply without the option: links %v, ops %q", kernelLinks(t, cookie), res.Ops)
	}
	b, err = os.ReadFile(filepath.Join(e.run, footprintFile("tun0")))
	e.must(err)
	if strings.Contains(string(b), `"transparent"`) {
		t.Errorf("footprint still names the pins: %s", b)
	}

	_, err = Apply(d, e.tOpts(fs))
	e.must(err)
	res, err = Down(d, DownOptions{Options: e.tOpts(fs)})
	e.must(err)
	t.Logf("down: %q", res.Ops)
	if post := e.mptcpSnapshot() + e.transparentSnapshot(fs); post != pre {
		t.Fatalf("state after apply+down differs:\n%s", diffLines(pre, post))
	}
	if links := kernelLinks(t, cookie); len(links) != 0 {
		t.Errorf("kernel links after down: %v", links)
	}
}

// transparentDownLost: with the run dir lost after apply, Down finds the pins by the group's name; pins of
// a group no configured group claims are an orphan group that Down(Unconfigured) removes.
func transparentDownLost(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	fs := newBPFFS(t)
	needTransparent(t, fs)
	e.veths(2)
	cookie := cookieOf(t)
	d := transparentDesired(plan.Transparent{All: true})
	_, err := Apply(d, e.tOpts(fs))
	e.must(err)
	ents, err := os.ReadDir(e.run)
	e.must(err)
	for _, en := range ents {
		e.must(os.RemoveAll(filepath.Join(e.run, en.Name())))
	}
	_, err = Down(d, DownOptions{Options: e.tOpts(fs)})
	e.must(err)
	if links := kernelLinks(t, cookie); len(links) != 0 {
		t.Errorf("links after down without the run dir: %v", links)
	}
	if ents, _ := os.ReadDir(fs); len(ents) != 0 {
		t.Errorf("bpffs after down holds %v", ents)
	}

	// pins alone, of a group that is not configured (tun9), next to a configured one (tun0)
	_, err = AttachTransparent(fs, "tun9", plan.Transparent{All: true})
	e.must(err)
	s, err := Open(e.tOpts(fs))
	e.must(err)
	defer s.Close()
	o, err := s.Orphans([]plan.Desired{group("a", 0, 1)})
	e.must(err)
	if !slices.Equal(o.Groups, []string{"tun9"}) || !slices.ContainsFunc(o.Lines, func(l string) bool { return strings.Contains(l, "group tun9: mptcp-transparent pins in "+fs) }) {
		t.Fatalf("orphans: %q %q", o.Groups, o.Lines)
	}
	res, err := s.Down(plan.Desired{Group: "tun9", Family: parser.Inet, TUN: plan.TUN{Name: "tun9"}}, false)
	e.must(err)
	if res.Writes != 1 || len(kernelLinks(t, cookie)) != 0 {
		t.Errorf("down of the orphan: %q, links %v", res.Ops, kernelLinks(t, cookie))
	}
	if o, err := s.Orphans([]plan.Desired{group("a", 0, 1)}); err != nil || !o.Empty() {
		t.Errorf("orphans after its down: %q %v", o.Lines, err)
	}
}

// transparentRollback: a failure at every single write of an Apply that attaches, changes, replaces or
// detaches the program leaves the kernel (program, link, pins, map contents, what a socket becomes),
// endpoints, limits, sysctls and state files as they were: the undo of an attach waits until the program
// is gone before net.mptcp.enabled goes back to 0, the undo of a detach attaches the same scope again, a
// replaced older program or map of another layout is pinned again.
func transparentRollback(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	fs := newBPFFS(t)
	needTransparent(t, fs)
	e.veths(2)
	e.mptcpPre()
	allScope, unitScope := plan.Transparent{All: true}, plan.Transparent{Units: []string{"lgtest-a.service", "lgtest.slice"}}
	all, units := transparentDesired(allScope), transparentDesired(unitScope)
	// (from nothing: packet->hybrid+all is the same order of writes, with net.mptcp.enabled 0 -> 1 before
	// the program and the nft table after it)
	mp := mptcpDesired(0, 1)
	packet := group("a", 0, 1)
	// mode hybrid writes its nft table after the program: a failure there undoes the program's writes
	hybrid := func(s *plan.Transparent) plan.Desired {
		d := mptcpDesired(0, 1)
		d.Transparent = s
		nft := *packet.Nft
		nft.SkipMPTCP = true
		d.Mode, d.Nft = parser.ModeHybrid, &nft
		d.Rules = append(slices.Clone(packet.Rules), d.Rules...)
		return d
	}
	hybridAll, hybridUnits := hybrid(&allScope), hybrid(&unitScope)
	for _, c := range []struct {
		name   string
		pre    *plan.Desired
		plant  func()
		target plan.Desired
	}{
		{"mptcp->all", &mp, nil, all},
		{"all->units", &all, nil, units},
		{"all->hybrid+units", &all, nil, hybridUnits},
		{"all->mptcp", &all, nil, mp},
		{"all->packet", &all, nil, packet},
		{"packet->hybrid+all", &packet, nil, hybridAll},
		{"older program->hybrid+all", &mp, func() { plantOldProgram(t, fs, "tun0", allScope) }, hybridAll},
		{"older program->hybrid+units", &mp, func() { plantOldProgram(t, fs, "tun0", allScope) }, hybridUnits},
		{"map of another layout->hybrid+all", &mp, func() { plantForeignLayoutMap(t, fs, "tun0") }, hybridAll},
		{"older program, map of another layout->hybrid+all", &mp, func() {
			plantOldProgram(t, fs, "tun0", allScope)
			dir, _, err := transparentDir(fs, "tun0")
			e.must(err)
			e.must(os.Remove(filepath.Join(dir, pinUnits))) // the old link keeps its own map
			plantForeignLayoutMap(t, fs, "tun0")
		}, hybridAll},
	} {
		reset := func() {
			_, err := Down(all, DownOptions{Options: e.tOpts(fs)})
			e.must(err)
			if c.pre != nil {
				_, err := Apply(*c.pre, e.tOpts(fs))
				e.must(err)
			}
			if c.plant != nil {
				c.plant()
			}
		}
		reset()
		want := e.mptcpSnapshot() + e.transparentSnapshot(fs)
		res, err := Apply(c.target, e.tOpts(fs))
		e.must(err)
		n := res.Writes
		var tw []string
		for _, op := range res.Ops {
			if strings.Contains(op, "mptcp-transparent") || strings.Contains(op, "BPF") || strings.Contains(op, "pin") {
				tw = append(tw, op)
			}
		}
		if len(tw) == 0 {
			t.Fatalf("%s: no mptcp-transparent write among %q", c.name, res.Ops)
		}
		t.Logf("%s: %d writes, of mptcp-transparent: %q", c.name, n, tw)
		if c.target.Transparent != nil {
			if got := e.transparentSnapshot(fs); !strings.Contains(got, "kernel links for A: 1\n") || !strings.Contains(got, "scope="+c.target.Transparent.String()+"\n") {
				t.Fatalf("%s: after the apply:\n%s", c.name, got)
			}
		}
		reset()
		if got := e.mptcpSnapshot() + e.transparentSnapshot(fs); got != want {
			t.Fatalf("%s: reset does not give the pre-state:\n%s", c.name, diffLines(want, got))
		}
		for i := 1; i <= n; i++ {
			res, err := applyFailing(c.target, e.tOpts(fs), i)
			if !errors.Is(err, ErrInjected) {
				t.Fatalf("%s FailAt=%d: err %v", c.name, i, err)
			}
			if res.Writes != i-1 {
				t.Errorf("%s FailAt=%d: %d writes before the failure", c.name, i, res.Writes)
			}
			if got := e.mptcpSnapshot() + e.transparentSnapshot(fs); got != want {
				t.Fatalf("%s FailAt=%d (%v): state differs from the pre-state:\n%s", c.name, i, err, diffLines(want, got))
			}
		}
		if _, err := applyFailing(c.target, e.tOpts(fs), n+1); err != nil {
			t.Fatalf("%s FailAt=%d (past the end): %v", c.name, n+1, err)
		}
	}
	_, err := Down(all, DownOptions{Options: e.tOpts(fs)})
	e.must(err)
	if links := kernelLinks(t, cookieOf(t)); len(links) != 0 {
		t.Errorf("links after the last down: %v", links)
	}
}

// TestTransparentPrecheck: where the kernel or the host lacks what mptcp-transparent needs (here at least
// the bpffs: the path given is none), Precheck and Apply refuse with one line naming the option and what is
// missing, before any write: the kernel and the run dir are as before. Runs on any kernel; the refusal of
// the kernel itself is tested through the real binary (tests/e2e_transparent_test.go).
func TestTransparentPrecheck(t *testing.T) {
	e := newEnv(t)
	defer e.close()
	e.veths(2)
	notBPF := t.TempDir()
	pre := e.mptcpSnapshot()
	d := transparentDesired(plan.Transparent{All: true})
	s, err := Open(e.tOpts(notBPF))
	e.must(err)
	defer s.Close()
	missing := TransparentMissing(notBPF)
	if missing == nil {
		t.Fatalf("TransparentMissing(%s) found nothing missing", notBPF)
	}
	t.Logf("missing here: %v", missing)
	err = s.Precheck(d)
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Option != "mptcp-transparent" || err.Error() != "apply tun0: "+missing.Error() || strings.Contains(err.Error(), "\n") {
		t.Errorf("precheck: %v", err)
	}
	res, err := s.Apply(d)
	if err == nil || !errors.As(err, &ce) || res.Writes != 0 || strings.Contains(err.Error(), "\n") {
		t.Errorf("apply: %d writes, %v", res.Writes, err)
	}
	if post := e.mptcpSnapshot(); post != pre {
		t.Errorf("the refused apply changed the kernel or the run dir:\n%s", diffLines(pre, post))
	}
	// without the option the same group applies
	_, err = s.Apply(mptcpDesired(0, 1))
	e.must(err)
	_, err = s.Down(mptcpDesired(0, 1), false)
	e.must(err)
}
