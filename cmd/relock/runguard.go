package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

// relock run's command must never run without the lock. While relock
// run lives it stops the command when the lock is lost; a guard process
// covers relock run's own death, SIGKILL and the OOM killer included,
// after which the server releases the lock at once. The guard reads a
// pipe whose write end only relock run holds: a byte means relock run
// ended as it should (the guard exits), the end of the pipe alone means
// it died, and the guard kills the command and everything it started.
// The guard is in a process group of its own and ignores the signals a
// terminal or a supervisor sends to relock run's group, so that what
// kills relock run does not kill it too.

// runGuardCmd is the guard (a hidden command: relock run starts it).
type runGuardCmd struct {
	PID   int  `required:"" help:"The command's process."`
	Group bool `help:"The command leads a process group of its own: kill the group as well."`
}

// Run waits for relock run's end; if it died, it kills the command.
func (g *runGuardCmd) Run() error {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGPIPE)
	var b [1]byte
	if n, _ := os.Stdin.Read(b[:]); n == 1 {
		return nil // relock run ended as it should
	}
	killCommand(g.PID, g.Group)
	return nil
}

// guard is a started guard process: the write end of its pipe.
type guard struct {
	w    *os.File
	once sync.Once
}

// startGuard starts the guard of the command pid (group: it leads its
// own process group).
func startGuard(pid int, group bool) (*guard, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("relock's own path: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	args := []string{"run-guard", "--pid", strconv.Itoa(pid)}
	if group {
		args = append(args, "--group")
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdin = r // the write end stays with relock run alone (close-on-exec)
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, err
	}
	return &guard{w: w}, nil
}

// done tells the guard relock run ends as it should. It does not wait
// for the guard to go (a process that may still be starting): the byte
// is in the pipe before its end, so the guard, whenever it reads, exits
// quietly.
func (g *guard) done() {
	if g == nil {
		return
	}
	g.once.Do(func() {
		g.w.Write([]byte{1})
		g.w.Close()
	})
}

// killCommand kills the command pid and every process it started (group:
// its process group too). The tree is frozen first (SIGSTOP), until no
// new process appears in it, so that none forks away while it is killed.
func killCommand(pid int, group bool) {
	if group {
		syscall.Kill(-pid, syscall.SIGSTOP)
	}
	tree := freezeTree(pid)
	if group {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	for _, p := range tree {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// signalTree sends sig to pid and every process it started.
func signalTree(pid int, sig syscall.Signal) {
	if sig == syscall.SIGKILL {
		killCommand(pid, false)
		return
	}
	for _, p := range append([]int{pid}, descendants(pid)...) {
		syscall.Kill(p, sig)
	}
}

// freezeTree stops pid and its descendants, looking again until it finds
// no new one (at most 20 times), and returns them.
func freezeTree(pid int) []int {
	seen := map[int]bool{pid: true}
	tree := []int{pid}
	syscall.Kill(pid, syscall.SIGSTOP)
	for range 20 {
		grew := false
		for _, p := range descendants(pid) {
			if !seen[p] {
				seen[p] = true
				tree = append(tree, p)
				syscall.Kill(p, syscall.SIGSTOP)
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	return tree
}
