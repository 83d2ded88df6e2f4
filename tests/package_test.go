package tests

// The Debian package: build it with `make deb`, lint it, and install, upgrade, remove and purge it in a
// disposable root — an overlayfs whose lower dir is this machine's / and whose upper dir is a temporary
// folder, mounted in a private mount namespace held by one `unshare ... sleep` process. Everything dpkg
// writes lands in the upper dir and vanishes with the namespace; the real /etc, /usr, /run stay untouched.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

const debPkg = "linkagg-hooks"

// debFiles is every non-directory the package ships: path → "type mode owner [link target]".
var debFiles = map[string]string{
	"/etc/iproute2/rt_protos.d/linkagg.conf": "f 644 root:root",
	"/etc/network/if-pre-up.d/linkagg":       "l 777 root:root /usr/lib/linkagg/linkagg-ifupdown",
	"/etc/network/if-up.d/linkagg":           "l 777 root:root /usr/lib/linkagg/linkagg-ifupdown",
	"/etc/network/if-down.d/linkagg":         "l 777 root:root /usr/lib/linkagg/linkagg-ifupdown",
	"/etc/network/if-post-down.d/linkagg":    "l 777 root:root /usr/lib/linkagg/linkagg-ifupdown",
	"/usr/lib/linkagg/linkagg-ifupdown":      "f 755 root:root",
	"/usr/sbin/linkagg":                      "f 755 root:root",
	// systemd-networkd hosts and failover (issue 5); vendor files under /usr and /lib (issue 13)
	"/usr/lib/linkagg/linkagg-networkd":                                       "f 755 root:root",
	"/usr/lib/networkd-dispatcher/routable.d/50-linkagg":                      "l 777 root:root ../../linkagg/linkagg-networkd",
	"/usr/lib/networkd-dispatcher/degraded.d/50-linkagg":                      "l 777 root:root ../../linkagg/linkagg-networkd",
	"/usr/lib/networkd-dispatcher/carrier.d/50-linkagg":                       "l 777 root:root ../../linkagg/linkagg-networkd",
	"/usr/lib/networkd-dispatcher/no-carrier.d/50-linkagg":                    "l 777 root:root ../../linkagg/linkagg-networkd",
	"/usr/lib/networkd-dispatcher/off.d/50-linkagg":                           "l 777 root:root ../../linkagg/linkagg-networkd",
	"/lib/systemd/networkd.conf.d/linkagg.conf":                               "f 644 root:root",
	"/lib/systemd/system/linkagg-watch.service":                               "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/linkagg-tun0.netdev.example":       "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/README":                   "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/two-nic/10-eth0.network":  "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/two-nic/10-eth1.network":  "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/two-nic/tun0.toml":        "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/two-nic/tun0-v6.toml":     "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/four-nic/10-eth0.network": "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/four-nic/10-eth1.network": "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/four-nic/10-eth2.network": "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/four-nic/10-eth3.network": "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/four-nic/tun0.toml":       "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/networkd/four-nic/tun0-v6.toml":    "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/README.Debian.gz":                           "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/README.md.gz":                               "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/changelog.Debian.gz":                        "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/copyright":                                  "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/interfaces.example":                "f 644 root:root",
	"/usr/share/doc/linkagg-hooks/examples/linkagg.toml.example":              "f 644 root:root",
	"/usr/share/man/man5/interfaces-linkagg.5.gz":                             "f 644 root:root",
	"/usr/share/lintian/overrides/linkagg-hooks":                              "f 644 root:root",
	"/usr/share/man/man8/linkagg.8.gz":                                        "f 644 root:root",
}

// debOwnDirs are the directories only this package has: gone after purge.
var debOwnDirs = []string{"/etc/linkagg", "/usr/lib/linkagg", "/usr/share/doc/linkagg-hooks",
	"/usr/share/doc/linkagg-hooks/examples"}

// debConffiles: only what the admin may edit is under /etc (the hook links there are not conffiles)
var debConffiles = []string{"/etc/iproute2/rt_protos.d/linkagg.conf"}

