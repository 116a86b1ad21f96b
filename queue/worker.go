package queue

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apqueue/apqueue/internal/clock"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store"
)

// worker delivers the activities of one domain while this process holds the
// domain's lease. It is one state machine owned by its run goroutine: only
// that goroutine reads or changes the domain's state, its pending
// deliveries and its counters. Everyone else talks to it through its
// mailbox (requests flagged in atomics, then a nudge) and reads what it
// publishes (view):
//   - the window nudges it when an activity addresses its domain;
//   - the lease keeper sets leaseUntil and asks for a reload when an admin
//     changed the domain elsewhere;
//   - admin operations ask for a reload and wait until it is applied
//     (reloads); retention asks for a skip;
//   - the global cap (slots) grants it a slot it waits for;
//   - the checkpointer receives the state it offers and saves it;
//   - ActivityStatus asks it what it knows of one activity.
type worker struct {
	q      *Queue
	domain string
	token  int64 // the lease's fencing token, fixed for the worker's life

	ctx        context.Context // ends when the lease is lost or the queue stops hard
	cancel     context.CancelFunc
	sendCtx    context.Context // in-flight requests; cancelled when Stop times out
	sendCancel context.CancelFunc
	stopping   chan struct{} // closed: dispatch nothing more, finish in-flight, exit
	stopOnce   sync.Once
	done       chan struct{}
	results    chan result
	leaseTimer *time.Timer // drops the worker when leaseUntil passes unrenewed

	// The mailbox.
	nudge      chan struct{} // look at the mailbox and the window now
	wantReload atomic.Bool   // re-read the saved state: an admin changed it
	wantSkipTo atomic.Int64  // move past this ID (retention fast-forward)
	leaseUntil atomic.Int64  // Unix nanoseconds the lease is known to hold until
	leaseWait  atomic.Bool   // dispatching stopped for the lease: poke on renewal
	savedSeq   atomic.Int64  // settleSeq of the latest offer the checkpointer saved
	saveWait   atomic.Bool   // dispatching stopped for a save: poke when one is done
	// What the global cap (Config.MaxInFlight) granted; see slots.
	slotGrants
	// asks are questions about one activity (Queue.ActivityStatus).
	asks chan activityAsk
	// changed holds the newest state an admin change made through this
	// process returned, until the worker takes it in (see reloadNow);
	// reloads are those changes' callers, waiting for the worker to have
	// taken it: it closes the channel it receives once it has.
	changed atomic.Pointer[store.DomainState]
	reloads chan chan struct{}
	// resolveCtx is the context of the worker's Resolver calls: w.ctx,
	// marked (workerKey).
	resolveCtx context.Context
	// emptyThrough is set by the window when it wakes the worker for an
	// activity: nothing up to the ID before it addresses the domain, so the
	// worker skips that part of the log instead of reading it again.
	emptyThrough atomic.Int64

	// What the store knows of the lease; the lease keeper's (see keep).
	keptLease keptLease

	// What the run goroutine publishes for Stats and the lease keeper.
	view     atomic.Pointer[DomainStats]
	revision atomic.Int64
	wakes    atomic.Int64 // nudges taken, for tests of who is woken

	// Owned by the run goroutine.
	state        store.DomainState
	offered      store.DomainState // the state last offered to the checkpointer
	scanned      int64             // every activity at or below this was read for the domain
	pending      []*delivery
	inflight     int
	caughtUp     bool // the window will nudge when something arrives
	waitingIdle  bool // caught up with nothing pending (see window.settledThrough)
	fillRetry    time.Time
	fillErrors   int
	blocked      string // why reading or resolving fails, "" when it does not
	deadLetters  []store.DeadLetter
	settledSince int
	settleSeq    int64     // deliveries settled since the worker started
	offeredSeq   int64     // settleSeq when the state was last offered
	restored     *restored // saved progress fill has not reached yet
	progressed   bool      // the progress above the cursor changed since the last offer
	pendingBytes int       // footprint of the entries the pending deliveries hold
	unsettled    int       // pending deliveries not settled
	untried      int       // pending deliveries not attempted yet
	// touchedUpTo is the highest activity ID among pending deliveries that
	// were attempted or settled: the ones after it were never tried, so the
	// scans for progress and retry times stop there.
	touchedUpTo int64
	// The pending list holds only unsettled deliveries once advanceCursor
	// has run (settledPending says one settled since), so that deliveries
	// settled behind one that keeps failing leave room to read on. What
	// left it above the cursor is kept for the saved progress:
	// othersSettled are the pending activities some of whose deliveries
	// settled and left (the rest of their inboxes here is settled);
	// settledAbove are the activities settled on every inbox here, as
	// ranges of IDs in order, none with a pending activity inside.
	settledPending bool
	othersSettled  map[int64]bool
	settledAbove   []store.IDRange
	successes      int64 // deliveries accepted since the worker started
	counts         counts
	latency        latencyRing
	latencyAt      time.Time // when the published percentiles were computed
	limit          *inflightLimit
	spareSlots     int // slots of the global cap granted and not used yet
	// heldBack says dispatch last stopped with a delivery ready to send
	// and no room for it: the domain's limit was reached, or the global
	// cap had no slot (see waitsForSlots).
	heldBack bool
	// slotQueue says the global cap refused the domain a slot and has not
	// granted it one since: it is queued for one.
	slotQueue  bool
	limitShown int // limit.total when the published changes were taken

	// catchingUp says the domain reads behind the window, through the
	// catch-up's sweep (kept by window.read and window.join); parked is
	// what the catch-up was last told of a stop in reading, readAt when a
	// read the catch-up had no room for is tried again.
	catchingUp bool
	parked     readerState
	readAt     time.Time
}

