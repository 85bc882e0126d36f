package pglocal

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Reading /proc to find the backends of a postmaster being killed and to
// wait until they are gone.

// procID names a process across pid reuse: pid plus start time.
type procID struct {
	pid   int
	start string
}

// procStat is the part of /proc/PID/stat this package reads.
type procStat struct {
	state string // R, S, T, Z, ...
	ppid  int
	start string // start time in clock ticks since boot
}

// readStat parses /proc/PID/stat; ok is false when the process is gone.
// Reading /proc makes this Linux-only, like Pdeathsig.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// The command name is parenthesised and may hold spaces; the fields
	// after it are: state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice threads
	// itrealvalue starttime ...
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	return procStat{state: f[0], ppid: ppid, start: f[19]}, true
}

// frozenChildren waits until process pid has stopped (SIGSTOP is delivered
// asynchronously) or died, then lists its children.
func frozenChildren(pid int, limit time.Duration) ([]procID, error) {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		st, ok := readStat(pid)
		if !ok || st.state == "T" || st.state == "t" || st.state == "Z" || st.state == "X" {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("process %d did not stop within %v", pid, limit)
		}
		<-tick.C
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var kids []procID
	for _, e := range entries {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(cpid); ok && st.ppid == pid {
			kids = append(kids, procID{cpid, st.start})
		}
	}
	return kids, nil
}

// waitGone waits until none of procs is alive. A zombie counts as gone: it
// holds no memory, and its new parent reaps it, not us.
func waitGone(procs []procID, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		alive := 0
		for _, p := range procs {
			st, ok := readStat(p.pid)
			if ok && st.start == p.start && st.state != "Z" && st.state != "X" {
				alive++
			}
		}
		if alive == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes still alive after %v", alive, limit)
		}
		<-tick.C
	}
}
