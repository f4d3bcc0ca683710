package integration

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// `relock run --help` says of --wait "Default: wait as
// long as it takes", but without --wait relock run sends LOCK without
// WAIT, so a server's --default-wait applies and the run gives up with
// --conflict-exit-code ("lock ... is busy") although it was told nothing
// about waiting.
func TestRun_WithoutWaitWaitsAsLongAsItTakesDespiteTheServersDefaultWait(t *testing.T) {
	srv := startServer(t, "--default-wait", "300ms")
	holder := srv.client(t)
	ctx := ctxFor(t, 30*time.Second)
	key, err := holder.Do(ctx, "LOCK", "job:dw").Text()
	if err != nil {
		t.Fatal(err)
	}
	// Release the lock after 1.5 s: a run that waits as long as it takes
	// then gets it and runs its command.
	time.AfterFunc(1500*time.Millisecond, func() { holder.Do(ctx, "UNLOCK", "job:dw", key) })
	file := filepath.Join(t.TempDir(), "env")
	r := startRun(t, srv, "env", []string{"RELOCK_IT_FILE=" + file}, "job:dw")
	if code := r.exitCode(t, 20*time.Second); code != 0 {
		t.Fatalf("relock run without --wait exited %d (want 0: it waits as long as it takes); stderr:\n%s", code, r.stderr)
	}
	if lines := readLines(t, file); len(lines) == 0 {
		t.Fatal("the command did not run")
	}
}

// `relock run` promises to run COMMAND "only while holding
// the lock", but the command runs in a process group of its own and
// nothing ties its life to relock's: when relock run itself dies without a
// chance to clean up (SIGKILL, the OOM killer), its connection closes, the
// server releases the lock at once — and the command runs on, unlocked,
// while the next `relock run` of NAME starts its own command.
func TestRun_TheCommandDoesNotOutliveAKilledRelockRun(t *testing.T) {
	srv := startServer(t)
	file := filepath.Join(t.TempDir(), "hang")
	r := startRun(t, srv, "hang", []string{"RELOCK_IT_FILE=" + file}, "job:orphan")
	eventually(t, 20*time.Second, func() bool { return len(readLines(t, file)) > 0 }, "child started")
	pid, err := strconv.Atoi(readLines(t, file)[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
	r.cmd.Process.Kill() // relock run gets SIGKILL
	// (Not <-r.done: that also waits for the command, which holds the
	// stderr pipe.)
	relockPid := r.cmd.Process.Pid
	eventually(t, 5*time.Second, func() bool { return processGone(relockPid) }, "relock run gone")
	c := srv.client(t)
	eventually(t, 5*time.Second, func() bool {
		n, _ := c.Do(ctxFor(t, 5*time.Second), "DBSIZE").Int()
		return n == 0
	}, "the server released job:orphan")
	// The lock is free for anyone now; its command must not run any more
	// (the guard kills it).
	eventually(t, 5*time.Second, func() bool { return !alive(pid) },
		"relock run was killed and the server released job:orphan, but its command (pid %d) still runs without the lock", pid)
}

// alive reports whether pid runs (exists and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// openPTY opens a pseudo-terminal pair (no cgo, no dependency).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		m.Close()
		t.Skipf("unlockpt: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		m.Close()
		t.Skipf("ptsname: %v", e)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	go io.Copy(io.Discard, m) // drain what relock and the command print
	return m, s
}

// run from a terminal's foreground (the usual way to run
// a command by hand), relock run leaves the command in its own process
// group and, when the lock is lost, signals only the command's first
// process — `relock run --help` says "COMMAND (its whole process group)
// gets SIGTERM at once and SIGKILL after --kill-grace". A script's
// children (here a `sleep` started by sh) run on after relock run exited
// 75 ("the command was stopped"), without the lock.
func TestRun_InATerminalALossStopsEveryProcessOfTheCommand(t *testing.T) {
	srv := startServer(t)
	_, tty := openPTY(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "grandchild")
	rcFile := filepath.Join(dir, "rc")
	// The terminal's session is a shell's (as when typed at a prompt): it
	// runs relock run in the foreground and stays after it exits.
	cmd := exec.Command("sh", "-c", `"$RELOCK_IT_BIN_" run --addr "$RELOCK_IT_ADDR" --kill-grace 300ms job:tty -- `+
		`sh -c 'sleep 30 & echo $! > "$RELOCK_IT_FILE"; wait'; echo $? > "$RELOCK_IT_RC"; sleep 20`)
	cmd.Env = append(os.Environ(), "RELOCK_IT_BIN_="+relockBin, "RELOCK_IT_ADDR="+srv.Addr,
		"RELOCK_IT_FILE="+file, "RELOCK_IT_RC="+rcFile, "GORACE=atexit_sleep_ms=0")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
	eventually(t, 20*time.Second, func() bool { return len(readLines(t, file)) > 0 }, "command started")
	gc, err := strconv.Atoi(readLines(t, file)[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(gc, syscall.SIGKILL) })
	if n, err := srv.client(t).Do(ctxFor(t, 5*time.Second), "FORCEUNLOCK", "job:tty").Int(); err != nil || n != 1 {
		t.Fatalf("FORCEUNLOCK = %d, %v", n, err)
	}
	eventually(t, 10*time.Second, func() bool { return len(readLines(t, rcFile)) > 0 }, "relock run exited")
	if code := readLines(t, rcFile)[0]; code != "75" {
		t.Fatalf("exit status %s, want 75", code)
	}
	eventually(t, 5*time.Second, func() bool { return !alive(gc) },
		"relock run exited 75 (the command was stopped) but the command's child %d still runs, without the lock", gc)
}