// counts are a domain's delivery counters since this process took it.
type counts struct {
	Delivered    int64
	Retried      int64
	DeadLettered int64
}

type result struct {
	d   *delivery
	res sender.Result
}

// workerKey marks the context of a worker's Resolver calls, made on its
// goroutine, so that what the Resolver asks of the queue does not wait
// for a worker, which may be waiting for the Resolver (see reloadNow).
type workerKey struct{}

// fromResolver reports whether ctx is (derived from) a worker's Resolver
// call.
func fromResolver(ctx context.Context) bool { return ctx.Value(workerKey{}) != nil }

// newWorker returns the worker for a domain this process leased; upper is
// its most requests in flight (Queue.domainLimit, asked before q.mu is
// taken, as DomainLimitFunc may call the queue).
func newWorker(q *Queue, parent context.Context, st store.DomainState, leaseUntil time.Time, upper int) *worker {
	w := &worker{
		q:        q,
		domain:   st.Domain,
		token:    st.LeaseToken,
		stopping: make(chan struct{}),
		done:     make(chan struct{}),
		nudge:    make(chan struct{}, 1),
		asks:     make(chan activityAsk),
		reloads:  make(chan chan struct{}),
		results:  make(chan result, min(upper, maxResultsBuffer)),
		limit:    newInflightLimit(upper, q.cfg.FixedInFlight),
		scanned:  st.Cursor,
		state:    st,
		offered:  st,
		restored: newRestored(st.Progress, st.Cursor),
	}
	w.leaseUntil.Store(leaseUntil.UnixNano())
	w.revision.Store(st.Revision)
	w.ctx, w.cancel = context.WithCancel(parent)
	w.sendCtx, w.sendCancel = context.WithCancel(w.ctx)
	w.resolveCtx = context.WithValue(w.ctx, workerKey{}, struct{}{})
	w.publish()
	return w
}

// maxResultsBuffer bounds the buffer of a worker's results channel: a
// request that finds it full waits in its own goroutine until the run loop
// takes a result, so the buffer only saves switches, and a domain allowed
// 64 requests need not hold room for 64 results while idle.
const maxResultsBuffer = InitialInFlightLimit

func (w *worker) clock() clock.Clock { return w.q.cfg.clock }

// poke wakes the run loop without blocking.
func (w *worker) poke() {
	select {
	case w.nudge <- struct{}{}:
	default:
	}
}

// reload asks the worker to re-read its saved state (an admin changed it).
func (w *worker) reload() {
	w.wantReload.Store(true)
	w.poke()
}

