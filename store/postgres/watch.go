package postgres

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// The commit watcher's polling interval: the lower bound for watchFastFor
// after a transaction is added (most commit within milliseconds of their
// enqueue), then doubling up to the upper bound while transactions stay
// open. Each added transaction puts the next poll off to watchIntervalMin
// later, so that a burst of them is polled once, but never more than
// watchDelayMax after the first transaction added since the last poll: a
// steady stream of them, with no gap of watchIntervalMin, would otherwise
// put the poll off for as long as it lasts, bounded only by chance. With 8
// callers enqueueing without pause, commits waited for their IDs 41–50 ms
// at the median and 111–114 ms at the 90th percentile; with this bound
// 30–38 and 69–73 ms (BenchmarkEnqueueTxWaitForID). A bound of 10 ms
// shortened them further but cost each EnqueueTx about 4 % more CPU on the
// machine (more polls).
//
// The loop finds the transactions added meanwhile when its timer fires; one
// wakes it only while it waits longer than watchIntervalMin (one added
// during a poll keeps the next wait that short). With 8 callers it woke
// 0.16 times per transaction (watcher-wakes/op in the benchmark) instead of
// 0.82 when each one woke it (the same counter, added by hand to that
// code), with no longer waits.
const (
	watchIntervalMin = time.Millisecond
	watchIntervalMax = 50 * time.Millisecond
	watchFastFor     = 10 * time.Millisecond
	watchDelayMax    = 50 * time.Millisecond
)

// watchTimeout bounds one statement of the commit watcher.
const watchTimeout = 10 * time.Second

// watchGiveUp is how long the commit watcher keeps trying while every poll
// fails (the database is down, or the caller's pool was closed): then it
// forgets the transactions it watches, whose activities the next reader
// numbers.
const watchGiveUp = time.Minute

// commitWatcher numbers the activities of callers' transactions soon after
// they commit, and so wakes the readers.
//
// A caller's transaction does not NOTIFY: PostgreSQL serialises the commits
// of transactions that sent a notification (it holds a database-wide lock
// from before the commit record until after its flush), so a NOTIFY in every
// enqueueing transaction would make them commit one at a time. Instead
// AppendTx returns the transaction's ID, and the watcher, a goroutine of the
// store that runs only while such transactions are open, polls them: one
// statement (watchSQL), on the caller's pool and never inside a caller's
// transaction, numbers the committed staged rows as a reader does and
// reads the status of every watched transaction. A transaction has ended
// when it rolled back, or when it committed before the statement's
// snapshot and the statement either swept the staged rows (locked the
// counter and numbered all it saw) or saw none left: then its rows are
// numbered. When another statement holds the counter (an Append, which
// numbers staged rows too, or a reader), the watcher polls again. A
// statement that numbered anything notifies every listening process once
// for all of them.
//
// After a poll, or before it stops, the watcher may vacuum the staging
// table (see stagingVacuumRows).
//
// If the process stops before its watcher sees a commit, the rows wait for
// the next reader (readers number staged rows too) or Append: the queue's
// polling bounds that wait.
type commitWatcher struct {
	mu      sync.Mutex
	pending map[string]int // transaction IDs (xid8, as text): rows staged
	added   time.Time      // when the last transaction was added
	delay   pollDelay      // how long added transactions put the poll off
	// asleep is set while the loop waits longer than watchIntervalMin for
	// its next poll: only then does an added transaction wake it (kick).
	// Otherwise the loop finds the transactions added meanwhile when its
	// timer fires, so that a stream of enqueues does not wake it once each.
	asleep  bool
	running bool
	closed  bool
	stop    chan struct{} // closed by Close
	kick    chan struct{} // a transaction was added while the loop slept long
	done    sync.WaitGroup
	wakes   atomic.Int64 // how often the loop woke up (kick or timer)

	vacuum  vacuumState  // the staging table's vacuums (see stagingVacuumRows)
	vacuums atomic.Int64 // VACUUM statements that returned without error
}

