package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTime is the CPU time (user and system) this process has used so far.
// Rates per CPU-second do not depend on what else the machine runs, so the
// load generator prints them next to the wall-clock rates: on a shared
// machine they are the steadier comparison of the queue with its baselines.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineCPU is the CPU time the whole machine has spent busy so far (every
// process, the kernel's work for them included, as /proc/stat counts it),
// and false where it cannot be read. With the database on this machine, the
// difference between two phases' figures per call is what the difference
// between the two calls costs, wherever it runs.
func machineCPU() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var busy time.Duration
	// user nice system idle iowait irq softirq steal: all but idle and
	// iowait (guest time is counted in user already).
	for i, x := range f[1:9] {
		if i == 3 || i == 4 {
			continue
		}
		v, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, false
		}
		busy += time.Duration(v) * clockTick
	}
	return busy, true
}
