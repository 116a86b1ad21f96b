package main

import (
	"fmt"
	"syscall"

	"github.com/apqueue/apqueue/internal/fakedns"
)

// startFakeDNS prepares this process for domains virtual domains (see
// startVirtualInboxes): it raises the open-file limit for a connection to
// each, with both ends in this process, and starts the DNS server the
// sender resolves their names with. It returns the open-file limit in force.
func startFakeDNS(domains int) (*fakedns.Server, uint64, error) {
	limit, err := raiseFileLimit(uint64(4*domains + 4096))
	if err != nil {
		fmt.Printf("loadtest: %v\n", err) // the run goes on, see raiseFileLimit
	}
	dns, err := fakedns.Start([4]byte{127, 0, 0, 1})
	return dns, limit, err
}

// raiseFileLimit raises this process's limit on open files to at least want
// when it is lower, raising the hard limit too where the process may (as
// root); it returns the limit in force. The inboxes run in this process, so
// every connection costs two descriptors: a burst to 20,000 domains needs
// more than a common default of 20,000 or 1,024. A run that cannot raise it
// goes on: dials then fail with "too many open files" and are retried, which
// the report shows as retries.
func raiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read the open-file limit: %w", err)
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	next := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		// Not allowed to raise the hard limit: take what it allows.
		next = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err2 != nil {
			return lim.Cur, fmt.Errorf("raise the open-file limit to %d: %w", want, err)
		}
		return lim.Max, fmt.Errorf("raise the open-file limit to %d: %w (it is %d)", want, err, lim.Max)
	}
	return want, nil
}