// reloadNow hands the worker st, the state an admin change made through
// this process returned, and returns once the worker has taken it in (or
// has exited, or ctx ended): the change applies to everything the worker
// sends afterwards, such as an activity enqueued right after Pause
// returns. The worker merges st as it would a re-read of the store, so
// taking it in cannot fail; a state older than one it already has changes
// nothing.
//
// It does not wait where the worker may be waiting for the caller: when
// the call comes from a Resolver (ctx is one a worker gave it), or while
// the worker waits for the Observer to take its events (the Observer may
// be the caller). The worker then takes st in at its next step, and at
// the latest before it sends anything more: a Resolver that pauses the
// domain it resolves for stops the delivery it was asked about.
func (w *worker) reloadNow(ctx context.Context, st store.DomainState) {
	w.offerChange(st)
	if fromResolver(ctx) {
		return
	}
	var observerFull <-chan struct{}
	if w.q.events != nil {
		observerFull = w.q.events.waitedFor()
	}
	done := make(chan struct{})
	select {
	case w.reloads <- done:
	case <-w.done:
		return
	case <-ctx.Done():
		return
	case <-observerFull:
		return
	}
	select {
	case <-done:
	case <-w.done:
	case <-ctx.Done():
	case <-observerFull:
	}
}

// offerChange leaves st for the worker, unless a state of a later
// revision waits already (two changes made at once may return in either
// order), and pokes it.
func (w *worker) offerChange(st store.DomainState) {
	for {
		old := w.changed.Load()
		if old != nil && old.Revision >= st.Revision {
			break
		}
		if w.changed.CompareAndSwap(old, &st) {
			break
		}
	}
	w.poke()
}

// skipTo asks the worker to move past the given ID.
func (w *worker) skipTo(id int64) {
	for {
		old := w.wantSkipTo.Load()
		if id <= old || w.wantSkipTo.CompareAndSwap(old, id) {
			break
		}
	}
	w.poke()
}

// lease returns the worker's lease, for renewal and release.
func (w *worker) lease() store.Lease {
	return store.Lease{Domain: w.domain, Token: w.token, Revision: w.revision.Load()}
}

// holdsLease reports whether the worker may send under its lease now; when
// it may not, the next renewal wakes it.
func (w *worker) holdsLease() bool {
	if time.Now().UnixNano() < w.leaseUntil.Load() {
		return true
	}
	w.leaseWait.Store(true)
	return time.Now().UnixNano() < w.leaseUntil.Load() // renewed meanwhile
}

// savedEnough reports whether the worker may send more: fewer than
// Config.CheckpointDeliveries of its deliveries settled since the last state
// the checkpointer saved. That bounds what a crash re-sends, however slow
// the saves are; a worker that must wait asked for the save already (offer)
// and is woken when it is done (saved).
func (w *worker) savedEnough() bool {
	limit := int64(w.q.cfg.CheckpointDeliveries)
	if w.settleSeq-w.savedSeq.Load() < limit {
		return true
	}
	w.saveWait.Store(true)
	return w.settleSeq-w.savedSeq.Load() < limit // saved meanwhile
}

// saved records that the checkpointer saved the state offered at settleSeq
// seq, and lets the worker dispatch again if it waited for that. Called by
// the checkpointer.
func (w *worker) saved(seq int64) {
	for {
		old := w.savedSeq.Load()
		if seq <= old || w.savedSeq.CompareAndSwap(old, seq) {
			break
		}
	}
	if w.saveWait.Swap(false) {
		w.poke()
	}
}

// stop asks the worker to finish its in-flight requests and exit.
func (w *worker) stop() { w.stopOnce.Do(func() { close(w.stopping) }) }

func (w *worker) isStopping() bool {
	select {
	case <-w.stopping:
		return true
	default:
		return false
	}
}

