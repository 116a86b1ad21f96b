package main

import (
	"fmt"
	"syscall"

	"github.com/apqueue/apqueue/internal/fakedns"
	"github.com/apqueue/apqueue/sender"
)

// startFakeDNS prepares this process for virtual domains (see
// startVirtualInboxes) reached through at most maxConns connections in use
// and maxConns idle: it raises the open-file limit for both ends of each
// (the inboxes are in this process) with room for the rest, and starts the
// DNS server the sender resolves the names with. It returns the open-file
// limit in force.
func startFakeDNS(maxConns int) (*fakedns.Server, uint64, error) {
	limit, err := raiseFileLimit(uint64(4*maxConns + 4096))
	if err != nil {
		fmt.Printf("loadtest: %v\n", err) // the run goes on, see raiseFileLimit
	}
	dns, err := fakedns.Start([4]byte{127, 0, 0, 1})
	return dns, limit, err
}

// raiseFileLimit raises this process's limit on open files to at least want
// when it is lower, raising the hard limit too where the process may (as
// root); it returns the limit in force. A run that cannot raise it goes on:
// dials then fail with "too many open files" and are retried, which the
// report shows as retries.
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

// newVirtualSender is the HTTP sender of the virtual domains: names resolved
// by dns, at most maxConns requests in flight and maxConns idle
// connections, so that both ends of every connection fit the open-file
// limit. It returns the HTTP sender (to close) and the limited one the
// queue is given.
func newVirtualSender(s queueSettings, dns *fakedns.Server, maxConns int) (*sender.HTTP, *limitedSender, error) {
	h, err := newSender(s, sender.HTTPConfig{Resolver: dns.Resolver(), MaxIdleConns: maxConns})
	if err != nil {
		return nil, nil, err
	}
	return h, newLimitedSender(h, maxConns), nil
}