// watch adds the caller's transaction xid, which staged rows rows, and
// starts the watcher if it is not running.
func (s *Store) watch(xid string, rows int) {
	w := &s.watcher
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	if w.pending == nil {
		w.pending = make(map[string]int)
		w.stop = make(chan struct{})
		w.kick = make(chan struct{}, 1)
	}
	w.pending[xid] += rows
	w.added = time.Now()
	w.delay.add(w.added)
	if w.asleep {
		w.asleep = false
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	if !w.running {
		w.running = true
		w.done.Add(1)
		go s.watchLoop()
	}
}

// pollDelay is how long added transactions put the commit watcher's next
// poll off: until watchIntervalMin has passed without one being added, so
// that a burst of them is polled once, but never more than watchDelayMax
// after the first one added since the last poll.
type pollDelay struct {
	first, last time.Time // transactions added since the last poll
}

// add records a transaction added at now.
func (p *pollDelay) add(now time.Time) {
	if p.first.IsZero() {
		p.first = now
	}
	p.last = now
}

// wait returns how much longer the poll is put off at now; 0 to poll now.
func (p *pollDelay) wait(now time.Time) time.Duration {
	if p.first.IsZero() {
		return 0
	}
	due := p.last.Add(watchIntervalMin)
	if bound := p.first.Add(watchDelayMax); bound.Before(due) {
		due = bound
	}
	return max(0, due.Sub(now))
}

// added reports whether a transaction was added since the last poll.
func (p *pollDelay) added() bool { return !p.first.IsZero() }

// polled starts over once the watcher polls.
func (p *pollDelay) polled() { *p = pollDelay{} }

// closeWatcher stops the watcher and waits for it.
func (s *Store) closeWatcher() {
	w := &s.watcher
	w.mu.Lock()
	if !w.closed && w.stop != nil {
		close(w.stop)
	}
	w.closed = true
	w.mu.Unlock()
	w.done.Wait()
}

// watchLoop polls the pending transactions until none is left and no
// vacuum of the staging table is owed.
func (s *Store) watchLoop() {
	w := &s.watcher
	defer w.done.Done()
	interval := watchIntervalMin
	timer := time.NewTimer(interval)
	defer timer.Stop()
	var failingSince time.Time
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
			w.wakes.Add(1)
			// A transaction was added while the loop waited for a long
			// interval: it is likely to commit within milliseconds, so
			// poll then (subject to the delay, below).
			timer.Reset(watchIntervalMin) // drops a pending tick (Go 1.23 timers)
			continue
		case <-timer.C:
		}
		w.wakes.Add(1)
		w.mu.Lock()
		if d := w.delay.wait(time.Now()); d > 0 {
			w.mu.Unlock()
			timer.Reset(d)
			continue
		}
		w.delay.polled()
		if len(w.pending) == 0 {
			// A vacuum owed within its interval of the last keeps the
			// loop running until it may run.
			owed, wait := s.vacuumWait(0, time.Now())
			if !owed {
				w.running, w.asleep = false, false
				w.mu.Unlock()
				return
			}
			w.asleep = wait > watchIntervalMin
			w.mu.Unlock()
			if wait == 0 {
				s.vacuumStaging()
				wait = watchIntervalMin
			}
			timer.Reset(wait)
			continue
		}
		fast := time.Since(w.added) < watchFastFor
		xids := make([]string, 0, len(w.pending))
		for x := range w.pending {
			xids = append(xids, x)
		}
		w.mu.Unlock()

		ended, err := s.pollCommits(xids)
		select {
		case <-w.stop:
			return
		default:
		}
		switch {
		case err == nil && fast:
			failingSince, interval = time.Time{}, watchIntervalMin
		case err == nil:
			failingSince, interval = time.Time{}, min(2*interval, watchIntervalMax)
		case failingSince.IsZero():
			failingSince = time.Now()
			fallthrough
		default:
			s.logger.Warn("apqueue: postgres: checking callers' transactions failed; retrying",
				slog.String("schema", s.schema), slog.Any("error", err))
			interval = watchIntervalMax
			if time.Since(failingSince) >= s.watchGiveUp {
				s.logger.Warn("apqueue: postgres: gave up checking callers' transactions; readers will number their activities",
					slog.String("schema", s.schema), slog.Int("transactions", len(xids)))
				ended = xids
			}
		}
		w.mu.Lock()
		endedRows := 0
		for _, x := range ended {
			endedRows += w.pending[x]
			delete(w.pending, x)
		}
		vacuum := false
		if err == nil {
			owed, wait := s.vacuumWait(endedRows, time.Now())
			vacuum = owed && wait == 0
		}
		next := interval
		if w.delay.added() {
			// Transactions added during the poll did not wake the loop:
			// poll again as soon as one would have (after a failed poll
			// too, as then the next one may pass).
			next = watchIntervalMin
		}
		w.asleep = next > watchIntervalMin
		w.mu.Unlock()
		if vacuum {
			s.vacuumStaging()
		}
		timer.Reset(next)
	}
}

// watchSQL numbers the committed staged rows as a reader does (see
// readerSequence), notifying channel $2 if it numbered any, and returns,
// for each transaction in $1 (xid8 as text), its status, whether the
// statement swept the staged rows its snapshot saw (it numbered them, or
// there were none), and how many it numbered. A transaction that committed
// after the statement's snapshot is reported in progress: its rows were
// invisible to the sweep.
var watchSQL = readerSequence("$2") + `
SELECT x.x,
	CASE WHEN st.status = 'committed' AND NOT pg_visible_in_snapshot(x.x::xid8, pg_current_snapshot())
		THEN 'in progress' ELSE coalesce(st.status, 'aborted') END,
	EXISTS (SELECT 1 FROM lk) OR NOT (` + stagedAnySQL + `),
	k.k
FROM unnest($1::text[]) AS x(x), LATERAL (SELECT pg_xact_status(x.x::xid8) AS status) AS st, k`

// pollCommits numbers the committed staged activities, as a reader does,
// and reads the status of xids, in one statement (watchSQL); it repeats
// the statement at once while a bounded sweep left committed rows behind.
// It returns the transactions that have ended: rolled back, or committed
// with their activities numbered.
func (s *Store) pollCommits(xids []string) ([]string, error) {
	ctx, cancel := s.watcherContext(watchTimeout)
	defer cancel()
	for {
		ended, more, err := s.watchStatement(ctx, xids)
		if err != nil || !more {
			return ended, err
		}
	}
}

// watchStatement runs watchSQL once for xids. It returns the transactions
// that have ended, and whether the sweep stopped at sweepLimit with more
// committed rows staged.
func (s *Store) watchStatement(ctx context.Context, xids []string) (ended []string, more bool, err error) {
	s.count(1)
	rows, err := s.pool.Query(ctx, s.sql.watch, xids, s.channel)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var x, status string
		var swept bool
		var numbered int64
		if err := rows.Scan(&x, &status, &swept, &numbered); err != nil {
			return nil, false, err
		}
		more = numbered >= sweepLimit
		if status == "aborted" || status == "committed" && swept && !more {
			ended = append(ended, x)
		}
	}
	return ended, more, rows.Err()
}
