// Package leakcheck fails a test binary that leaves goroutines running after
// its tests, the way go.uber.org/goleak does, with the standard library only.
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Timeout is how long Main waits for goroutines to finish after the tests;
// closed connections and stopped servers take a moment to unwind.
const Timeout = 5 * time.Second

// ignored marks goroutines that belong to the runtime or the test framework.
var ignored = []string{
	"testing.(*M).",
	"testing.RunTests",
	"testing.tRunner",
	"testing.runFuzzing",
	"testing.(*F).",
	"os/signal.signal_recv",
	"os/signal.loop",
	"runtime.ensureSigM",
	"leakcheck.Running",
}

// Running returns the stacks of goroutines other than the caller's and the
// runtime's and test framework's own.
func Running() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if g == "" {
			continue
		}
		skip := false
		for _, s := range ignored {
			if strings.Contains(g, s) {
				skip = true
				break
			}
		}
		if !skip {
			out = append(out, g)
		}
	}
	return out
}

// Find waits up to timeout for stray goroutines to end and returns an error
// listing those that did not.
func Find(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		leaks := Running()
		if len(leaks) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leakcheck: %d goroutines still running after the tests:\n\n%s", len(leaks), strings.Join(leaks, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Main runs the tests and, if they pass, fails the binary when goroutines
// are left running. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := Find(Timeout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}
