package engine

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The watcher's pid file makes every planner count carrier; a stale file (dead process) must not.
func TestWatcherRunning(t *testing.T) {
	dir := t.TempDir()
	e := &Engine{}
	e.Apply.RunDir = dir
	if WatcherRunning(dir) {
		t.Fatal("no pid file, yet a watcher is said to run")
	}
	release, err := e.ClaimWatcher()
	if err != nil {
		t.Fatal(err)
	}
	if !WatcherRunning(dir) {
		t.Error("after ClaimWatcher the watcher is not seen")
	}
	if _, err := e.ClaimWatcher(); err == nil {
		t.Error("a second watcher on the same run dir was allowed")
	}
	release()
	if WatcherRunning(dir) {
		t.Error("after release a watcher is still seen")
	}
	// a pid that does not exist (beyond pid_max) is a stale file
	if err := os.WriteFile(filepath.Join(dir, watchPIDFile), []byte(strconv.Itoa(1<<30)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if WatcherRunning(dir) {
		t.Error("a stale pid file counts as a running watcher")
	}
	if _, err := e.ClaimWatcher(); err != nil {
		t.Errorf("a stale pid file blocks a new watcher: %v", err)
	}
}
