// Package store defines the persistence contract of apqueue: an append-only
// activity log, one state record per remote domain (its cursor, failure
// bookkeeping and lease), and the dead letters of deliveries that failed for
// good.
//
// The queue is the only intended caller. A Store is designed so that a
// database implementation needs few round trips: every method works on a
// batch, and the queue calls the write methods (Checkpoint, RenewLeases) on an
// interval rather than once per delivery. A store may implement optional
// interfaces that make some of that cheaper, which the queue uses when
// they are there: LeaseKeeper renews all of an owner's leases without
// listing them, DeadLetterPruner deletes old dead letters in bulk.
//
// Two implementations ship with apqueue: store/memory, for tests and the quick
// start, and store/postgres, for production. Any implementation must pass the
// conformance suite in store/storetest:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return memory.New() })
//	}
package store