// needPackaging is needRoot for this test: root, and the tools that build, lint and install a .deb. Missing
// build tools and Build-Depends (Debian's Go >= 1.23 from bookworm-backports, dh-golang) are installed by
// `make deb-deps` (as `make deps` does for the other tests).
func needPackaging(t *testing.T) {
	t.Helper()
	needRoot(t)
	missing := func() []string {
		var m []string
		for _, tool := range []string{"dpkg-buildpackage", "dh", "dh_golang", "lintian", "git", "unshare", "nsenter", "chroot", "mount"} {
			if _, err := exec.LookPath(tool); err != nil {
				m = append(m, tool)
			}
		}
		if out, err := exec.Command("dpkg-checkbuilddeps", filepath.Join(repoRoot, "debian/control")).CombinedOutput(); err != nil {
			m = append(m, strings.TrimSpace(string(out)))
		}
		return m
	}
	if len(missing()) > 0 {
		cmd := exec.Command("make", "deb-deps")
		cmd.Dir = repoRoot
		out, err := cmd.CombinedOutput()
		t.Logf("make deb-deps:\n%s", out)
		if m := missing(); err != nil || len(m) > 0 {
			if os.Getenv("CI") == "true" {
				t.Fatalf("packaging tools missing: %v (make deb-deps: %v)", m, err)
			}
			t.Skipf("packaging tools missing: %v (make deb-deps: %v)", m, err)
		}
	}
}

// buildDeb runs `make deb` and returns the one build/linkagg-hooks_*.deb. The unit tests, which `make deb`
// runs from dh_auto_test, are left to `make unit` here (nocheck).
func buildDeb(t *testing.T) string {
	t.Helper()
	if builtDeb != "" {
		return builtDeb
	}
	builtDeb = makeDeb(t, "nocheck", filepath.Join(repoRoot, "build"))
	return builtDeb
}

// makeDeb runs `make deb DEB_OUT=out` with DEB_BUILD_OPTIONS=opts and returns the binary package it made.
func makeDeb(t *testing.T, opts, out string) string {
	t.Helper()
	start := time.Now()
	cmd := exec.Command("make", "deb", "DEB_OUT="+out)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "DEB_BUILD_OPTIONS="+opts)
	log, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, log)
	}
	debs, _ := filepath.Glob(filepath.Join(out, debPkg+"_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %d packages in %s: %v\n%s", len(debs), out, debs, log)
	}
	if fi, err := os.Stat(debs[0]); err != nil || fi.ModTime().Before(start.Add(-time.Second)) {
		t.Fatalf("%s was not rebuilt by make deb (%v)", debs[0], err)
	}
	// built by Debian's Go, as Build-Depends says, whatever go the caller has on PATH
	if bu := run(t, "dpkg-deb", "-f", debs[0], "Built-Using"); !regexp.MustCompile(`^golang-1\.\d+ \(= `).MatchString(bu) {
		t.Errorf("%s: Built-Using is not Debian's Go: %q", debs[0], bu)
	}
	t.Logf("built %s (DEB_BUILD_OPTIONS=%s) in %s", debs[0], opts, time.Since(start).Round(time.Second))
	return debs[0]
}

// debChanges is the .changes that lists the source and binary packages next to deb.
func debChanges(deb string) string {
	return strings.TrimSuffix(deb, ".deb") + ".changes"
}

// builtDeb is the package made by the first buildDeb of this test run.
var builtDeb string

// TestPackageSeedE2E runs the core's two-host end-to-end test once with the ifupdown hooks as the package
// ships them: the hook binary unpacked from the .deb.
func TestPackageSeedE2E(t *testing.T) {
	needPackaging(t)
	deb := buildDeb(t)
	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	hook := filepath.Join(root, "usr/lib/linkagg/linkagg-ifupdown")
	if target, err := os.Readlink(filepath.Join(root, "etc/network/if-up.d/linkagg")); err != nil || target != "/usr/lib/linkagg/linkagg-ifupdown" {
		t.Fatalf("the package's if-up.d/linkagg is not a link to the hook binary: %q %v", target, err)
	}
	seedE2E(t, NewLabWithHook(t, hook, "e2p", 250, 250, 250, 250))
}

// droot is a disposable root: an overlay of / in a private mount namespace.
type droot struct {
	t      *testing.T
	holder *exec.Cmd
	merged string
}

