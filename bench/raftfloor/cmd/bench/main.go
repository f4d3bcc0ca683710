// bench: starts 3 node processes pinned to core 0 (taskset -c 0), finds the leader, drives
// c client connections (this process should itself run under taskset -c 1), and measures
// commits/s, node CPU (utime+stime summed over the 3 processes) and leader ctx switches.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var clkTck = 100.0 // sysconf(_SC_CLK_TCK) on linux/amd64

func cpuTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseUint(f[11], 10, 64) // field 14 utime
	k, _ := strconv.ParseUint(f[12], 10, 64) // field 15 stime
	return u + k
}

// ctxSwitches sums voluntary+nonvoluntary over all threads of pid.
func ctxSwitches(pid int) (vol, nonvol uint64) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				vol += n
			} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				nonvol += n
			}
		}
	}
	return
}

type conn struct {
	c net.Conn
	r *bufio.Reader
}

func dial(addr string) (*conn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	c.(*net.TCPConn).SetNoDelay(true)
	return &conn{c, bufio.NewReader(c)}, nil
}

func (c *conn) call(id uint64) (bool, error) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], id)
	if _, err := c.c.Write(b[:]); err != nil {
		return false, err
	}
	if _, err := io.ReadFull(c.r, b[:]); err != nil {
		return false, err
	}
	return binary.LittleEndian.Uint64(b[:]) == id, nil
}

// cpu0 returns core-0 jiffies: user+nice, system, idle+iowait, irq+softirq, steal.
func core0() [5]uint64 {
	b, _ := os.ReadFile("/proc/stat")
	var r [5]uint64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "cpu0 ") {
			f := strings.Fields(line)[1:]
			v := make([]uint64, len(f))
			for i := range f {
				v[i], _ = strconv.ParseUint(f[i], 10, 64)
			}
			r = [5]uint64{v[0] + v[1], v[2], v[3] + v[4], v[5] + v[6], v[7]}
		}
	}
	return r
}

func main() {
	variant := flag.String("variant", "A", "A (hashicorp) or B (etcd)")
	conc := flag.Int("c", 1, "client connections")
	dur := flag.Duration("dur", 5*time.Second, "measured duration")
	warm := flag.Duration("warm", time.Second, "warmup under load")
	base := flag.Int("port", 27000, "base port")
	data := flag.String("data", "/tmp/spike-raft-data", "data dir (must be real disk)")
	bindir := flag.String("bin", "./bin", "binary dir")
	extra := flag.String("nodeargs", "", "extra args for node processes (space-separated)")
	flag.Parse()

	bin := map[string]string{"A": "anode", "B": "bnode"}[*variant]
	os.RemoveAll(*data)
	var raftAddrs, cliAddrs []string
	for i := 0; i < 3; i++ {
		raftAddrs = append(raftAddrs, fmt.Sprintf("127.0.0.1:%d", *base+i))
		cliAddrs = append(cliAddrs, fmt.Sprintf("127.0.0.1:%d", *base+100+i))
	}
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for i := 0; i < 3; i++ {
		cmd := exec.Command("taskset", "-c", "0", filepath.Join(*bindir, bin),
			"-id", fmt.Sprint(i+1), "-peers", strings.Join(raftAddrs, ","),
			"-client", cliAddrs[i], "-dir", filepath.Join(*data, fmt.Sprint(i+1)))
		if *extra != "" {
			cmd.Args = append(cmd.Args, strings.Fields(*extra)...)
		}
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		cmds = append(cmds, cmd)
	}
	// find leader (bounded: 15 s)
	leader := -1
	deadline := time.Now().Add(15 * time.Second)
	for leader < 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		for i, a := range cliAddrs {
			c, err := dial(a)
			if err != nil {
				continue
			}
			c.c.SetDeadline(time.Now().Add(2 * time.Second))
			ok, _ := c.call(1)
			c.c.Close()
			if ok {
				leader = i
				break
			}
		}
	}
	if leader < 0 {
		fmt.Fprintln(os.Stderr, "no leader")
		os.Exit(1)
	}
	var conns []*conn
	for i := 0; i < *conc; i++ {
		c, err := dial(cliAddrs[leader])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		conns = append(conns, c)
	}
	var count, fails atomic.Uint64
	var measuring atomic.Bool
	stopAt := time.Now().Add(*warm + *dur)
	var wg sync.WaitGroup
	var nextID atomic.Uint64
	nextID.Store(1 << 20)
	for _, c := range conns {
		wg.Add(1)
		go func(c *conn) {
			defer wg.Done()
			c.c.SetDeadline(stopAt.Add(10 * time.Second))
			for time.Now().Before(stopAt) {
				ok, err := c.call(nextID.Add(1))
				if err != nil {
					fails.Add(1)
					return
				}
				if !ok {
					fails.Add(1)
				} else if measuring.Load() {
					count.Add(1)
				}
			}
		}(c)
	}
	time.Sleep(*warm)
	var cpu0 uint64
	for _, c := range cmds {
		cpu0 += cpuTicks(c.Process.Pid)
	}
	lp := cmds[leader].Process.Pid
	v0, n0 := ctxSwitches(lp)
	c00 := core0()
	t0 := time.Now()
	measuring.Store(true)
	time.Sleep(*dur)
	measuring.Store(false)
	el := time.Since(t0)
	var cpu1 uint64
	for _, c := range cmds {
		cpu1 += cpuTicks(c.Process.Pid)
	}
	v1, n1 := ctxSwitches(lp)
	c01 := core0()
	wg.Wait()
	n := float64(count.Load())
	cpuSec := float64(cpu1-cpu0) / clkTck
	fmt.Printf("variant=%s%s c=%d commits=%d secs=%.2f commits_per_s=%.0f node_cpu_s=%.2f cpu_us_per_commit=%.1f leader_ctxsw_per_commit=%.2f (vol %.2f nonvol %.2f) fails=%d core0[usr sys idle irq steal]=%v\n",
		*variant, *extra, *conc, count.Load(), el.Seconds(), n/el.Seconds(), cpuSec, cpuSec*1e6/n,
		float64(v1-v0+n1-n0)/n, float64(v1-v0)/n, float64(n1-n0)/n, fails.Load(), [5]uint64{c01[0] - c00[0], c01[1] - c00[1], c01[2] - c00[2], c01[3] - c00[3], c01[4] - c00[4]})
}
