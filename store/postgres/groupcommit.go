package postgres

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
)

// groupMaxActivities caps the activities one combined append statement
// carries, so that a burst of large batches does not build one huge
// statement.
const groupMaxActivities = 1000

// groupCommit combines the Append calls of one Store that overlap in time
// into one statement (group commit). Appends take their IDs from the
// counter row, whose lock is held until the statement's commit is flushed,
// so appends through one counter run one at a time; combining lets the
// callers that arrive while one statement runs share the next statement
// and its flush, so appends scale with callers instead of queueing on the
// lock one flush each.
//
// The first caller to find no statement running leads: it runs one
// statement for every call waiting (its own among them), hands the lead to
// the next waiting call, if any, and returns. A call whose context ends
// before a leader took it is withdrawn; one already taken waits for its
// statement, whose context ends only when every call in it has ended, so
// each caller gets the statement's true outcome.
type groupCommit struct {
	mu      sync.Mutex
	waiting []*appendCall
	leading bool
}

// appendResult is what an append statement reports for one call.
type appendResult struct {
	prev     int64 // the ID before the call's first activity
	numbered int64 // the staged activities the statement numbered
	// claimed are the IDs of the statement's batch whose idempotency keys
	// it claimed (see appendSQL).
	claimed []int64
	// suspended are the suspended domains among the statement's batch's.
	suspended []string
}

// appendCall is one Append waiting for, or in, a combined statement.
type appendCall struct {
	ctx  context.Context
	b    *batch
	res  appendResult // once done
	err  error
	done chan struct{} // closed when prev and err are set
	lead chan struct{} // receives the lead
}

// runFunc runs one append statement for b.
type runFunc func(ctx context.Context, b *batch) (appendResult, error)

// append appends b through run, combined with concurrent calls. An empty
// b only numbers what is staged.
func (g *groupCommit) append(ctx context.Context, b *batch, run runFunc) (appendResult, error) {
	c := &appendCall{ctx: ctx, b: b, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	g.mu.Lock()
	g.waiting = append(g.waiting, c)
	if !g.leading {
		g.leading = true
		c.lead <- struct{}{}
	}
	g.mu.Unlock()
	cancelled := ctx.Done()
	for {
		select {
		case <-c.done:
			return c.res, c.err
		case <-c.lead:
			g.leadUntilDone(c, run)
		case <-cancelled:
			if g.withdraw(c) {
				return appendResult{}, ctx.Err()
			}
			cancelled = nil // taken: wait for the statement's outcome
		}
	}
}

// withdraw removes c from the waiting calls if no leader took it yet,
// passing on the lead if c had just received it, and reports whether it
// did.
func (g *groupCommit) withdraw(c *appendCall) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := slices.Index(g.waiting, c)
	if i < 0 {
		return false
	}
	g.waiting = slices.Delete(g.waiting, i, i+1)
	select {
	case <-c.lead:
		g.passLead()
	default:
	}
	return true
}

// passLead gives the lead to the first waiting call, or ends it when none
// waits. g.mu is held.
func (g *groupCommit) passLead() {
	if len(g.waiting) == 0 {
		g.leading = false
		return
	}
	g.waiting[0].lead <- struct{}{}
}

// leadUntilDone runs combined statements until c's own is done, then
// passes on the lead.
func (g *groupCommit) leadUntilDone(c *appendCall, run runFunc) {
	for {
		g.mu.Lock()
		group := g.take()
		g.mu.Unlock()
		runGroup(group, run)
		g.mu.Lock()
		select {
		case <-c.done:
			g.passLead()
			g.mu.Unlock()
			return
		default:
			g.mu.Unlock()
		}
	}
}

// take removes and returns the waiting calls that fit in one statement,
// at least one. g.mu is held.
func (g *groupCommit) take() []*appendCall {
	n, total := 0, 0
	for n < len(g.waiting) && (n == 0 || total+g.waiting[n].b.n <= groupMaxActivities) {
		total += g.waiting[n].b.n
		n++
	}
	group := slices.Clone(g.waiting[:n])
	g.waiting = slices.Delete(g.waiting, 0, n)
	return group
}

// runGroup runs one statement for the calls of group and completes them.
// When the server refuses a combined statement (nothing of it committed),
// each call runs alone, so that one call's bad data fails only that call.
func runGroup(group []*appendCall, run runFunc) {
	if len(group) == 1 {
		c := group[0]
		c.res, c.err = run(c.ctx, c.b)
		close(c.done)
		return
	}
	ctx, stop := groupContext(group)
	res, err := run(ctx, mergeBatches(group))
	stop()
	var pgErr *pgconn.PgError
	if err != nil && errors.As(err, &pgErr) {
		for _, c := range group {
			c.res, c.err = run(c.ctx, c.b)
			close(c.done)
		}
		return
	}
	for _, c := range group {
		c.res, c.err = res, err
		res.prev += int64(c.b.n)
		close(c.done)
	}
}

// groupContext returns a context, with the values of the group's first
// call, that ends when the contexts of every call of group have ended.
func groupContext(group []*appendCall) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(group[0].ctx))
	var left atomic.Int64
	left.Store(int64(len(group)))
	stops := make([]func() bool, len(group))
	for i, c := range group {
		stops[i] = context.AfterFunc(c.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// mergeBatches concatenates the batches of group, in order.
func mergeBatches(group []*appendCall) *batch {
	out := &batch{}
	for _, c := range group {
		b := c.b
		out.n += b.n
		out.actors = append(out.actors, b.actors...)
		out.keys = append(out.keys, b.keys...)
		out.bodies = append(out.bodies, b.bodies...)
		out.inboxes = append(out.inboxes, b.inboxes...)
		out.doms = append(out.doms, b.doms...)
		out.audies = append(out.audies, b.audies...)
		out.all = append(out.all, b.all...)
		out.newDomains = append(out.newDomains, b.newDomains...)
		for i, ord := range b.keyOrds {
			out.keyOrds = append(out.keyOrds, ord+int64(out.n-b.n))
			out.keyNames = append(out.keyNames, b.keyNames[i])
			out.keyWindows = append(out.keyWindows, b.keyWindows[i])
		}
	}
	if out.keyOrds == nil {
		out.keyOrds, out.keyNames, out.keyWindows = []int64{}, []string{}, []int64{}
	}
	slices.Sort(out.newDomains)
	out.newDomains = slices.Compact(out.newDomains)
	return out
}
