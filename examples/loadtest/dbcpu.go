package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc/<pid>/stat (USER_HZ,
// 100 on Linux for every architecture Go supports).
const clockTick = 10 * time.Millisecond

// dbCPU measures the CPU time the PostgreSQL server spends for this run:
// the backends serving the connections of this process's stores, found in
// pg_stat_activity by their application name (the schema) and read from
// /proc, which works when the database runs on this machine. A backend that
// exits between two samples takes its last interval with it, which a run's
// pools (connections kept open) make rare.
type dbCPU struct {
	be    *backend
	start map[int]time.Duration
}

// startDBCPU samples the backends now; nil, with an error saying why, when
// they cannot be measured (memory store, a remote database).
func startDBCPU(ctx context.Context, be *backend) (*dbCPU, error) {
	if len(be.pools) == 0 {
		return nil, fmt.Errorf("no PostgreSQL pool")
	}
	d := &dbCPU{be: be}
	start, err := d.sample(ctx)
	if err != nil {
		return nil, err
	}
	d.start = start
	return d, nil
}

// since returns the CPU time the backends used since startDBCPU.
func (d *dbCPU) since(ctx context.Context) (time.Duration, error) {
	now, err := d.sample(ctx)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for pid, t := range now {
		sum += t - d.start[pid] // a new backend counts from zero
	}
	return sum, nil
}

// sample returns the CPU time of each backend of this run's stores.
func (d *dbCPU) sample(ctx context.Context) (map[int]time.Duration, error) {
	rows, err := d.be.pools[0].Query(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = $1", d.be.schema)
	if err != nil {
		return nil, fmt.Errorf("list the database backends: %w", err)
	}
	defer rows.Close()
	out := map[int]time.Duration{}
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			return nil, err
		}
		t, err := processCPU(pid)
		if err != nil {
			return nil, fmt.Errorf("database backend %d: %w (is the database on this machine?)", pid, err)
		}
		out[pid] = t
	}
	return out, rows.Err()
}

// processCPU is the user and system CPU time of process pid.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields after
	// its closing parenthesis. utime and stime are fields 14 and 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * clockTick, nil
}
