package main

import (
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
