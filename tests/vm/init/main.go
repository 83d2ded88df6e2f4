// Command init is PID 1 of the test VM (tests/vm/run.sh): a kernel other than the machine's boots with the
// machine's own root file system, read-only over 9p, under a tmpfs overlay, so the tests see the same tools
// and write nowhere outside the VM. It loads the modules the 9p/overlay root needs from the initramfs,
// switches to that root, runs the script named by lgvm.script= and powers off, printing its exit status.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	code := run()
	fmt.Printf("\nLGVM-EXIT %d\n", code)
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func must(what string, err error) {
	if err != nil {
		fmt.Printf("lgvm init: %s: %v\n", what, err)
		unix.Sync()
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
}

func mount(src, dst, fstype string, flags uintptr, data string) {
	must("mkdir "+dst, os.MkdirAll(dst, 0o755))
	must(fmt.Sprintf("mount %s on %s", fstype, dst), unix.Mount(src, dst, fstype, flags, data))
}

func run() int {
	mount("proc", "/proc", "proc", 0, "")
	mount("sys", "/sys", "sysfs", 0, "")
	mount("dev", "/dev", "devtmpfs", 0, "")
	// no udev here: the node of the tun module (misc 10:200), whose first open loads it
	must("mkdir /dev/net", os.MkdirAll("/dev/net", 0o755))
	if err := unix.Mknod("/dev/net/tun", unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil && err != unix.EEXIST {
		must("mknod /dev/net/tun", err)
	}
	// the modules of the 9p root and the overlay, in dependency order (decompressed by the kernel)
	for _, m := range []string{"netfs", "9pnet", "9pnet_virtio", "9p", "overlay"} {
		f, err := os.Open("/modules/" + m + ".ko.xz")
		must("module "+m, err)
		err = unix.FinitModule(int(f.Fd()), "", unix.MODULE_INIT_COMPRESSED_FILE)
		f.Close()
		if err != unix.EEXIST {
			must("loading module "+m, err)
		}
	}
	opts := "trans=virtio,version=9p2000.L,msize=524288,cache=loose"
	mount("hostroot", "/lower", "9p", unix.MS_RDONLY, opts)
	mount("tmpfs", "/rw", "tmpfs", 0, "mode=0755")
	must("mkdir", os.MkdirAll("/rw/upper", 0o755))
	must("mkdir", os.MkdirAll("/rw/work", 0o755))
	mount("overlay", "/newroot", "overlay", 0, "lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work")
	// the work folder (test binaries, kernel modules, results) read-write at the same path as outside
	work := param("lgvm.work")
	mount("work", "/newroot"+work, "9p", 0, opts)
	for _, d := range []string{"proc", "sys", "dev"} {
		must("move "+d, unix.Mount("/"+d, "/newroot/"+d, "", unix.MS_MOVE, ""))
	}
	// no tmpfs over /tmp: the overlay already makes it writable, and a checkout under the machine's /tmp
	// (CI clones there) must stay visible to the script
	mount("tmpfs", "/newroot/run", "tmpfs", 0, "mode=0755")
	mount("cgroup2", "/newroot/sys/fs/cgroup", "cgroup2", 0, "")
	mount("bpf", "/newroot/sys/fs/bpf", "bpf", 0, "mode=0700")
	must("mkdir", os.MkdirAll("/newroot/lib/modules", 0o755))
	must("bind modules", unix.Mount("/newroot"+work+"/modules", "/newroot/lib/modules", "", unix.MS_BIND, ""))
	must("chdir", os.Chdir("/newroot"))
	must("switch root", unix.Mount(".", "/", "", unix.MS_MOVE, ""))
	must("chroot", unix.Chroot("."))
	must("chdir", os.Chdir("/"))
	os.Setenv("PATH", "/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	os.Setenv("HOME", "/root")
	cmd := exec.Command("/bin/bash", param("lgvm.script"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stdout
	cmd.Dir = filepath.Dir(param("lgvm.script"))
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Println("lgvm init:", err)
		return 125
	}
	return 0
}

func param(k string) string {
	b, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, k+"="); ok {
			return v
		}
	}
	return ""
}
