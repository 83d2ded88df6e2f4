package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/apply"
)

// transparentKernel says what this kernel lacks for mptcp-transparent (nil: it can attach the program),
// asked with a private bpffs so that only the kernel's own verdict is left.
func transparentKernel(t *testing.T) error {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mounting a bpffs: %v", err)
	}
	defer unix.Unmount(dir, 0)
	err := apply.TransparentMissing(dir)
	if err != nil {
		err = fmt.Errorf("%s", strings.ReplaceAll(err.Error(), dir, "BPFFS"))
	}
	return err
}

// hereOrInVM tells whether the calling test (named name) runs here: when this kernel can run
// mptcp-transparent's program. When it cannot (before 6.6, or a kernel that refuses BPF trampolines, as the
// Firecracker kernel of our lab does), it runs this test binary with -test.run for the test in the test VM
// (tests/vm/run.sh: Debian's 6.12 kernel over this machine's root file system), fails with the VM's
// output if it fails there, and returns false. Inside the VM a kernel that cannot is a failure.
func hereOrInVM(t *testing.T, name string) bool {
	t.Helper()
	needRoot(t)
	err := transparentKernel(t)
	if err == nil {
		return true
	}
	if os.Getenv("LINKAGG_IN_VM") != "" {
		t.Fatalf("the test VM's kernel lacks what mptcp-transparent needs: %v", err)
	}
	t.Logf("this kernel: %v; running %s in the test VM", err, name)
	runInVM(t, "^"+name+"$")
	return false
}

// runInVM runs this test binary with -test.run pattern in the test VM, with the binaries of binDir copied
// next to it (the VM builds nothing), and logs the test's own lines.
func runInVM(t *testing.T, pattern string) {
	t.Helper()
	work := os.Getenv("LGVM_WORK")
	if work == "" {
		work = "/var/tmp/linkagg-vm"
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(work, "run-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	copyFile := func(src, dst string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(os.Args[0], filepath.Join(dir, "tests.test"))
	bins := filepath.Join(dir, "bin")
	if err := os.Mkdir(bins, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(binDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		copyFile(filepath.Join(binDir, e.Name()), filepath.Join(bins, e.Name()))
	}
	wd, _ := os.Getwd()
	script := fmt.Sprintf("cd %s && LINKAGG_IN_VM=1 CI=true LINKAGG_TEST_BINDIR=%s %s/tests.test -test.run '%s' -test.v -test.count=1 -test.timeout 20m\n", wd, bins, dir, pattern)
	if err := os.WriteFile(filepath.Join(dir, "run.sh"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(repoRoot, "tests/vm/run.sh"), filepath.Join(dir, "run.sh"))
	cmd.Env = append(os.Environ(), "LGVM_WORK="+work)
	if os.Getenv("LGVM_MEM") == "" {
		cmd.Env = append(cmd.Env, "LGVM_MEM=2048")
	}
	if os.Getenv("LGVM_SMP") == "" {
		cmd.Env = append(cmd.Env, "LGVM_SMP=2")
	}
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("the VM ran for %.1fs", time.Since(t0).Seconds())
	if err != nil || !strings.Contains(string(out), "\nPASS") {
		t.Fatalf("in the VM: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if s := strings.TrimSpace(l); strings.HasPrefix(s, "--- ") || strings.Contains(l, "_test.go:") {
			t.Log("vm: " + s)
		}
	}
}
