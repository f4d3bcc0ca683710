package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// relock run and its guard must never signal a process by a number it
// may no longer have: once reaped, a number may be given to an unrelated
// process, which would get the SIGKILL. Pid reuse is forced here with /proc/sys/kernel/ns_last_pid
// (root only), as a busy machine does by itself after a wrap-around.

// takePid starts an innocent `sleep 60`, in a process group of its own, as
// process pid (which must be free); it skips the test where the next pid
// cannot be chosen.
func takePid(t *testing.T, pid int) *exec.Cmd {
	t.Helper()
	for try := 0; try < 500; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0); err != nil {
			t.Skipf("cannot choose the next pid: %v", err)
		}
		cmd := exec.Command("sleep", "60")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if cmd.Process.Pid == pid {
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			t.Cleanup(func() { cmd.Process.Kill(); <-done })
			return cmd
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
	t.Skipf("could not start a process as pid %d", pid)
	return nil
}

func waitReaped(t *testing.T, pid int, what string) {
	t.Helper()
	eventually(t, 10*time.Second, func() bool { return processGone(pid) }, "%s (pid %d) reaped", what, pid)
}

// TestRun_NeverKillsAReusedPidOfAProcessTheCommandStarted: when the lock is
// lost, relock run remembers the command's descendants (remember) and,
// once the command exits, SIGKILLs every one of them by number. A
// descendant that ended during --kill-grace (here the `sleep` the SIGTERM
// stopped, reaped by its shell) has a number free for reuse by then:
// whatever process got it is killed.
func TestRun_NeverKillsAReusedPidOfAProcessTheCommandStarted(t *testing.T) {
	srv := startServer(t)
	r := startGatedRun(t, srv, []string{"--kill-grace", "30s", "job:reuse"},
		`sleep 1000 & echo $! > "$F"; trap 'echo term' TERM; wait; while [ ! -e "$G" ]; do sleep 0.05; done`)
	cmd, done, stderr, gate, child := r.cmd, r.done, r.stderr, r.gate, r.pid
	if n, err := srv.client(t).Do(ctxFor(t, 5*time.Second), "FORCEUNLOCK", "job:reuse").Int(); err != nil || n != 1 {
		t.Fatalf("FORCEUNLOCK = %d, %v", n, err)
	}
	// SIGTERM ends the sleep; its shell reaps it and stays (the trap).
	waitReaped(t, child, "the command's sleep")
	innocent := takePid(t, child)
	os.WriteFile(gate, nil, 0o644) // the command exits now
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("relock run did not exit; stderr:\n%s", stderr)
	}
	if code := cmd.ProcessState.ExitCode(); code != 75 {
		t.Fatalf("exit status %d, want 75; stderr:\n%s", code, stderr)
	}
	time.Sleep(200 * time.Millisecond)
	if !alive(innocent.Process.Pid) {
		t.Errorf("relock run SIGKILLed pid %d, an unrelated process that got the number of the command's "+
			"sleep after that one ended during --kill-grace", innocent.Process.Pid)
	}
}

// TestRun_TheGuardNeverKillsAReusedPidOfTheCommand: the guard is told
// that relock run ended as it should (guard.done) only when runUnder
// returns, after the command was reaped and after the locks' UNLOCKs
// (up to 5 s each). If relock run dies in that window, the guard kills the
// command's pid (and process group) — a number free for reuse since the
// command was reaped.
func TestRun_TheGuardNeverKillsAReusedPidOfTheCommand(t *testing.T) {
	srv := startServer(t)
	r := startGatedRun(t, srv, []string{"job:guard"}, `echo $$ > "$F"; while [ ! -e "$G" ]; do sleep 0.05; done`)
	cmd, done, gate, pid := r.cmd, r.done, r.gate, r.pid
	eventually(t, 10*time.Second, func() bool { return guardOf(pid) }, "a guard of pid %d runs", pid)
	// The server stops answering: relock run's UNLOCK, after the command
	// exits, waits (releaseLock: up to 5 s).
	srv.cmd.Process.Signal(syscall.SIGSTOP)
	t.Cleanup(func() { srv.cmd.Process.Signal(syscall.SIGCONT) })
	os.WriteFile(gate, nil, 0o644) // the command exits, relock run reaps it
	waitReaped(t, pid, "the command")
	innocent := takePid(t, pid)
	cmd.Process.Kill() // relock run dies while it releases the lock
	<-done
	srv.cmd.Process.Signal(syscall.SIGCONT)
	// The guard reads its pipe and acts, then exits: once no guard of pid
	// is left, whatever it was going to do is done.
	eventually(t, 10*time.Second, func() bool { return !guardOf(pid) }, "the guard of pid %d exited", pid)
	if !alive(innocent.Process.Pid) {
		t.Errorf("the guard SIGKILLed pid %d, an unrelated process that got the number of the command, "+
			"which had exited and been reaped before relock run died", innocent.Process.Pid)
	}
}

// guardOf reports whether a relock run-guard of the command pid runs (a
// process that has exited has no command line).
func guardOf(pid int) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i := 0; i+2 < len(args); i++ {
			if args[i] == "run-guard" && args[i+1] == "--pid" && args[i+2] == strconv.Itoa(pid) {
				return true
			}
		}
	}
	return false
}

// gatedRun is a relock run whose command (a sh script) writes a pid to
// $F and waits for the file $G (gate) before it ends.
type gatedRun struct {
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *syncBuffer
	gate   string
	pid    int // what the script wrote to $F
}

// startGatedRun starts relock run args -- sh -c script and waits for the
// pid the script writes.
func startGatedRun(t *testing.T, srv *server, args []string, script string) *gatedRun {
	t.Helper()
	dir := t.TempDir()
	file, gate := filepath.Join(dir, "pid"), filepath.Join(dir, "gate")
	argv := append(append([]string{"run", "--addr", srv.Addr}, args...), "--", "sh", "-c", script)
	cmd := exec.Command(relockBin, argv...)
	cmd.Env = append(os.Environ(), "F="+file, "G="+gate, "GORACE=atexit_sleep_ms=0")
	r := &gatedRun{cmd: cmd, done: make(chan struct{}), stderr: &syncBuffer{}, gate: gate}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-r.done })
	eventually(t, 20*time.Second, func() bool { return len(readLines(t, file)) > 0 }, "command started")
	pid, err := strconv.Atoi(readLines(t, file)[0])
	if err != nil {
		t.Fatal(err)
	}
	r.pid = pid
	return r
}
