// Package memory is an in-memory store.Store: goroutine-safe, with
// notifications on append, and lost when the process ends. It is what the
// queue's tests and the quick start use; production deployments use
// store/postgres.
//
// It behaves as the contract in package store says, and passes the
// conformance suite in store/storetest. Times are kept at microsecond
// precision, like PostgreSQL keeps them, so that code tested against it sees
// the same round trips. Slices are copied on the way in and out, so callers
// cannot change what the store holds. Pruned activities are released for the
// garbage collector. It has no transactional enqueue (store.Tx): it has no
// transactions to join.
package memory