// run is the worker's loop: take requests in, read, dispatch, collect
// results, advance the cursor, offer what changed, wait.
func (w *worker) run() {
	defer close(w.done)
	defer w.cancel()
	defer w.leaveSlots()
	defer w.q.window.forget(w)
	defer func() {
		if w.leaseTimer != nil {
			w.leaseTimer.Stop()
		}
	}()
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// The time the step starts at, read before anything in it looks at
		// the clock: whatever the step found not due yet is due after it,
		// so nextWake(stepAt) arms a timer for it even when its time
		// passed while the step ran.
		stepAt := w.clock().Now()
		// A worker whose lease is lost or whose queue stops hard only waits
		// for its in-flight requests, like a stopping one.
		stopping := w.isStopping() || w.ctx.Err() != nil
		if stopping {
			w.leaveSlots() // grants that came in meanwhile go to the others
			if w.catchingUp {
				// It reads no more: the block it needs is no longer kept
				// for it while its last requests finish.
				w.catchingUp = false
				w.q.window.catchUp.leave(w)
			}
			if w.inflight == 0 {
				w.advanceCursor()
				w.offer()
				w.publish()
				return
			}
		} else {
			w.takeRequests()
			w.advanceCursor() // drop what settled, so fill sees the room it has
			w.fill()
			w.takeChange() // one a Resolver made while fill asked it
			w.dispatch()
		}
		w.advanceCursor()
		w.offer()
		w.publish()
		if !stopping && w.caughtUp && !w.waitingIdle && len(w.pending) == 0 && len(w.deadLetters) == 0 {
			// Caught up, and idle now that its last dead letters are
			// offered: read once more, so that the window hears it (a
			// Drain, the lease keeper and retention wait for that), rather
			// than wait for an activity that may never come.
			w.poke()
		}

		if timer != nil {
			timer.Stop()
			timer = nil
		}
		var timerC <-chan time.Time
		var stopC, ctxDone <-chan struct{}
		if !stopping {
			if at, ok := w.nextWake(stepAt); ok {
				timer = w.clock().NewTimer(at.Sub(w.clock().Now()))
				timerC = timer.C()
			}
			stopC = w.stopping
		}
		// A worker that was not stopping when the step began waits for
		// its context too, even if it ended during the step (a lost lease,
		// Forget): left out, nothing might wake it again. Only one already
		// stopping leaves an ended context out, not to spin on it.
		if !stopping || w.ctx.Err() == nil {
			ctxDone = w.ctx.Done()
		}
		select {
		case r := <-w.results:
			w.handle(r)
		case <-w.nudge:
			w.wakes.Add(1)
			w.caughtUp = false
		case a := <-w.asks:
			a.reply <- w.answer(a.id)
		case done := <-w.reloads:
			w.takeChange()
			w.publish() // Stats show the change once the admin call returns
			close(done)
		case <-timerC:
		case <-stopC:
		case <-ctxDone:
		}
	}
}

// takeRequests applies what others asked for since the last step: an
// admin change made through this process, a reload of the saved state
// after one made elsewhere, a skip.
func (w *worker) takeRequests() {
	w.takeChange()
	if w.wantReload.Load() && !w.clock().Now().Before(w.fillRetry) {
		w.reloadState()
	}
	if to := w.wantSkipTo.Swap(0); to > 0 {
		w.applySkip(to)
	}
}

// reloadState re-reads the domain's saved state and merges the admin's part
// of it; when the read fails, the reload is retried with the fill's backoff.
func (w *worker) reloadState() {
	w.wantReload.Store(false)
	ctx, cancel := storeCall(w.ctx, w.q.cfg.StoreTimeout)
	states, err := w.q.store.Domains(ctx, []string{w.domain})
	cancel()
	if err == nil && len(states) == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		w.wantReload.Store(true)
		w.fillFailed("reloading the domain after an admin change", err)
		return
	}
	w.fillErrors, w.blocked = 0, ""
	w.merge(states[0])
}

// takeChange merges the state an admin change made through this process
// left for it (offerChange), unless the worker already has that revision
// or a later one. A state of another lease on the domain (it was
// forgotten and registered again meanwhile: revisions start over) is not
// merged; the worker re-reads its state instead.
func (w *worker) takeChange() {
	st := w.changed.Swap(nil)
	switch {
	case st == nil:
	case st.LeaseToken != w.token:
		w.reload()
	case st.Revision > w.state.Revision:
		w.merge(*st)
	}
}

// ahead is how many deliveries the worker may hold pending past its cursor.
// Settled ones leave the pending list at each step (advanceCursor), and the
// progress is saved with every checkpoint, so the bound is one of memory
// and of the saved progress's size (Config.MaxPendingPerDomain and
// MaxPendingBytesPerDomain), not of re-sends.
func (w *worker) ahead() int {
	if w.pendingBytes >= w.q.cfg.MaxPendingBytesPerDomain {
		return len(w.pending) // full: read nothing more
	}
	return w.q.cfg.MaxPendingPerDomain
}

