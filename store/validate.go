package store

import (
	"fmt"
	"time"
)

// The checks below are the argument rules of the Store contract, shared by
// every store so that they refuse the same input with the same words. Each
// returns nil or an error matching ErrInvalid; a store adds what it was
// doing.

// CheckAppend checks a batch for Append and AppendTx.
func CheckAppend(activities []NewActivity) error {
	if len(activities) == 0 {
		return invalid("empty batch")
	}
	for i, a := range activities {
		if len(a.Body) == 0 {
			return invalid("activity %d has no body", i)
		}
		for _, d := range a.Domains {
			if d == "" {
				return invalid("activity %d names an empty domain", i)
			}
		}
		if len(a.IdempotencyKey) > IdempotencyKeyMaxLen {
			return invalid("activity %d has an idempotency key of %d bytes, more than %d", i, len(a.IdempotencyKey), IdempotencyKeyMaxLen)
		}
		if a.IdempotencyKey != "" && a.IdempotencyWindow <= 0 {
			return invalid("activity %d has an idempotency key but a window of %v", i, a.IdempotencyWindow)
		}
	}
	return nil
}

// CheckRegistrations checks the argument of RegisterDomains.
func CheckRegistrations(domains []DomainRegistration) error {
	for i, r := range domains {
		if r.Domain == "" {
			return invalid("registration %d has an empty domain", i)
		}
	}
	return nil
}

// CheckCheckpoint checks the arguments of Checkpoint.
func CheckCheckpoint(states []DomainState, deadLetters []DeadLetter) error {
	for i, st := range states {
		switch {
		case st.Domain == "":
			return invalid("state %d has an empty domain", i)
		case !st.Status.Valid():
			return invalid("state of %s has status %q", st.Domain, st.Status)
		case st.FailCount < 0:
			return invalid("state of %s has negative fail count", st.Domain)
		}
	}
	for i, dl := range deadLetters {
		if dl.Domain == "" {
			return invalid("dead letter %d has an empty domain", i)
		}
	}
	return nil
}

// CheckChange checks the arguments of ChangeDomain.
func CheckChange(domain string, change DomainChange) error {
	switch {
	case domain == "":
		return invalid("empty domain")
	case change.Status != "" && !change.Status.Valid():
		return invalid("status %q", change.Status)
	case change.SkipTo < 0:
		return invalid("negative skip %d", change.SkipTo)
	}
	return nil
}

// CheckForget checks the argument of ForgetDomain.
func CheckForget(domain string) error {
	if domain == "" {
		return invalid("empty domain")
	}
	return nil
}

// CheckOwner checks a lease owner.
func CheckOwner(owner string) error {
	if owner == "" {
		return invalid("empty owner")
	}
	return nil
}

// CheckLease checks the owner and TTL of AcquireLeases and RenewLeases. A
// TTL must be at least a microsecond, the precision stores keep.
func CheckLease(owner string, ttl time.Duration) error {
	if err := CheckOwner(owner); err != nil {
		return err
	}
	if ttl < time.Microsecond {
		return invalid("ttl %v is below a microsecond", ttl)
	}
	return nil
}

// CheckLimit checks a limit that must be zero or more.
func CheckLimit(limit int) error {
	if limit < 0 {
		return invalid("negative limit %d", limit)
	}
	return nil
}

// CheckBatchSize checks the limit of Activities, which must be positive.
func CheckBatchSize(limit int) error {
	if limit <= 0 {
		return invalid("limit %d is not positive", limit)
	}
	return nil
}

// EffectiveLimit checks f and returns the number of dead letters to return
// at most.
func (f DeadLetterFilter) EffectiveLimit() (int, error) {
	if f.ActivityID < 0 {
		return 0, invalid("negative activity ID %d", f.ActivityID)
	}
	if err := CheckLimit(f.Limit); err != nil {
		return 0, err
	}
	if f.Limit == 0 {
		return DeadLetterLimitDefault, nil
	}
	return f.Limit, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}
