package queue

import (
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
	"github.com/apqueue/apqueue/store"
)

// blockKind says why an ordering key cannot be dispatched now.
type blockKind uint8

const (
	blockedInFlight blockKind = iota + 1 // an earlier delivery with the key is in flight
	blockedWaiting                       // an earlier delivery with the key waits for a retry
)

// dispatch starts as many pending deliveries as the domain's state allows.
// First attempts go out in ID order; a delivery never overtakes an earlier
// unsettled one with the same ordering key.
func (w *worker) dispatch() {
	// Slots of the global cap granted since the last step are used now or
	// handed on to the next domain waiting (see slots).
	if granted := int(w.slotsGranted.Swap(0)); granted > 0 {
		w.spareSlots += granted
		w.slotQueue = false // out of the queue for a slot
	}
	defer w.releaseSpareSlots()
	now := w.clock().Now()
	status, next, failing := w.state.Status, w.state.NextAttemptAt, w.domainFailing()
	scheme, schemeChecked := w.state.SignatureScheme, w.state.SignatureCheckedAt
	// Nothing is sent to a paused or suspended domain, not even a probe. A
	// suspended domain's backlog is not skipped here but by the store
	// (Prune, Unsuspend): until this owner has seen the end of a
	// suspension, it cannot tell what must still be delivered.
	if status == store.StatusPaused || status == store.StatusSuspended || now.Before(next) || !w.holdsLease() || !w.savedEnough() {
		return
	}
	limit := w.limit.current()
	if failing || status == store.StatusDead || w.schemeCheckDue(scheme, schemeChecked, now) {
		limit = 1 // one request at a time until a success, or until the signature scheme is known
	}
	// heldBack is kept as it was when nothing is looked at above (a wait
	// for a save, a lost lease), and set below.
	if w.inflight >= limit {
		// Whether an untried delivery could go is not looked at: it is
		// looked at again when a request in flight answers.
		w.heldBack = w.untried > 0
		return
	}
	w.heldBack = false
	if failing && w.dispatchUntried(now) {
		return
	}
	var holds keyHolds
	for _, d := range w.pending {
		if d.settled {
			continue
		}
		kind := holds.at(d)
		if d.inFlight {
			holds.hold(blockedInFlight)
			continue
		}
		if kind != 0 {
			if kind == blockedInFlight && d.attempts == 0 {
				return // keep first attempts in ID order
			}
			continue
		}
		if d.nextAttempt.After(now) {
			holds.hold(blockedWaiting)
			continue
		}
		if w.inflight >= limit || !w.takeSlot() {
			w.heldBack = true
			return
		}
		w.send(d)
		holds.hold(blockedInFlight)
	}
}

// dispatchUntried sends, while the domain is failing, the first delivery not
// tried yet, if one may go: its success proves the domain healthy, so that a
// delivery that keeps failing on its own cannot monopolise the one request
// allowed and hold the domain back. It reports whether it sent one, or
// found one to send and waits for a slot of the global cap.
func (w *worker) dispatchUntried(now time.Time) bool {
	var holds keyHolds
	for _, d := range w.pending {
		if d.settled {
			continue
		}
		if holds.at(d) == 0 && d.attempts == 0 && !d.inFlight && !d.nextAttempt.After(now) {
			if w.takeSlot() {
				w.send(d)
			} else {
				w.heldBack = true
			}
			return true
		}
		holds.hold(blockedWaiting) // unsettled: it holds its key
	}
	return false
}

// keyHolds says, while dispatch walks the pending deliveries in ID order,
// which ordering keys the activities walked past hold: a delivery waits
// while an earlier activity with its key is unsettled. The deliveries of
// one activity (its inboxes on the domain) do not hold each other: only
// activities are ordered, and an inbox that keeps failing must not keep
// the activity's other inboxes from the successes that let it be given up
// on.
type keyHolds struct {
	held  map[string]blockKind // by the activities before the current one
	entry *entry               // the current activity
	key   string               // its ordering key
	kind  blockKind            // how it holds its key; 0 while it does not
}

// at moves the walk to d, and returns how an earlier activity holds d's key
// (0 when none does). Deliveries of one activity are next to each other in
// the pending list.
func (h *keyHolds) at(d *delivery) blockKind {
	if d.entry != h.entry {
		if h.key != "" && h.kind != 0 {
			if h.held == nil {
				h.held = make(map[string]blockKind)
			}
			if h.held[h.key] != blockedInFlight {
				h.held[h.key] = h.kind
			}
		}
		h.entry, h.key, h.kind = d.entry, d.key(), 0
	}
	if h.key == "" {
		return 0
	}
	return h.held[h.key]
}

// hold records that the current activity holds its key: in flight, which
// wins, or waiting for a retry.
func (h *keyHolds) hold(kind blockKind) {
	if h.kind != blockedInFlight {
		h.kind = kind
	}
}