// fill reads the activities addressed to the domain after the scanned
// position and turns them into pending deliveries.
func (w *worker) fill() {
	// A domain behind the window tells the catch-up when it stops reading,
	// so that the block it needs is kept for it only while it will read on
	// soon (see catchUp). It reads on without saying so when it stops for a
	// turn (maxReadsPerStep) or to wait for room in the catch-up.
	readsOn := false
	defer func() {
		if w.catchingUp && !readsOn {
			w.parkReading()
		}
	}()
	if w.clock().Now().Before(w.fillRetry) {
		return
	}
	if w.caughtUp && (len(w.pending) > 0 || w.waitingIdle) {
		// Nothing new for the domain; once nothing is pending either, the
		// window is told, so that the cursor may follow the log.
		return
	}
	// Hold about what can be sent next: read on only while few deliveries
	// wait for their first attempt, so that a healthy domain keeps a few
	// activities in memory, however far behind it is, and runs further
	// ahead (up to MaxPendingPerDomain) only past deliveries waiting for a
	// retry.
	// The limit's starting value at least, so that a domain held to one
	// request at a time still reads in batches.
	lowWater := 2 * max(w.limit.current(), InitialInFlightLimit)
	if w.waitsForSlots() {
		// Its next request waits for a turn of the global cap: a delivery
		// ready to go is enough until then, and what the thousands of
		// domains waiting with it would read ahead would stay in memory
		// until their turn. At its turn it reads as usual (reading only
		// what the turn lets it send made the restart drain's heap grow
		// by 5 MiB more).
		lowWater = 1
	}
	if w.untried >= lowWater {
		return
	}
	w.scanned = max(w.scanned, w.emptyThrough.Load())
	for reads := 0; ; reads++ {
		room := min(w.ahead()-len(w.pending), 2*lowWater-w.untried)
		if room <= 0 {
			if w.unsettled == 0 && len(w.pending) > 0 {
				// Full of deliveries settled as they were read (inboxes it
				// cannot send to, or settled by an earlier owner): no
				// answer will wake it, and the window does not until it
				// has read everything. The next step drops them first.
				readsOn = true
				w.poke()
			}
			return
		}
		if reads == maxReadsPerStep || w.isStopping() || w.ctx.Err() != nil {
			// Let results, requests and a stop in before reading on.
			readsOn = true
			w.poke()
			return
		}
		// Idle only once its dead letters are offered too: the renewal that
		// moves an idle cursor must not pass a dead letter not yet saved.
		idle := len(w.pending) == 0 && len(w.deadLetters) == 0
		res, err := w.q.window.read(w.ctx, w, w.scanned, room, idle)
		w.parked = readerHungry
		if err != nil {
			w.fillFailed("reading the activity log", err)
			return
		}
		if res.wait {
			// No room in the catch-up yet: it pokes the worker when there
			// may be.
			readsOn = true
			w.readAt = res.retryAt
			return
		}
		for _, e := range res.entries {
			inboxes, undeliverable, err := w.targets(e)
			if err != nil {
				w.fillFailed("resolving audiences", err)
				return
			}
			if w.restored != nil {
				w.restored.checkOthersSettled(e.act.ID, inboxes, w.state.SharedInbox)
			}
			// An inbox it cannot be sent to is a delivery settled by its
			// dead letter: saved with the progress like any other, so that
			// the next owner does not record it again.
			for _, u := range undeliverable {
				if w.restored == nil || !w.restored.settledAt(e.act.ID, u.inbox) {
					w.recordUndeliverable(e, u.inbox, u.reason)
				}
			}
			for i := range len(undeliverable) + len(inboxes) {
				var d *delivery
				if i < len(undeliverable) {
					d = &delivery{entry: e, inbox: undeliverable[i].inbox, settled: true}
				} else {
					inbox := inboxes[i-len(undeliverable)]
					d = &delivery{entry: e, inbox: inbox, shared: inbox == w.state.SharedInbox}
				}
				if i == 0 {
					d.bytes = e.footprint()
					w.pendingBytes += d.bytes
				}
				if !d.settled && w.restored != nil && w.restored.apply(d) {
					d.settled = true // by an earlier owner
				}
				if !d.settled && d.attempts > 0 {
					// It failed under an earlier owner, which did not save
					// what the domain accepted since: successes from now on
					// show that the domain works (see worker.retry), so that
					// an attempt made here can be the last even if it is the
					// first failure this worker sees.
					d.firstFailure, d.successesBefore = w.clock().Now(), w.successes
				}
				if d.settled || d.attempts > 0 {
					w.touchedUpTo = max(w.touchedUpTo, e.act.ID)
				}
				if !d.settled {
					w.unsettled++
					if d.attempts == 0 {
						w.untried++
					}
				}
				w.settledPending = w.settledPending || d.settled
				w.pending = append(w.pending, d)
			}
			w.scanned = e.act.ID
			w.progressed = true
		}
		w.scanned = max(w.scanned, res.scanned)
		if w.restored != nil && w.scanned >= w.restored.last {
			w.restored = nil
		}
		w.fillErrors = 0
		w.blocked = ""
		if res.caughtUp {
			w.caughtUp = true
			w.waitingIdle = idle
			return
		}
	}
}

