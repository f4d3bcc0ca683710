package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/relock/relock/clientlib"
)

// Exit statuses of `relock run` besides the command's own and
// --conflict-exit-code (sysexits.h values, as flock(1) uses).
const (
	exitRunUsage       = 64  // EX_USAGE: bad arguments
	exitRunUnavailable = 69  // EX_UNAVAILABLE: no lock for another reason than a conflict
	exitRunLost        = 75  // EX_TEMPFAIL: the lock was lost and the command stopped
	exitRunCannotExec  = 126 // the command could not be started
	exitRunNotFound    = 127 // the command was not found
)

// runCmd is `relock run`.
type runCmd struct {
	clientFlags `embed:""`

	Wait             time.Duration  `short:"w" xor:"wait" placeholder:"D" help:"Give up when the lock is not granted within D (exit with --conflict-exit-code). Default: wait as long as it takes."`
	Nonblock         bool           `short:"n" xor:"wait" help:"Give up at once when the lock is busy (like flock -n)."`
	TTL              time.Duration  `name:"ttl" default:"15s" placeholder:"D" help:"TTL of the hold, renewed every third of it: a lost lock is noticed within D/3 (at once if the connection drops)."`
	Size             int            `default:"1" placeholder:"N" help:"Run while holding one of the N slots of a semaphore lock."`
	Shared           bool           `help:"Run under a shared hold (a reader): several relock run --shared of NAME run at once, a run without it waits for them (and they for it). Not with --size."`
	LockDelay        *time.Duration `name:"lock-delay" placeholder:"D" help:"Lock-delay of the hold (LOCKDELAY): if it ends involuntarily (relock killed, connection lost, TTL ran out) nobody gets the lock for D more (0: none; default: the server's --lock-delay; at most 60s)."`
	ConflictExitCode int            `default:"1" placeholder:"N" help:"Exit status when the lock is not granted (--nonblock, --wait)."`
	KillGrace        time.Duration  `default:"5s" placeholder:"D" help:"When the lock is lost the command gets SIGTERM at once and SIGKILL after D."`

	Locks   []string `name:"lock" short:"l" sep:"none" placeholder:"NAME" help:"Also hold the lock NAME (repeatable): all the names are taken at once or none (MLOCK), and the command runs while holding all of them."`
	Name    string   `arg:"" help:"Lock name."`
	Command []string `arg:"" passthrough:"" placeholder:"-- COMMAND [ARG...]" help:"Command to run while holding the lock."`
}

// Help is shown by `relock run --help`.
func (r *runCmd) Help() string {
	return `Runs COMMAND only while holding the lock NAME, like flock(1), etcdctl lock
and consul lock. COMMAND gets RELOCK_NAME, RELOCK_KEY (the hold's key) and
RELOCK_FENCE (its fencing token) in its environment. SIGINT, SIGTERM and
SIGHUP are forwarded to it. The lock is released when it exits.

With --lock NAME2 (repeatable) the command runs while holding NAME and
every NAME2: all of them are taken at one instant, or none (MLOCK), and
while waiting none of them is held, so two runs that list the same names
in different orders never deadlock. RELOCK_NAME, RELOCK_KEY and
RELOCK_FENCE are then NAME's; RELOCK_NAMES, RELOCK_KEYS and RELOCK_FENCES
list every name's, space-separated, in the order NAME, then the --lock
names. (They are set for a single name too.) Losing any of the locks
stops the command.

With --shared the command runs under a shared hold: any number of
relock run --shared NAME run at once, while a relock run NAME without it
(a writer) waits until they are done, and they wait for it.

If the lock is lost (server gone, TTL not renewable, FORCEUNLOCK), COMMAND
(its whole process group) gets SIGTERM at once and SIGKILL after
--kill-grace, and relock exits 75.

Exit status: COMMAND's (128+N if killed by signal N); --conflict-exit-code
when the lock was not granted; 75 when the lock was lost; 69 when the lock
could not be taken for another reason (server unreachable, error reply);
126 or 127 when COMMAND could not be started; 128+N when interrupted by
signal N while waiting; 64 when the arguments are wrong (nothing after
--, --ttl not positive, --size below 1, …); 2 for what the command line
parser itself refuses (no NAME or no COMMAND at all, an unknown flag).`
}