// schemeCheckDue reports whether the next delivery may knock twice (the
// domain's signature scheme is unknown or due for a re-check): the domain
// then gets one request at a time, so a refused scheme costs one extra
// request, not one per request in flight.
func (w *worker) schemeCheckDue(scheme string, checkedAt, now time.Time) bool {
	sc, ok := w.q.sender.(sender.SchemeChecker)
	return ok && sc.SchemeCheckDue(signer.Scheme(scheme), checkedAt, now)
}

// takeSlot takes a slot of the global cap (Config.MaxInFlight) for one
// request, and reports false when none is free: the worker is then queued
// for one and nudged when it is granted, and goes on with its loop
// meanwhile.
func (w *worker) takeSlot() bool {
	if w.q.slots == nil {
		return true
	}
	if w.spareSlots > 0 {
		w.spareSlots--
		return true
	}
	if !w.q.slots.tryAcquire(w) {
		w.slotQueue = true
		return false
	}
	return true
}

// waitsForSlots reports whether the domain's next request waits for a
// slot of the global cap: it is queued for one (until its next turn, even
// if slots come free meanwhile: they go to the domains queued), or no slot
// is free and it holds a delivery ready to go (held back by its limit) or
// nothing untried at all. A domain whose untried deliveries wait for
// something else (an earlier one with the same key, a retry time) is not
// waiting for a slot, nor is one granted slots since its last step: both
// read as usual, the first to find the deliveries it can send.
func (w *worker) waitsForSlots() bool {
	if w.q.slots == nil || w.slotsGranted.Load() > 0 {
		return false
	}
	return w.slotQueue || ((w.heldBack || w.untried == 0) && w.q.slots.scarce())
}

// releaseSpareSlots hands back the slots granted that the worker did not
// use, to the domains waiting for one.
func (w *worker) releaseSpareSlots() {
	if w.spareSlots > 0 {
		w.q.slots.release(w.spareSlots)
		w.spareSlots = 0
	}
}

// leaveSlots gives back, as the worker exits, the slots granted to it, and
// takes it out of the queue for one.
func (w *worker) leaveSlots() {
	if w.q.slots != nil {
		w.releaseSpareSlots()
		w.q.slots.leave(w)
	}
}

// send starts one attempt in its own goroutine; the result comes back on
// w.results (a goroutine that finds its buffer full waits there until the
// run loop takes one).
func (w *worker) send(d *delivery) {
	d.inFlight = true
	if d.attempts == 0 {
		w.untried--
	}
	d.attempts++
	if d.firstFailure.IsZero() {
		// Until it fails: successes from now on, answered while it is in
		// flight too, show that the domain works (see retry).
		d.successesBefore = w.successes
	}
	w.progressed = true
	w.touchedUpTo = max(w.touchedUpTo, d.entry.act.ID)
	d.sentAt, d.sentClock = time.Now(), w.clock().Now()
	w.inflight++
	d.sentSeq, d.sentInflight = w.limit.sending(), w.inflight
	scheme, schemeChecked := signer.Scheme(w.state.SignatureScheme), w.state.SignatureCheckedAt
	del := &sender.Delivery{
		Activity:        d.entry.payload,
		Inbox:           d.inbox,
		Domain:          w.domain,
		SharedInbox:     d.shared,
		Attempt:         d.attempts,
		Scheme:          scheme,
		SchemeCheckedAt: schemeChecked,
	}
	w.q.observe(Event{Kind: EventDispatched, Domain: w.domain, Inbox: d.inbox, ActivityID: d.entry.act.ID, Attempt: d.attempts})
	go func() {
		res := w.q.sender.Send(w.sendCtx, del)
		w.results <- result{d: d, res: res}
	}()
}

