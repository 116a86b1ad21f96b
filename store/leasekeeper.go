package store

import (
	"context"
	"time"
)

// LeaseKeeper is implemented by stores that can renew all of an owner's
// leases at once and tell the owner whether anything happened to them, so
// that a process holding thousands of idle domains renews them without
// sending, reading or returning one row per domain. The queue uses it
// instead of RenewLeases when its store implements it.
//
// The store keeps, for every owner, a change mark: a number that changes
// whenever something happens to one of the owner's leases that the owner
// must learn of and did not do itself: the lease is taken by an
// acquisition (of another owner, or of the same owner after it expired),
// the domain is forgotten, or its Revision is incremented (an admin's
// change, a shared inbox changed by RegisterDomains, a fast-forward by
// Prune). An owner that passes the mark of its previous call learns from
// LeaseKept.Changed whether it must look at its whole list again.
type LeaseKeeper interface {
	// KeepLeases renews owner's leases for ttl. With keep.Full it does
	// what RenewLeases does with keep.Leases (the owner's whole list: a
	// lease of the owner missing from it is not renewed, and is gone at
	// most ttl later), and returns the owner's mark as of the leases it
	// returns. Without keep.Full, keep.Leases lists only the leases that
	// need something of the store (leases acquired since the last call,
	// a SettledThrough that rose): it renews the listed leases and every
	// lease that follows the owner, raises the listed domains' cursors to
	// their SettledThrough (never lowering one), and returns the listed
	// leases still held. A lease follows its owner once a KeepLeases call
	// renewed it (a store may count the owner's RenewLeases and
	// AcquireLeases calls too, as the PostgreSQL store does, so an owner
	// that stopped working its domains makes a Full call even when it
	// works none), until a Full call leaves it out or the lease ends; a
	// lease never renewed keeps the expiry AcquireLeases gave it.
	// It reports Changed when the owner's mark is not keep.Since; the
	// caller then calls again with Full to learn which leases it lost and
	// which domains an admin changed.
	KeepLeases(ctx context.Context, owner string, keep LeaseKeep, ttl time.Duration) (LeaseKept, error)
}

// LeaseKeep is what an owner asks of LeaseKeeper.KeepLeases.
type LeaseKeep struct {
	// Full says Leases is the owner's whole list. An owner makes its
	// first call Full, and every call after one that reported Changed or
	// after it stopped working a domain without releasing its lease.
	Full bool
	// Since is the Mark the owner's previous call returned; ignored when
	// Full.
	Since int64
	// Leases are the owner's whole list when Full; otherwise the leases
	// that need the store: acquired since the last call, or with a
	// SettledThrough higher than the last one given.
	Leases []Lease
}

// LeaseKept is what LeaseKeeper.KeepLeases did.
type LeaseKept struct {
	// Mark is the owner's change mark the call saw; the owner passes it as
	// the next call's Since.
	Mark int64
	// Changed reports that Mark is not the Since given: something may
	// have happened to one of the owner's leases since the call that
	// returned Since. Only a call without Full needs it.
	Changed bool
	// Leases are the given leases still held, renewed, with their expiry
	// and their domain's current Revision. With Full, a lease left out is
	// lost.
	Leases []Lease
}
