package store

import (
	"errors"
	"slices"
	"strings"
)

var (
	// ErrInvalid is matched by errors for malformed arguments.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrNotFound is returned when a named record does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrLeaseLost is matched by *LeaseLostError.
	ErrLeaseLost = errors.New("store: lease lost")
	// ErrStale is matched by *StaleStateError.
	ErrStale = errors.New("store: state based on an older revision")
	// ErrNotifyUnsupported is returned by Listen when the store cannot
	// notify; the queue then polls.
	ErrNotifyUnsupported = errors.New("store: notifications not supported")
)

// LeaseLostError is returned by Checkpoint when some states were refused
// because their lease had been taken over.
type LeaseLostError struct {
	// Domains are the refused domains.
	Domains []string
}

func (e *LeaseLostError) Error() string {
	return "store: lease lost for " + strings.Join(e.Domains, ", ")
}

// Is reports whether target is ErrLeaseLost.
func (e *LeaseLostError) Is(target error) bool { return target == ErrLeaseLost }

// StaleStateError is returned by Checkpoint when some states were refused
// because an admin changed their domains since the owner read them; the
// owner reloads those domains and saves again.
type StaleStateError struct {
	// Domains are the refused domains.
	Domains []string
}

func (e *StaleStateError) Error() string {
	return "store: admin change not yet seen for " + strings.Join(e.Domains, ", ")
}

// Is reports whether target is ErrStale.
func (e *StaleStateError) Is(target error) bool { return target == ErrStale }

// CheckpointRefused returns the error Checkpoint reports for the domains it
// refused: a *LeaseLostError for lost, a *StaleStateError for stale, both
// joined when both are given, nil when neither is. It sorts both lists.
func CheckpointRefused(lost, stale []string) error {
	var errs []error
	if len(lost) > 0 {
		slices.Sort(lost)
		errs = append(errs, &LeaseLostError{Domains: lost})
	}
	if len(stale) > 0 {
		slices.Sort(stale)
		errs = append(errs, &StaleStateError{Domains: stale})
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return errors.Join(errs...)
}