// handle applies the result of one attempt to the delivery and the domain.
func (w *worker) handle(r result) {
	d, res := r.d, r.res
	d.inFlight = false
	w.inflight--
	if w.q.slots != nil {
		w.q.slots.release(1)
	}
	w.progressed = true
	if w.sendCtx.Err() != nil && res.Outcome != sender.Delivered && res.Outcome != sender.Permanent && res.Outcome != sender.InboxGone {
		// Cancelled by a stop or a lost lease: not an answer from the
		// domain. An answer that came in anyway is kept, so that it is
		// saved rather than sent again.
		d.attempts--
		if d.attempts == 0 {
			w.untried++
		}
		return
	}
	now := w.clock().Now()
	cfg := &w.q.cfg
	ev := Event{Domain: w.domain, Inbox: d.inbox, ActivityID: d.entry.act.ID, Attempt: d.attempts, HTTPStatus: res.Status, Reason: res.Reason, Latency: time.Since(d.sentAt)}
	st := &w.state
	statusBefore := st.Status
	if res.Outcome == sender.InboxGone && d.shared {
		// The shared inbox is the domain's, not a recipient's: a sender
		// that says it is gone without saying the domain is gone refused
		// this activity there.
		res.Outcome = sender.Permanent
	}
	if res.Outcome != sender.InboxGone {
		st.LastStatus = res.Status
	}
	var gone *Event
	switch res.Outcome {
	case sender.Delivered:
		ev.Kind = EventDelivered
		w.successes++
		w.settle(d, nil)
		w.counts.Delivered++
		w.latency.add(ev.Latency)
		w.limit.onSuccess(now, answer{seq: d.sentSeq, sentInflight: d.sentInflight, inflight: w.inflight + 1, latency: now.Sub(d.sentClock), cpuBusy: w.q.cpuSaturated()})
		if st.Status == store.StatusDead {
			st.Status = store.StatusActive
			w.q.logger.InfoContext(w.ctx, "apqueue: dead domain revived", slog.String("domain", w.domain))
		}
		st.FailCount = 0
		st.FailingSince = time.Time{}
		st.NextAttemptAt = time.Time{}
		st.LastError = ""
		st.LastSuccessAt = now
		if res.Scheme != "" && (string(res.Scheme) != st.SignatureScheme || res.SchemeChecked) {
			// Saved with the next checkpoint: every process and restart
			// signs with it first.
			if string(res.Scheme) != st.SignatureScheme {
				w.q.logger.InfoContext(w.ctx, "apqueue: domain signature scheme", slog.String("domain", w.domain), slog.String("scheme", string(res.Scheme)), slog.String("was", st.SignatureScheme))
			}
			st.SignatureScheme, st.SignatureCheckedAt = string(res.Scheme), now
		}
	case sender.Permanent:
		ev.Kind = EventDeadLetter
		dl := d.deadLetter(w.domain, res.Status, res.Reason)
		w.settle(d, &dl)
	case sender.InboxGone:
		// The recipient is gone, not the domain: the domain's failure
		// count, backoff and last answer stay as they are.
		ev.Kind, ev.Reason = EventDeadLetter, InboxGoneReason+res.Reason
		dl := d.deadLetter(w.domain, res.Status, ev.Reason)
		w.settle(d, &dl)
		goneEv := ev
		goneEv.Kind = EventInboxGone
		gone = &goneEv
	case sender.DomainGone:
		if st.FailingSince.IsZero() {
			st.FailingSince = now
		}
		st.LastError = "gone: " + res.Reason
		if st.Status == store.StatusPaused || st.Status == store.StatusSuspended {
			break // an admin's pause or suspension stands; the answer is recorded
		}
		st.Status = store.StatusDead
		st.NextAttemptAt = now.Add(cfg.ProbeInterval)
		d.nextAttempt = st.NextAttemptAt
		w.q.logger.WarnContext(w.ctx, "apqueue: domain is gone, marked dead", slog.String("domain", w.domain), slog.Int("status", res.Status), slog.String("reason", res.Reason))
	default:
		if res.Outcome != sender.Retry {
			res.Reason = "sender returned no outcome: " + res.Reason
		}
		if congestion(res) {
			w.limit.onCongestion(now, d.sentSeq, congestionReason(res))
		}
		if w.retry(d, res, now) {
			ev.Kind, ev.Reason = EventDeadLetter, w.deadLetters[len(w.deadLetters)-1].Reason
		} else {
			ev.Kind, ev.RetryAt = EventRetry, d.nextAttempt
		}
	}
	statusAfter, lastError := st.Status, st.LastError

	if gone != nil {
		w.q.observe(*gone) // before the dead letter, which settles the delivery
	}
	if ev.Kind != 0 {
		w.q.observe(ev)
	}
	if statusAfter != statusBefore {
		w.q.observe(Event{Kind: EventDomainStatus, Domain: w.domain, Status: statusAfter, Reason: lastError})
	}
}

// domainFailing reports whether the domain fails as a whole: it answered
// with a domain-level failure (network, timeout, 429, 502–504: its backoff
// is set until a success), or DomainBackoffAfter attempts in a row failed,
// or it is dead. Failures of single deliveries below that do not throttle
// it: each failed delivery waits on its own while the others go on.
func (w *worker) domainFailing() bool {
	st := &w.state
	return st.Status == store.StatusDead || !st.NextAttemptAt.IsZero() || st.FailCount >= w.q.cfg.DomainBackoffAfter
}