// Run takes the lock, runs the command under it and returns its exit status
// as an *exitError.
func (r *runCmd) Run() error {
	argv := r.Command
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	switch {
	case len(argv) == 0:
		return &exitError{exitRunUsage, errors.New("run: no command given (relock run NAME -- COMMAND [ARG...])")}
	case r.TTL <= 0:
		return &exitError{exitRunUsage, errors.New("run: --ttl must be positive")}
	case r.Size < 1:
		return &exitError{exitRunUsage, errors.New("run: --size must be at least 1")}
	case r.Shared && r.Size != 1:
		return &exitError{exitRunUsage, errors.New("run: --shared takes no --size (a shared lock has one writer slot)")}
	case len(r.Locks) > 0 && r.Size != 1:
		return &exitError{exitRunUsage, errors.New("run: --size takes a single lock name (several names are size-1 locks)")}
	case r.Wait < 0:
		return &exitError{exitRunUsage, errors.New("run: --wait must not be negative")}
	case r.LockDelay != nil && (*r.LockDelay < 0 || *r.LockDelay > maxLockDelay):
		return &exitError{exitRunUsage, fmt.Errorf("run: --lock-delay must be between 0 and 60s (got %v)", *r.LockDelay)}
	}
	c, err := r.newClient()
	if err != nil {
		return &exitError{exitRunUsage, err}
	}
	defer c.Close()

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	names := r.names()
	if err := checkNames(names); err != nil {
		return &exitError{exitRunUsage, err}
	}
	locks, err := r.acquire(c, names, sigs)
	if err != nil {
		return err
	}
	return r.runUnder(locks, argv, sigs)
}

// names are the lock names of the run: NAME, then the --lock names.
func (r *runCmd) names() []string {
	return append([]string{r.Name}, r.Locks...)
}

// checkNames refuses an empty or repeated name.
func checkNames(names []string) error {
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		switch {
		case name == "":
			return errors.New("run: empty lock name")
		case seen[name]:
			return fmt.Errorf("run: lock %q is named twice", name)
		}
		seen[name] = true
	}
	return nil
}

// acquire takes the locks (all of them or none); a signal aborts the wait.
func (r *runCmd) acquire(c *clientlib.Client, names []string, sigs <-chan os.Signal) ([]*clientlib.Lock, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := []clientlib.LockOption{clientlib.TTL(r.TTL), clientlib.Size(r.Size)}
	if r.Shared {
		opts = append(opts, clientlib.Shared())
	}
	// No --wait: as long as it takes, whatever the server's
	// --default-wait (Wait(0) sends WAIT 0, which overrides it).
	opts = append(opts, clientlib.Wait(r.Wait))
	if r.LockDelay != nil {
		opts = append(opts, clientlib.LockDelay(*r.LockDelay))
	}
	type result struct {
		locks []*clientlib.Lock
		err   error
	}
	done := make(chan result, 1)
	go func() {
		var res result
		var l *clientlib.Lock
		switch {
		case len(names) > 1 && r.Nonblock:
			res.locks, res.err = c.TryLockMany(ctx, names, opts...)
		case len(names) > 1:
			res.locks, res.err = c.LockMany(ctx, names, opts...)
		case r.Nonblock:
			l, res.err = c.TryLock(ctx, names[0], opts...)
		default:
			l, res.err = c.Lock(ctx, names[0], opts...)
		}
		if l != nil {
			res.locks = []*clientlib.Lock{l}
		}
		done <- res
	}()
	what := fmt.Sprintf("lock %q", names[0])
	if len(names) > 1 {
		what = fmt.Sprintf("locks %q", names)
	}
	var res result
	select {
	case res = <-done:
	case sig := <-sigs:
		cancel()
		res = <-done
		for _, l := range res.locks {
			l.Unlock(context.Background())
		}
		return nil, &exitError{128 + signalNumber(sig), fmt.Errorf("run: interrupted (%v) while waiting for %s", sig, what)}
	}
	switch {
	case res.err == nil:
		return res.locks, nil
	case errors.Is(res.err, clientlib.ErrWaitTimeout):
		why := "is busy"
		if len(names) > 1 {
			why = "are not all free"
		}
		if r.Wait > 0 {
			why = "was not granted within " + r.Wait.String()
			if len(names) > 1 {
				why = "were not granted within " + r.Wait.String()
			}
		}
		return nil, &exitError{r.ConflictExitCode, fmt.Errorf("run: %s %s", what, why)}
	default:
		return nil, &exitError{exitRunUnavailable, fmt.Errorf("run: cannot take %s: %w", what, res.err)}
	}
}

