package main

import (
	"context"
	"sync/atomic"

	"github.com/apqueue/apqueue/store"
)

// countingStore is a store.Store that counts how many times each log row in
// [first, first+n) is returned by Activities: how often the queue reads the
// same activity from the store. Every other method is the wrapped store's.
type countingStore struct {
	store.Store
	first   int64
	reads   []atomic.Int32
	outside atomic.Int64 // rows read outside the counted range
	calls   atomic.Int64
}

func newCountingStore(st store.Store, first int64, n int) *countingStore {
	return &countingStore{Store: st, first: first, reads: make([]atomic.Int32, n)}
}

// Activities reads from the wrapped store and counts the rows returned.
func (c *countingStore) Activities(ctx context.Context, after int64, limit int) ([]store.Activity, error) {
	acts, err := c.Store.Activities(ctx, after, limit)
	c.calls.Add(1)
	for _, a := range acts {
		if i := a.ID - c.first; i >= 0 && i < int64(len(c.reads)) {
			c.reads[i].Add(1)
		} else {
			c.outside.Add(1)
		}
	}
	return acts, err
}

// rowReads summarises the counts: the most reads of one row, the mean, and
// how many rows were read more than twice or never.
type rowReads struct {
	rows, total, calls, outside int64
	maxReads                    int32
	overTwice, never            int
}

func (c *countingStore) summary() rowReads {
	s := rowReads{rows: int64(len(c.reads)), calls: c.calls.Load(), outside: c.outside.Load()}
	for i := range c.reads {
		n := c.reads[i].Load()
		s.total += int64(n)
		s.maxReads = max(s.maxReads, n)
		if n > 2 {
			s.overTwice++
		}
		if n == 0 {
			s.never++
		}
	}
	return s
}