// parkReading tells the catch-up that the domain, behind the window, stopped
// reading: stalled, or busy with enough to send (see catchUp).
func (w *worker) parkReading() {
	state := readerBusy
	if w.readingStalled() {
		state = readerStalled
	}
	if w.parked == state {
		return
	}
	w.parked = state
	w.q.window.catchUp.park(w, state == readerStalled)
}

// readingStalled reports whether the domain will not read the log for a
// while: a read failed and is retried later, it is not delivered to
// (paused, suspended, dead) or backs off, or it holds all the deliveries it
// may.
func (w *worker) readingStalled() bool {
	now := w.clock().Now()
	return now.Before(w.fillRetry) || w.state.Status != store.StatusActive ||
		w.state.NextAttemptAt.After(now) || len(w.pending) >= w.ahead()
}

// maxReadsPerStep bounds the reads of one fill, so that a domain far behind
// still takes its results, admin requests and a stop in between.
const maxReadsPerStep = 8

// fillRetryMax caps the wait before a failed read of the log, reload or
// resolution is retried: the delivery backoff (up to an hour) would leave a
// domain idle for as long as the outage lasted, after it ended.
const fillRetryMax = 10 * time.Second

// fillFailed backs off reading after an error, and says why the domain is
// blocked in Stats.
func (w *worker) fillFailed(what string, err error) {
	if w.ctx.Err() != nil {
		return
	}
	w.fillErrors++
	delay := min(w.q.backoff.Delay(w.fillErrors, 0), fillRetryMax)
	w.fillRetry = w.clock().Now().Add(delay)
	w.blocked = what + ": " + err.Error()
	w.q.logger.ErrorContext(w.ctx, "apqueue: "+what+" failed", slog.String("domain", w.domain), slog.Any("error", err), slog.Duration("retry_in", delay))
}

// targets returns the inboxes of the domain that e is addressed to, with the
// domain's shared inbox preferred and no inbox twice, and the inboxes it
// cannot be sent to, each once, with why ("": to any inbox of the domain).
// It records nothing: a failed resolution is retried, and would record
// them again.
func (w *worker) targets(e *entry) ([]string, []refusedInbox, error) {
	inboxes := e.byDomain[w.domain]
	shared := w.state.SharedInbox
	var undeliverable []refusedInbox
	if shared == "" {
		var refused []refusedInbox
		for _, aud := range e.act.Audiences {
			if w.q.resolver == nil {
				// Enqueued by a process that has a Resolver; this one cannot
				// find the audience's inboxes on a domain without a known
				// shared inbox. Record that rather than wait for ever or
				// drop it, and send to the explicit inboxes.
				return dedupe(inboxes), []refusedInbox{{reason: errNoResolverHere.Error()}}, nil
			}
			ans, err := w.q.resolver.answer(w.resolveCtx, aud, w.domain, e.act.ID)
			if err != nil {
				return nil, nil, err
			}
			inboxes = append(inboxes[:len(inboxes):len(inboxes)], ans.byDomain[w.domain]...)
			refused = append(refused, ans.refused[w.domain]...)
		}
		// Once each when two audiences name one.
		for i, r := range refused {
			if !slices.ContainsFunc(refused[:i], func(o refusedInbox) bool { return o.inbox == r.inbox }) {
				undeliverable = append(undeliverable, refusedInbox{inbox: r.inbox,
					reason: "the Resolver named an inbox that cannot be delivered to: " + r.reason})
			}
		}
	}
	if e.act.AllDomains && shared == "" && len(inboxes) == 0 {
		// Nowhere to send it: record it rather than drop it.
		return nil, append(undeliverable, refusedInbox{reason: "addressed to all domains, but no shared inbox is known for this domain"}), nil
	}
	if shared != "" {
		return []string{shared}, undeliverable, nil
	}
	if len(inboxes) == 0 && len(e.act.Audiences) > 0 {
		// The audience reached the domain at enqueue, but reaches no one
		// there now (the followers left): nothing to send, said once.
		w.q.logger.DebugContext(w.ctx, "apqueue: audience no longer reaches the domain", slog.String("domain", w.domain), slog.Int64("activity_id", e.act.ID))
	}
	return dedupe(inboxes), undeliverable, nil
}