// retry handles a failed attempt that may pass later, and reports whether
// it gave up on the delivery instead.
func (w *worker) retry(d *delivery, res sender.Result, now time.Time) (deadLettered bool) {
	cfg := &w.q.cfg
	st := &w.state
	w.counts.Retried++
	d.lastError = res.Reason
	if d.firstFailure.IsZero() {
		d.firstFailure = now // successesBefore was taken as this attempt was sent
	}
	st.FailCount++
	if st.FailingSince.IsZero() {
		st.FailingSince = now
	}
	st.LastError = res.Reason
	w.q.logger.DebugContext(w.ctx, "apqueue: delivery failed, will retry", slog.String("domain", w.domain), slog.Int64("activity_id", d.entry.act.ID), slog.Int("attempt", d.attempts), slog.Int("status", res.Status), slog.String("reason", res.Reason))

	// The delivery is the problem, not the domain, when the domain accepted
	// other deliveries since the attempt that first failed here was sent
	// (counted in the order results were handled, not by the clock) and
	// does not fail as a whole now.
	if d.attempts >= cfg.MaxAttempts && !res.DomainLevel && w.successes > d.successesBefore && !w.domainFailing() {
		dl := d.deadLetter(w.domain, res.Status, "gave up after repeated failures: "+res.Reason)
		w.settle(d, &dl)
		return true
	}
	// A Retry-After is the receiver saying when to come back: it replaces
	// the exponential backoff (never shortened, spread upwards only, capped
	// by BackoffMax) rather than compounding with it.
	wait := func(failures int) time.Duration {
		if res.RetryAfter > 0 {
			return w.q.backoff.After(res.RetryAfter)
		}
		return w.q.backoff.Delay(failures, 0)
	}
	d.nextAttempt = now.Add(wait(d.attempts))
	if w.shed(d, res) {
		// Too many at once, not a failing domain: the limit has shrunk,
		// and the delivery goes again as soon as it allows.
		d.nextAttempt = now
	} else if res.DomainLevel || st.FailCount >= cfg.DomainBackoffAfter || st.Status == store.StatusDead {
		st.NextAttemptAt = now.Add(wait(st.FailCount))
	}
	switch {
	case st.Status == store.StatusDead:
		st.NextAttemptAt = now.Add(cfg.ProbeInterval)
	case st.Status == store.StatusActive && now.Sub(st.FailingSince) >= cfg.DeadAfter:
		st.Status = store.StatusDead
		st.NextAttemptAt = now.Add(cfg.ProbeInterval)
		w.q.logger.WarnContext(w.ctx, "apqueue: domain failing continuously, marked dead", slog.String("domain", w.domain), slog.Time("failing_since", st.FailingSince), slog.String("reason", res.Reason))
	}
	if d.nextAttempt.Before(st.NextAttemptAt) {
		d.nextAttempt = st.NextAttemptAt
	}
	return false
}

// congestion reports whether an answer says the domain takes fewer requests
// than it was sent: 408, 429, 502–504, a timeout or a connection error.
// The in-flight limit shrinks on it.
func congestion(res sender.Result) bool {
	return res.DomainLevel || res.Status == http.StatusRequestTimeout
}

// congestionReason is what a limit change says of the answer that caused it.
func congestionReason(res sender.Result) string {
	if res.Status != 0 {
		return strconv.Itoa(res.Status)
	}
	reason, _, _ := strings.Cut(res.Reason, ":")
	return reason
}

// shed reports whether a failed attempt was refused for being one too many
// rather than because the domain fails: a 429 or 503 without Retry-After to
// a request that overlapped others to the domain (sent while others were in
// flight, or answered while others are: a request sent first may reach the
// domain last). The in-flight
// limit shrinks on it (see congestion), and the delivery is retried without
// backing the domain off: the domain took the others. Once the limit is
// down to one request, or the answer says when to come back, the domain
// backs off as a whole as before.
func (w *worker) shed(d *delivery, res sender.Result) bool {
	alone := d.sentInflight < 2 && w.inflight == 0 // w.inflight: the others, once handle took this one out
	if w.q.cfg.FixedInFlight || alone || res.RetryAfter > 0 || w.state.Status != store.StatusActive {
		return false
	}
	return res.Status == http.StatusTooManyRequests || res.Status == http.StatusServiceUnavailable
}

// settle marks d as done, recording dl when it failed for good.
func (w *worker) settle(d *delivery, dl *store.DeadLetter) {
	d.settled = true
	w.settledPending = true
	w.unsettled--
	w.touchedUpTo = max(w.touchedUpTo, d.entry.act.ID)
	if dl != nil {
		w.deadLetters = append(w.deadLetters, *dl)
		w.counts.DeadLettered++
		w.q.logger.WarnContext(w.ctx, "apqueue: delivery failed for good", slog.String("domain", w.domain), slog.Int64("activity_id", dl.ActivityID), slog.String("inbox", dl.Inbox), slog.Int("status", dl.Status), slog.String("reason", dl.Reason))
	}
	w.settledSince++ // advanceCursor asks for a checkpoint when enough settled
	w.settleSeq++
}