// runEnv is the environment of the command run while holding locks (the
// first is NAME's).
func runEnv(locks []*clientlib.Lock) []string {
	names := make([]string, len(locks))
	keys := make([]string, len(locks))
	fences := make([]string, len(locks))
	for i, l := range locks {
		names[i], keys[i], fences[i] = l.Name(), l.Key(), strconv.FormatUint(l.Fence(), 10)
	}
	return append(os.Environ(),
		"RELOCK_NAME="+names[0],
		"RELOCK_KEY="+keys[0],
		"RELOCK_FENCE="+fences[0],
		"RELOCK_NAMES="+strings.Join(names, " "),
		"RELOCK_KEYS="+strings.Join(keys, " "),
		"RELOCK_FENCES="+strings.Join(fences, " "),
	)
}

// anyLost returns a channel closed when one of locks is lost (not
// released), and a function that stops watching.
func anyLost(locks []*clientlib.Lock) (<-chan struct{}, func()) {
	lost := make(chan struct{})
	var once sync.Once
	stops := make([]func() bool, len(locks))
	for i, l := range locks {
		stops[i] = context.AfterFunc(l.Context(), func() {
			if l.Err() != nil {
				once.Do(func() { close(lost) })
			}
		})
	}
	return lost, func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// lostErr returns the loss of the first of locks that was lost, or nil.
func lostErr(locks []*clientlib.Lock) error {
	for _, l := range locks {
		if err := l.Err(); err != nil {
			return err
		}
	}
	return nil
}

// releaseAll releases locks, reporting failures on stderr.
func releaseAll(locks []*clientlib.Lock) {
	for _, l := range locks {
		if err := releaseLock(l); err != nil {
			fmt.Fprintf(os.Stderr, "relock: run: releasing lock %q: %v\n", l.Name(), err)
		}
	}
}

// runUnder runs argv while locks are held and releases them when it exits.
func (r *runCmd) runUnder(locks []*clientlib.Lock, argv []string, sigs <-chan os.Signal) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = runEnv(locks)
	// The command runs in a process group of its own, so that a loss stops
	// all of it, not only its first process — unless relock runs in the
	// foreground of a terminal: then it stays in relock's group, where the
	// terminal's job control (^C, ^Z) reaches it as usual.
	interactive := foregroundOfTerminal()
	if !interactive {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		releaseAll(locks)
		code := exitRunCannotExec
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = exitRunNotFound
		}
		return &exitError{code, fmt.Errorf("run: %w", err)}
	}
	// signal sends sig to the command: to its process group, or, when it
	// shares relock's group, to it and every process it started.
	pid := cmd.Process.Pid
	signalCmd := func(sig syscall.Signal) {
		if interactive {
			signalTree(pid, sig)
		} else {
			syscall.Kill(-pid, sig)
		}
	}
	// If relock run dies (SIGKILL, the OOM killer), the guard kills the
	// command: the server releases the lock at once then. Without one,
	// the command still stops whenever relock run sees the lock lost.
	g, err := startGuard(pid, !interactive)
	if err != nil {
		fmt.Fprintf(os.Stderr, "relock: run: no guard for the command (%v); if relock run is killed, the command runs on\n", err)
	}
	defer g.done()
	exited := make(chan struct{})
	go func() {
		// The guard learns the command has exited before it is reaped:
		// until then its number is its own, so a guard acting on it (if
		// relock run died meanwhile) cannot hit another process.
		waitExited(pid)
		g.done()
		cmd.Wait()
		close(exited)
	}()

	var kill <-chan time.Time
	// started are the processes the command had started when the lock was
	// lost: once it exits they are no longer its descendants, but they
	// must not run on without the lock either.
	// They are held as process handles (pidfds on Linux), not numbers: a
	// number freed when one of them ends may be another process's by the
	// time they are killed.
	var started []*os.Process
	defer func() {
		for _, p := range started {
			p.Release()
		}
	}()
	remember := func() {
		for _, p := range descendants(pid) {
			if slices.ContainsFunc(started, func(proc *os.Process) bool { return proc.Pid == p }) {
				continue
			}
			if proc, err := os.FindProcess(p); err == nil {
				started = append(started, proc)
			}
		}
	}
	lost, stopWatching := anyLost(locks)
	defer stopWatching()
	for {
		select {
		case <-exited:
			if err := lostErr(locks); err != nil {
				if !interactive {
					syscall.Kill(-pid, syscall.SIGKILL) // what is left of the group
				}
				for _, p := range started {
					p.Signal(syscall.SIGKILL) // what it started, orphaned now; gone ones are skipped
				}
				releaseAll(notLost(locks)) // the others, at once
				return &exitError{exitRunLost, fmt.Errorf("run: %w; the command was stopped", err)}
			}
			stopWatching()
			releaseAll(locks)
			if code := exitStatus(cmd.ProcessState); code != 0 {
				return &exitError{code: code}
			}
			return nil
		case sig := <-sigs:
			// In the terminal's foreground group the command got ^C
			// itself; do not send it twice.
			if !(interactive && sig == syscall.SIGINT) {
				signalCmd(sig.(syscall.Signal))
			}
		case <-lost:
			lost = nil
			fmt.Fprintf(os.Stderr, "relock: run: %s; sending SIGTERM to the command (SIGKILL in %v)\n", lostErr(locks), r.KillGrace)
			remember()
			signalCmd(syscall.SIGTERM)
			t := time.NewTimer(r.KillGrace)
			defer t.Stop()
			kill = t.C
		case <-kill:
			kill = nil
			fmt.Fprintf(os.Stderr, "relock: run: the command outlived --kill-grace %v; sending SIGKILL\n", r.KillGrace)
			remember()
			signalCmd(syscall.SIGKILL)
		}
	}
}

// notLost returns the locks that were not lost.
func notLost(locks []*clientlib.Lock) []*clientlib.Lock {
	var kept []*clientlib.Lock
	for _, l := range locks {
		if l.Err() == nil {
			kept = append(kept, l)
		}
	}
	return kept
}

// releaseLock unlocks l, waiting at most a few seconds; a hold whose UNLOCK
// fails is released by the server when the connection closes.
func releaseLock(l *clientlib.Lock) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return l.Unlock(ctx)
}

// exitStatus is the shell's view of a process's end: its exit code, or
// 128+N if signal N killed it.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 1
}

// foregroundOfTerminal reports whether relock runs in the foreground
// process group of the terminal on its stdin, stdout or stderr.
func foregroundOfTerminal() bool {
	for fd := 0; fd <= 2; fd++ {
		var pgrp int32
		_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), uintptr(syscall.TIOCGPGRP), uintptr(unsafe.Pointer(&pgrp)))
		if errno == 0 {
			return int(pgrp) == syscall.Getpgrp()
		}
	}
	return false
}