func newDroot(t *testing.T) *droot {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := &droot{t: t, merged: filepath.Join(dir, "merged")}
	r.holder = exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "infinity")
	if err := r.holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// the namespace, and with it every mount below, goes away with its last process
		r.holder.Process.Signal(syscall.SIGKILL)
		r.holder.Wait()
	})
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for i := 0; ; i++ {
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", r.holder.Process.Pid))
		if ns != "" && ns != self {
			break
		}
		if i == 100 {
			t.Fatal("unshare did not enter a new mount namespace")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.ns("mount", "-t", "overlay", "overlay", "-o",
		"lowerdir=/,upperdir="+filepath.Join(dir, "upper")+",workdir="+filepath.Join(dir, "work"), r.merged)
	// the chroot gets its own /tmp and /run, never the host's; /dev and /proc for dpkg and its scripts
	r.ns("mount", "-t", "tmpfs", "tmpfs", r.merged+"/tmp")
	r.ns("mount", "-t", "tmpfs", "tmpfs", r.merged+"/run")
	r.ns("mount", "--rbind", "/dev", r.merged+"/dev")
	r.ns("mount", "-t", "proc", "proc", r.merged+"/proc")
	return r
}

func (r *droot) nsCmd(args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", fmt.Sprint(r.holder.Process.Pid), "-m", "--"}, args...)...)
}

// ns runs a command in the namespace (outside the chroot).
func (r *droot) ns(args ...string) string {
	r.t.Helper()
	out, err := r.nsCmd(args...).CombinedOutput()
	if err != nil {
		r.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// try runs a command inside the chroot with a minimal environment plus env.
func (r *droot) try(env []string, args ...string) (string, error) {
	cmd := r.nsCmd(append([]string{"chroot", r.merged, "/usr/bin/env", "-i",
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive"}, append(env, args...)...)...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

func (r *droot) run(args ...string) string {
	r.t.Helper()
	out, err := r.try(nil, args...)
	if err != nil {
		r.t.Fatalf("in the disposable root: %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// exists tells whether path exists (without following a final symlink) inside the chroot.
func (r *droot) exists(path string) bool {
	_, err := r.try(nil, "test", "-e", path, "-o", "-L", path)
	return err == nil
}

func TestPackageDeb(t *testing.T) {
	needPackaging(t)
	deb := buildDeb(t)

	t.Run("lintian", func(t *testing.T) {
		// the .changes: the source package (.dsc, .orig.tar.gz, .debian.tar.xz) and both binary packages
		changes := debChanges(deb)
		out, err := exec.Command("lintian", "--pedantic", "--info", "--fail-on", "error,warning,info,pedantic", changes).CombinedOutput()
		t.Logf("lintian --pedantic --info %s:\n%s", filepath.Base(changes), out)
		if err != nil {
			t.Fatalf("lintian --pedantic: %v", err)
		}
		if m := regexp.MustCompile(`(?m)^[EWIP]: .*`).FindAllString(string(out), -1); len(m) > 0 {
			t.Fatalf("lintian tags:\n%s", strings.Join(m, "\n"))
		}
		// the source package is complete: the .orig holds no debian/, the .dsc and tarballs are in build/
		files := run(t, "sh", "-c", `sed -n '/^Files:/,/^[^ ]/p' "$1"`, "sh", changes)
		for _, suffix := range []string{".dsc", ".orig.tar.gz", ".debian.tar.xz", "_amd64.deb"} {
			if !strings.Contains(files, suffix) {
				t.Errorf("%s lists no %s:\n%s", filepath.Base(changes), suffix, files)
			}
		}
		origs, _ := filepath.Glob(filepath.Join(repoRoot, "build", debPkg+"_*.orig.tar.gz"))
		if len(origs) != 1 {
			t.Fatalf("no .orig.tar.gz in build/: %v", origs)
		}
		list := run(t, "tar", "-tzf", origs[0])
		if regexp.MustCompile(`(?m)^[^/]+/debian/`).MatchString(list) {
			t.Errorf("%s contains debian/", origs[0])
		}
		if !strings.Contains(list, "/vendor/modules.txt\n") || !strings.Contains(list, "/go.mod\n") {
			t.Errorf("%s lacks go.mod or vendor/modules.txt", origs[0])
		}
	})

	t.Run("dbgsym", func(t *testing.T) {
		// dh_strip made the -dbgsym package from unstripped binaries (GNU build ids), and stripped them
		dbg := strings.Replace(deb, debPkg+"_", debPkg+"-dbgsym_", 1)
		ids := regexp.MustCompile(`usr/lib/debug/\.build-id/[0-9a-f]{2}/[0-9a-f]+\.debug`).FindAllString(run(t, "dpkg-deb", "-c", dbg), -1)
		if len(ids) != 3 {
			t.Errorf("%s holds %d .debug files, want 3 (linkagg, linkagg-ifupdown, linkagg-networkd)", filepath.Base(dbg), len(ids))
		}
		dir := t.TempDir()
		run(t, "dpkg-deb", "-x", deb, dir)
		if out := run(t, "readelf", "-S", "-n", filepath.Join(dir, "usr/sbin/linkagg")); regexp.MustCompile(`\s\.symtab\s`).MatchString(out) || !strings.Contains(out, "NT_GNU_BUILD_ID") {
			t.Errorf("the packaged linkagg is not stripped or has no GNU build id:\n%s", out)
		}
	})

	hostHad := map[string]bool{}
	for p := range debFiles {
		_, err := os.Lstat(p)
		hostHad[p] = err == nil
	}

	r := newDroot(t)
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	// copy the .deb into the chroot's private /tmp
	cp := r.nsCmd("sh", "-c", `cat > "$1"`, "sh", r.merged+"/tmp/x.deb")
	cp.Stdin = bytes.NewReader(data)
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("copying the .deb: %v\n%s", err, out)
	}

	t.Logf("dpkg -i:\n%s", r.run("dpkg", "-i", "/tmp/x.deb"))
	if st := r.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", debPkg); strings.TrimSpace(st) != "ii" {
		t.Fatalf("after dpkg -i the status is %q, want ii", st)
	}

	// the file list, types, modes, owners and link targets
	list := strings.Fields(r.run("dpkg", "-L", debPkg))
	var dirs []string
	got := map[string]string{}
	for _, p := range list {
		// the package's /lib (for the systemd unit, where Debian 12 wants it) is a symlink to usr/lib on a
		// merged-/usr root
		if p == "/." || p == "/lib" {
			continue
		}
		line := strings.TrimSpace(r.run("stat", "-c", "%F|%a|%U:%G", p))
		f := strings.Split(line, "|")
		switch f[0] {
		case "directory":
			dirs = append(dirs, p)
			if f[1] != "755" || f[2] != "root:root" {
				t.Errorf("%s: directory %s %s, want 755 root:root", p, f[1], f[2])
			}
			continue
		case "regular file":
			got[p] = "f " + f[1] + " " + f[2]
		case "symbolic link":
			got[p] = "l " + f[1] + " " + f[2] + " " + strings.TrimSpace(r.run("readlink", p))
		default:
			got[p] = line
		}
	}
	for p, want := range debFiles {
		if got[p] != want {
			t.Errorf("%s: got %q, want %q", p, got[p], want)
		}
	}
	for p, g := range got {
		if _, ok := debFiles[p]; !ok {
			t.Errorf("unexpected file in the package: %s (%s)", p, g)
		}
	}
	for _, d := range debOwnDirs {
		if !debHas(dirs, d) {
			t.Errorf("directory %s is not in the package", d)
		}
	}

	// conffiles: exactly the files under /etc that are not symlinks, with the shipped checksums
	var conf []string
	for _, l := range strings.Split(r.run("dpkg-query", "-W", "-f=${Conffiles}", debPkg), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			conf = append(conf, f[0])
		}
	}
	sort.Strings(conf)
	if strings.Join(conf, " ") != strings.Join(debConffiles, " ") {
		t.Errorf("conffiles %v, want %v", conf, debConffiles)
	}
	if out := r.run("dpkg", "--verify", debPkg); out != "" {
		t.Errorf("dpkg --verify:\n%s", out)
	}

	// the programs run from the installed paths
	ver := r.run("/usr/sbin/linkagg", "--version")
	t.Logf("conffiles %v; %s", conf, strings.TrimSpace(ver))
	upstream := regexp.MustCompile(`_([^_-]+)(-[^_]*)?_[^_]+\.deb$`).FindStringSubmatch(deb)
	if !strings.HasPrefix(ver, "linkagg ") || upstream == nil || !strings.Contains(ver, upstream[1]) {
		t.Errorf("linkagg --version = %q, want the upstream version of %s", ver, filepath.Base(deb))
	}
	if out := r.run("/usr/sbin/linkagg", "--help"); !strings.Contains(out, "validate") {
		t.Errorf("linkagg --help:\n%s", out)
	}
	for _, h := range [][3]string{{"if-pre-up.d", "pre-up", "start"}, {"if-up.d", "post-up", "start"},
		{"if-down.d", "pre-down", "stop"}, {"if-post-down.d", "post-down", "stop"}} {
		hook := h[0]
		// what ifup -a / ifdown -a run first: the --all meta call, which must be a no-op
		out, err := r.try([]string{"IFACE=--all", "LOGICAL=--all", "ADDRFAM=meta", "METHOD=none", "MODE=" + h[2],
			"PHASE=" + h[1]}, "/etc/network/"+hook+"/linkagg")
		if err != nil {
			t.Errorf("/etc/network/%s/linkagg with IFACE=--all ADDRFAM=meta: %v\n%s", hook, err, out)
		}
	}
	if r.exists("/run/linkagg") {
		t.Errorf("the --all meta call made /run/linkagg")
	}
	if man := r.run("sh", "-c", "zcat /usr/share/man/man8/linkagg.8.gz | head -n1"); !strings.HasPrefix(man, ".TH LINKAGG 8") {
		t.Errorf("linkagg.8 starts with %q", man)
	}

	// an upgrade (here: the same package again) keeps the admin's edit of a conffile
	r.run("sh", "-c", "echo '# local edit' >> /etc/iproute2/rt_protos.d/linkagg.conf")
	r.run("dpkg", "-i", "/tmp/x.deb")
	if out := r.run("cat", "/etc/iproute2/rt_protos.d/linkagg.conf"); !strings.Contains(out, "# local edit") {
		t.Errorf("reinstalling lost the admin's edit of rt_protos.d/linkagg.conf:\n%s", out)
	}

	// remove: the programs and hooks go, the conffiles stay until purge
	r.run("dpkg", "-r", debPkg)
	if st := strings.TrimSpace(r.run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", debPkg)); st != "rc" {
		t.Errorf("after dpkg -r the status is %q, want rc", st)
	}
	for p := range debFiles {
		if want := debHas(debConffiles, p); r.exists(p) != want {
			t.Errorf("after dpkg -r: %s exists=%v, want %v", p, !want, want)
		}
	}

	// purge: nothing of ours is left
	r.run("mkdir", "-p", "/run/linkagg") // as a hook would leave it
	r.run("dpkg", "-P", debPkg)
	if out, err := r.try(nil, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", debPkg); err == nil && strings.TrimSpace(out) != "" {
		t.Errorf("after dpkg -P the package is still known: %q", out)
	}
	for _, p := range append(list, "/run/linkagg") {
		if (debHas(debOwnDirs, p) || debFiles[p] != "" || p == "/run/linkagg") && r.exists(p) {
			t.Errorf("after dpkg -P %s is still there", p)
		}
	}

	// and the machine's own root never saw any of it
	for p, had := range hostHad {
		if _, err := os.Lstat(p); (err == nil) != had {
			t.Errorf("the host's %s changed (existed before: %v)", p, had)
		}
	}
}

// TestPackageNostrip: DEB_BUILD_OPTIONS=nostrip keeps the symbols and debug information in the packaged
// binaries, and then there is no -dbgsym package.
func TestPackageNostrip(t *testing.T) {
	needPackaging(t)
	out := t.TempDir()
	deb := makeDeb(t, "nocheck nostrip", out)
	if dbg, _ := filepath.Glob(filepath.Join(out, debPkg+"-dbgsym_*")); len(dbg) != 0 {
		t.Errorf("nostrip made %v", dbg)
	}
	dir := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, dir)
	for _, b := range []string{"usr/sbin/linkagg", "usr/lib/linkagg/linkagg-ifupdown", "usr/lib/linkagg/linkagg-networkd"} {
		if out := run(t, "readelf", "-S", filepath.Join(dir, b)); !regexp.MustCompile(`\s\.symtab\s`).MatchString(out) || !strings.Contains(out, ".debug_info") {
			t.Errorf("with nostrip %s has no symbol table or debug info:\n%s", b, out)
		}
	}
}

func debHas(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