// recordUndeliverable records a dead letter for an activity that cannot be
// sent to inbox ("": to any inbox) on this domain.
func (w *worker) recordUndeliverable(e *entry, inbox, reason string) {
	d := &delivery{entry: e, inbox: inbox}
	w.deadLetters = append(w.deadLetters, d.deadLetter(w.domain, 0, reason))
	w.counts.DeadLettered++
	w.q.observe(Event{Kind: EventDeadLetter, Domain: w.domain, ActivityID: e.act.ID, Inbox: inbox, Reason: reason})
}

var errNoResolverHere = errors.New("an activity has audiences and the domain has no known shared inbox, but this queue has no Config.Resolver to find its inboxes: configure the same Resolver in every process")

func dedupe(in []string) []string {
	if len(in) < 2 {
		return in
	}
	seen := make(map[string]bool, len(in))
	out := in[:0:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// advanceCursor drops the settled deliveries from the pending list and
// moves the cursor to just below the first unsettled one: only over
// contiguous settled IDs.
func (w *worker) advanceCursor() {
	if w.settledPending {
		w.settledPending = false
		w.dropSettled()
	}
	cursor := w.scanned
	if len(w.pending) > 0 {
		cursor = min(cursor, w.pending[0].entry.act.ID-1)
	}
	w.state.Cursor = max(w.state.Cursor, cursor)
	w.settledAbove = rangesAbove(w.settledAbove, w.state.Cursor)
}

// dropSettled removes the settled deliveries from the pending list. An
// activity that keeps an unsettled delivery is marked in othersSettled,
// and the footprint of those it drops goes to the first one it keeps; an
// activity settled on every inbox joins settledAbove (advanceCursor then
// drops what the cursor passed).
func (w *worker) dropSettled() {
	// The activities settled in front, the usual case, go by a reslice:
	// the cursor passes them.
	front := 0
	for front < len(w.pending) && w.pending[front].settled {
		front++
	}
	if front < len(w.pending) {
		for front > 0 && w.pending[front-1].entry == w.pending[front].entry {
			front-- // its activity is not settled: see below
		}
	}
	for k, d := range w.pending[:front] {
		w.pendingBytes -= d.bytes
		if k == 0 || d.entry != w.pending[k-1].entry {
			delete(w.othersSettled, d.entry.act.ID)
		}
	}
	clear(w.pending[:front])
	w.pending = w.pending[front:]

	var ranges []store.IDRange
	earlier := w.settledAbove
	n := 0           // deliveries kept, moved to the front of the list
	between := false // a kept activity since the last range
	add := func(r store.IDRange) {
		if n == 0 {
			return // below the first unsettled delivery: the cursor passes it
		}
		if last := len(ranges) - 1; last >= 0 && !between {
			ranges[last].Last = r.Last
		} else {
			ranges = append(ranges, r)
		}
		between = false
	}
	for i := 0; i < len(w.pending); {
		e := w.pending[i].entry
		id := e.act.ID
		j, unsettled := i, 0
		for ; j < len(w.pending) && w.pending[j].entry == e; j++ {
			if !w.pending[j].settled {
				unsettled++
			}
		}
		for len(earlier) > 0 && earlier[0].First < id {
			add(earlier[0])
			earlier = earlier[1:]
		}
		switch {
		case unsettled == 0:
			for _, d := range w.pending[i:j] {
				w.pendingBytes -= d.bytes
			}
			delete(w.othersSettled, id)
			add(store.IDRange{First: id, Last: id})
		case unsettled == j-i:
			if n != i {
				copy(w.pending[n:], w.pending[i:j])
			}
			n += j - i
			between = true
		default:
			first, moved := -1, 0
			for _, d := range w.pending[i:j] {
				if !d.settled {
					if first < 0 {
						first = n
					}
					w.pending[n] = d
					n++
					continue
				}
				moved += d.bytes
			}
			w.pending[first].bytes += moved
			if w.othersSettled == nil {
				w.othersSettled = make(map[int64]bool)
			}
			w.othersSettled[id] = true
			between = true
		}
		i = j
	}
	for _, r := range earlier {
		add(r)
	}
	clear(w.pending[n:])
	w.pending = w.pending[:n]
	if n == 0 {
		w.pending = nil
	}
	w.settledAbove = ranges
}

// rangesAbove returns the part of ranges above id.
func rangesAbove(ranges []store.IDRange, id int64) []store.IDRange {
	k := 0
	for k < len(ranges) && ranges[k].Last <= id {
		k++
	}
	if k == len(ranges) {
		return nil
	}
	ranges = ranges[k:]
	ranges[0].First = max(ranges[0].First, id+1)
	return ranges
}

// offer hands the domain's state to the checkpointer when it changed, with
// the dead letters recorded since the last offer.
func (w *worker) offer() {
	if w.progressed {
		w.progressed = false
		w.state.Progress = w.progress()
	}
	if w.state == w.offered && len(w.deadLetters) == 0 && w.settleSeq == w.offeredSeq {
		return
	}
	w.q.checkpoints.offer(w, w.state, w.deadLetters, w.settleSeq)
	w.offered, w.offeredSeq = w.state, w.settleSeq
	w.deadLetters = nil
	if w.settledSince >= w.q.cfg.CheckpointDeliveries {
		// Once the state that counts them is offered, so that the early
		// checkpoint saves it: it bounds the re-sends after a crash.
		w.settledSince = 0
		w.q.checkpoints.kick()
	}
}

// publish makes the domain's live figures visible to Stats. Latency
// percentiles are recomputed at most every 100 ms.
func (w *worker) publish() {
	s := &DomainStats{
		Domain: w.domain, SharedInbox: w.state.SharedInbox, Status: w.state.Status, SignatureScheme: w.state.SignatureScheme, Cursor: w.state.Cursor,
		Owner: w.q.cfg.OwnerID, Local: true, InFlight: w.inflight, Scanned: w.scanned, Blocked: w.blocked, CaughtUp: w.caughtUp,
		FailCount: w.state.FailCount, FailingSince: w.state.FailingSince, NextAttemptAt: w.state.NextAttemptAt,
		LastStatus: w.state.LastStatus, LastError: w.state.LastError, LastSuccessAt: w.state.LastSuccessAt,
		Delivered: w.counts.Delivered, Retried: w.counts.Retried, DeadLettered: w.counts.DeadLettered,
		InFlightLimit: w.limit.current(), InFlightMax: w.limit.max, BestLatency: w.limit.best,
	}
	if len(w.pending) > 0 {
		s.OldestPending = w.pending[0].entry.act.EnqueuedAt
		s.Pending = w.unsettled
	}
	old := w.view.Load()
	if old != nil && w.limitShown == w.limit.total {
		s.LimitChanges = old.LimitChanges
	} else {
		s.LimitChanges, w.limitShown = w.limit.recent(), w.limit.total
	}
	now := time.Now()
	if old != nil && now.Sub(w.latencyAt) < 100*time.Millisecond {
		s.LatencyP50, s.LatencyP90 = old.LatencyP50, old.LatencyP90
	} else {
		s.LatencyP50, s.LatencyP90 = w.latency.percentile(50), w.latency.percentile(90)
		w.latencyAt = now
	}
	w.view.Store(s)
	w.revision.Store(w.state.Revision)
	if old == nil || old.Cursor != s.Cursor || old.Status != s.Status {
		w.q.quiet.notify()
	}
}

// nextWake returns when the worker must next look at the time: the end of a
// backoff, a delivery's retry time, a read retry, among those after now.
// now must be read before the step that found them not due (see run): a
// time that passed during the step is then still returned (the timer fires
// at once), not taken for one already acted on, which would leave the
// worker asleep with deliveries due.
func (w *worker) nextWake(now time.Time) (time.Time, bool) {
	var at time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	if w.fillRetry.After(now) {
		earliest(w.fillRetry)
	}
	if w.readAt.After(now) {
		earliest(w.readAt)
	}
	if w.state.Status == store.StatusPaused || w.state.Status == store.StatusSuspended {
		return at, !at.IsZero()
	}
	if w.state.NextAttemptAt.After(now) {
		earliest(w.state.NextAttemptAt)
	} else {
		for _, d := range w.pending {
			if d.entry.act.ID > w.touchedUpTo {
				break // never tried: due now
			}
			if !d.settled && !d.inFlight && d.nextAttempt.After(now) {
				earliest(d.nextAttempt)
			}
		}
	}
	return at, !at.IsZero()
}
