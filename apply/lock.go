package apply

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/linkagg/linkagg-hooks/internal/rundir"
)

// DefaultLockTimeout is how long a run waits for another one; the hooks' deadline (20 s) bounds it further.
const DefaultLockTimeout = 15 * time.Second

// lock makes this process the only linkagg run of the network namespace and of the run dir, in two layers:
//
//   - an abstract unix socket named after the run dir: it lives in the network namespace (our kernel state
//     is per namespace too), has no file that `rm` could delete while it is held, and the kernel releases it
//     when the process dies, however it dies;
//   - flock on RUNDIR/lock, for runs in other namespaces that share the run dir and for admins (`flock
//     /run/linkagg/lock CMD` pauses every hook). The file is opened with O_NOFOLLOW inside the checked dir.
//
// Both waits share one deadline; a timeout names the holder recorded in the lock file.
func lock(dir *rundir.Dir, timeout time.Duration) (func(), error) {
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	deadline := time.Now().Add(timeout)
	path := filepath.Join(dir.Path, "lock")
	timedOut := func() error {
		who := ""
		if b, err := dir.Read("lock"); err == nil {
			if s := strings.TrimSpace(string(b)); s != "" {
				who = " (" + s + ")"
			}
		}
		return fmt.Errorf("another linkagg run holds %s for more than %s%s", path, timeout, who)
	}

	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock socket: %w", err)
	}
	addr := &unix.SockaddrUnix{Name: "@" + lockName(dir.Path)}
	for {
		err := unix.Bind(sock, addr)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			unix.Close(sock)
			return nil, fmt.Errorf("lock socket %s: %w", addr.Name, err)
		}
		if time.Now().After(deadline) {
			unix.Close(sock)
			return nil, timedOut()
		}
		time.Sleep(20 * time.Millisecond)
	}

	f, err := dir.OpenFile("lock", unix.O_RDWR|unix.O_CREAT, 0o600)
	if err != nil {
		unix.Close(sock)
		return nil, fmt.Errorf("opening lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			unix.Close(sock)
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			unix.Close(sock)
			return nil, timedOut()
		}
		time.Sleep(20 * time.Millisecond)
	}
	// who holds it, for the message of a run that times out
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte("pid "+strconv.Itoa(os.Getpid())+" "+lockHolderName()+"\n"), 0)
	}
	return func() {
		_ = f.Truncate(0)
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
		unix.Close(sock)
	}, nil
}

// LockHolder is who holds the lock of runDir as the holder wrote it ("pid 812 linkagg-ifupdown"), or "".
// It reads without locking: for the message of a run that gave up waiting.
func LockHolder(runDir string) string {
	dir, err := rundir.OpenExisting(runDir)
	if err != nil {
		return ""
	}
	defer dir.Close()
	b, err := dir.Read("lock")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// lockName is the abstract socket name of a run dir (at most 107 bytes).
func lockName(dir string) string {
	n := "linkagg-lock:" + dir
	if len(n) > 100 {
		h := sha256.Sum256([]byte(dir))
		n = "linkagg-lock:" + hex.EncodeToString(h[:16])
	}
	return n
}

func lockHolderName() string {
	b, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		return filepath.Base(os.Args[0])
	}
	parts := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	parts[0] = filepath.Base(parts[0])
	s := strings.Join(parts, " ")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
