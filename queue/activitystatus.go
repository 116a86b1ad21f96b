package queue

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/apqueue/apqueue/store"
)

// DeliveryState says where an activity stands on one domain it addresses.
type DeliveryState string

const (
	// DeliveryPending: not settled yet. It is sent, or tried again, when
	// its turn comes (see DomainDelivery.NextAttemptAt).
	DeliveryPending DeliveryState = "pending"
	// DeliveryDelivered: settled on the domain without a dead letter:
	// delivered, or there was no recipient left on the domain. (The store
	// keeps no record of skips: an activity an admin passed over with
	// SkipToHead on a live domain shows here too.)
	DeliveryDelivered DeliveryState = "delivered"
	// DeliveryDeadLettered: settled, and at least one of its deliveries to
	// the domain failed for good (DomainDelivery.DeadLetters says which
	// and why; the others were delivered).
	DeliveryDeadLettered DeliveryState = "dead_lettered"
	// DeliveryPaused: not settled, and the domain is paused: it is sent
	// once the domain is resumed.
	DeliveryPaused DeliveryState = "paused"
	// DeliveryDomainDead: the domain is dead. The activity waits for a
	// probe to revive the domain, or, when DomainDelivery.Reason says so,
	// was passed over for good (SkipToHead moved the dead domain's cursor
	// past it).
	DeliveryDomainDead DeliveryState = "domain_dead"
	// DeliverySuspended: the domain is suspended (Queue.Suspend): the
	// activity is not sent to it, and was not if DomainDelivery.Reason says
	// "never sent" (the suspension moved the domain's cursor past it).
	DeliverySuspended DeliveryState = "suspended"
	// DeliveryDomainUnknown: the store no longer knows the domain (it was
	// forgotten, Queue.Forget), so nothing more is sent to it.
	DeliveryDomainUnknown DeliveryState = "domain_unknown"
)

// ActivityStatus is where one activity stands on every domain it addresses
// (see Queue.ActivityStatus).
type ActivityStatus struct {
	// ID is the activity's ID in the log.
	ID int64 `json:"id"`
	// EnqueuedAt is when the activity was appended (zero when pruned).
	EnqueuedAt time.Time `json:"enqueued_at,omitzero"`
	// AllDomains says the activity addresses every known domain: Domains
	// lists every domain known now, those registered after the activity
	// too (with the activity settled for them).
	AllDomains bool `json:"all_domains,omitempty"`
	// Pruned says the activity settled on every domain it addressed and
	// retention deleted it from the log: which domains it addressed is no
	// longer known, and Domains lists only those where it was
	// dead-lettered (the others received it, or passed over it while
	// dead).
	Pruned bool `json:"pruned,omitempty"`
	// Domains are sorted by name.
	Domains []DomainDelivery `json:"domains"`
}

// Count returns how many of the activity's domains are in state s.
func (a ActivityStatus) Count(s DeliveryState) int {
	n := 0
	for _, d := range a.Domains {
		if d.State == s {
			n++
		}
	}
	return n
}

// DomainDelivery is where an activity stands on one domain.
type DomainDelivery struct {
	Domain string        `json:"domain"`
	State  DeliveryState `json:"state"`
	// DomainStatus is the domain's status now ("" when the domain is
	// unknown).
	DomainStatus store.DomainStatus `json:"domain_status,omitempty"`
	// Attempts is the most attempts made so far of the activity's
	// deliveries to the domain that are not settled (0 before the first).
	Attempts int `json:"attempts,omitempty"`
	// InFlight says an attempt is under way (live view only).
	InFlight bool `json:"in_flight,omitempty"`
	// NextAttemptAt is the earliest time of the next attempt, its own
	// retry time or the domain's backoff, whichever is later; zero when it
	// goes as soon as its turn comes. Set while not settled.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	// LastError is the last failure while not settled: the delivery's own
	// in the live view, the domain's last error otherwise.
	LastError string `json:"last_error,omitempty"`
	// Reason says why the activity was not, or not yet, delivered, for
	// the states other than pending and delivered.
	Reason string `json:"reason,omitempty"`
	// DeadLetters are the activity's deliveries to the domain that failed
	// for good, oldest first.
	DeadLetters []ActivityDeadLetter `json:"dead_letters,omitempty"`
	// Live says the answer comes from this process's worker of the
	// domain; otherwise it is the state last saved in the store (at most a
	// checkpoint interval old while another process works the domain).
	Live bool `json:"live"`
}

// ActivityDeadLetter is a dead letter of an activity, without the copy of
// its body (see Queue.DeadLetters for the full record).
type ActivityDeadLetter struct {
	// ID is the dead letter's ID, for RequeueDeadLetters and
	// DiscardDeadLetters; 0 while it is not saved yet (it is, with the
	// next checkpoint).
	ID    int64  `json:"id,omitempty"`
	Inbox string `json:"inbox,omitempty"`
	// Status is the HTTP status of the last attempt (0: no response).
	Status    int       `json:"status,omitempty"`
	Reason    string    `json:"reason"`
	Attempts  int       `json:"attempts"`
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// clockSkew is how far apart the clocks that stamp an activity's
// EnqueuedAt (the store's) and a domain's LastSuccessAt (a worker's) may
// be: a success less than this before the enqueue may be its delivery.
const clockSkew = time.Minute

// deadLetterPage is how many dead letters ActivityStatus reads per call.
const deadLetterPage = 1000

// ActivityStatus returns where the activity with the given ID stands on
// every domain it addresses: delivered, pending (with its attempts, next
// attempt and last error), dead-lettered (with the reasons), or held
// because the domain is paused, dead, suspended or unknown. It works in any process
// that shares the store: domains this process works are answered from
// their workers' live state, the others from the state last saved.
//
// It costs a few store reads whose size follows the domains the activity
// addresses, not the domains the store knows (except for an activity
// addressed to all domains). An activity that retention pruned is reported
// with Pruned set; an ID the log never held is an error matching
// store.ErrNotFound.
func (q *Queue) ActivityStatus(ctx context.Context, id int64) (ActivityStatus, error) {
	if id <= 0 {
		return ActivityStatus{}, fmt.Errorf("queue: activity status: activity %d: %w", id, store.ErrNotFound)
	}
	acts, err := q.store.Activities(ctx, id-1, 1)
	if err != nil {
		return ActivityStatus{}, fmt.Errorf("queue: activity status: reading activity %d: %w", id, err)
	}
	if len(acts) == 0 || acts[0].ID != id {
		return q.prunedStatus(ctx, id)
	}
	act := acts[0]
	out := ActivityStatus{ID: id, EnqueuedAt: act.EnqueuedAt, AllDomains: act.AllDomains}
	names := slices.Clone(act.Domains)
	if len(names) == 0 && !act.AllDomains {
		out.Domains = []DomainDelivery{} // an audience that reached no one
		return out, nil
	}
	if act.AllDomains {
		names = nil // every known domain
	}
	// The states first, the dead letters last: a checkpoint saves a
	// state with its dead letters, so a settled state is never read
	// without them.
	states, err := q.store.Domains(ctx, names)
	if err != nil {
		return ActivityStatus{}, fmt.Errorf("queue: activity status: reading domains: %w", err)
	}
	if act.AllDomains {
		for _, s := range states {
			names = append(names, s.Domain)
		}
	}
	rows := make(map[string]*domainView, len(names))
	for _, n := range names {
		rows[n] = &domainView{}
	}
	for _, s := range states {
		if v := rows[s.Domain]; v != nil {
			v.fromStore(s, id)
		}
	}
	// Live views next, then the dead letters not saved yet, then the
	// saved ones: a dead letter moves from the worker to the
	// checkpointer to the store in that order, so it is found on the way.
	q.mu.Lock()
	local := make(map[string]*worker)
	for _, n := range names {
		if w := q.workers[n]; w != nil {
			local[n] = w
		}
	}
	q.mu.Unlock()
	for n, w := range local {
		if lv, ok := w.ask(ctx, id); ok {
			rows[n].fromWorker(lv)
		}
	}
	if err := ctx.Err(); err != nil {
		return ActivityStatus{}, fmt.Errorf("queue: activity status: %w", err)
	}
	for _, dl := range q.checkpoints.unsavedDeadLetters(id, names, act.AllDomains) {
		if v := rows[dl.Domain]; v != nil {
			v.addDeadLetter(dl)
		}
	}
	if err := q.activityDeadLetters(ctx, id, func(dl store.DeadLetter) {
		if v := rows[dl.Domain]; v != nil {
			v.addDeadLetter(dl)
		}
	}); err != nil {
		return ActivityStatus{}, err
	}
	out.Domains = make([]DomainDelivery, 0, len(rows))
	for n, v := range rows {
		out.Domains = append(out.Domains, v.result(n, act.EnqueuedAt))
	}
	sort.Slice(out.Domains, func(i, j int) bool { return out.Domains[i].Domain < out.Domains[j].Domain })
	return out, nil
}

// prunedStatus answers for an ID that the log does not hold: pruned when
// it is below the oldest activity the log keeps, unknown otherwise.
func (q *Queue) prunedStatus(ctx context.Context, id int64) (ActivityStatus, error) {
	head, err := q.store.Head(ctx)
	if err != nil {
		return ActivityStatus{}, fmt.Errorf("queue: activity status: reading the log's head: %w", err)
	}
	if id > head {
		return ActivityStatus{}, fmt.Errorf("queue: activity status: activity %d (the log's head is %d): %w", id, head, store.ErrNotFound)
	}
	first, err := q.store.Activities(ctx, 0, 1)
	if err != nil {
		return ActivityStatus{}, fmt.Errorf("queue: activity status: reading the oldest activity: %w", err)
	}
	if len(first) > 0 && first[0].ID < id {
		// Retention deletes from the oldest on: an ID above the oldest one
		// kept was never assigned.
		return ActivityStatus{}, fmt.Errorf("queue: activity status: activity %d: %w", id, store.ErrNotFound)
	}
	out := ActivityStatus{ID: id, Pruned: true, Domains: []DomainDelivery{}}
	rows := make(map[string]*domainView)
	if err := q.activityDeadLetters(ctx, id, func(dl store.DeadLetter) {
		v := rows[dl.Domain]
		if v == nil {
			v = &domainView{known: true, settled: true}
			rows[dl.Domain] = v
		}
		v.addDeadLetter(dl)
	}); err != nil {
		return ActivityStatus{}, err
	}
	for n, v := range rows {
		out.Domains = append(out.Domains, v.result(n, time.Time{}))
	}
	sort.Slice(out.Domains, func(i, j int) bool { return out.Domains[i].Domain < out.Domains[j].Domain })
	return out, nil
}

// activityDeadLetters calls f with every saved dead letter of activity id.
func (q *Queue) activityDeadLetters(ctx context.Context, id int64, f func(store.DeadLetter)) error {
	for after := int64(0); ; {
		dls, err := q.store.DeadLetters(ctx, store.DeadLetterFilter{ActivityID: id, AfterID: after, Limit: deadLetterPage})
		if err != nil {
			return fmt.Errorf("queue: activity status: reading dead letters: %w", err)
		}
		for _, dl := range dls {
			f(dl)
		}
		if len(dls) < deadLetterPage {
			return nil
		}
		after = dls[len(dls)-1].ID
	}
}

// domainView gathers what is known of one activity on one domain.
type domainView struct {
	known       bool // the store, or a worker, knows the domain
	live        bool
	status      store.DomainStatus
	lastSuccess time.Time
	domainNext  time.Time // the domain's backoff
	domainError string
	settled     bool
	attempts    int
	inFlight    bool
	next        time.Time
	lastError   string
	deadLetters []ActivityDeadLetter
	inboxes     map[string]bool // of deadLetters
}

// fromStore takes in the domain's saved state.
func (v *domainView) fromStore(s store.DomainState, id int64) {
	v.known = true
	v.status, v.lastSuccess, v.domainNext, v.domainError = s.Status, s.LastSuccessAt, s.NextAttemptAt, s.LastError
	v.settled = id <= s.Cursor
	if !v.settled {
		v.settled, v.attempts, v.next = progressOf(s.Progress, id)
	}
	v.lastError = s.LastError
}

// fromWorker takes in what the domain's worker knows.
func (v *domainView) fromWorker(lv liveActivity) {
	v.known, v.live = true, true
	v.status, v.lastSuccess, v.domainNext, v.domainError = lv.status, lv.lastSuccess, lv.domainNext, lv.domainError
	v.settled, v.attempts, v.inFlight, v.next, v.lastError = lv.settled, lv.attempts, lv.inFlight, lv.next, lv.lastError
	if v.lastError == "" && !v.settled {
		v.lastError = lv.domainError
	}
	for _, dl := range lv.deadLetters {
		v.addDeadLetter(dl)
	}
}

// addDeadLetter records a dead letter once per inbox, keeping the saved
// one (with its ID) over an unsaved copy.
func (v *domainView) addDeadLetter(dl store.DeadLetter) {
	if v.inboxes == nil {
		v.inboxes = make(map[string]bool)
	}
	a := ActivityDeadLetter{ID: dl.ID, Inbox: dl.Inbox, Status: dl.Status, Reason: dl.Reason, Attempts: dl.Attempts, CreatedAt: dl.CreatedAt}
	if v.inboxes[dl.Inbox] {
		if dl.ID != 0 {
			for i := range v.deadLetters {
				if v.deadLetters[i].Inbox == dl.Inbox {
					v.deadLetters[i] = a
				}
			}
		}
		return
	}
	v.inboxes[dl.Inbox] = true
	v.deadLetters = append(v.deadLetters, a)
}

// result classifies the activity on the domain.
func (v *domainView) result(dom string, enqueuedAt time.Time) DomainDelivery {
	d := DomainDelivery{Domain: dom, DomainStatus: v.status, Live: v.live}
	sort.SliceStable(v.deadLetters, func(i, j int) bool {
		a, b := v.deadLetters[i], v.deadLetters[j]
		return a.ID != 0 && (b.ID == 0 || a.ID < b.ID) // unsaved ones last
	})
	d.DeadLetters = v.deadLetters
	switch {
	case !v.known:
		d.State, d.Reason = DeliveryDomainUnknown, "the store does not know the domain (any more)"
	case v.settled && len(v.deadLetters) > 0:
		d.State, d.Reason = DeliveryDeadLettered, v.deadLetters[0].Reason
	case v.settled && v.status == store.StatusDead && v.lastSuccess.Before(enqueuedAt.Add(-clockSkew)):
		// Settled without a dead letter, by a dead domain that has
		// accepted nothing since the activity was enqueued (a success
		// would have revived it): its cursor was moved past it.
		d.State, d.Reason = DeliveryDomainDead, "never sent: the domain is dead and its cursor was moved past the activity"
	case v.settled && v.status == store.StatusSuspended && v.lastSuccess.Before(enqueuedAt.Add(-clockSkew)):
		// Likewise for a suspended domain, which is sent nothing.
		d.State, d.Reason = DeliverySuspended, "never sent: the domain is suspended"
	case v.settled:
		d.State = DeliveryDelivered
	default:
		d.Attempts, d.InFlight, d.LastError = v.attempts, v.inFlight, v.lastError
		d.NextAttemptAt = v.next
		if v.domainNext.After(d.NextAttemptAt) {
			d.NextAttemptAt = v.domainNext
		}
		switch v.status {
		case store.StatusDead:
			d.State, d.Reason = DeliveryDomainDead, "the domain is dead: the activity waits for a probe to revive it"
		case store.StatusPaused:
			d.State, d.Reason = DeliveryPaused, "the domain is paused: the activity is sent once it is resumed"
		case store.StatusSuspended:
			d.State, d.Reason = DeliverySuspended, "the domain is suspended: nothing is sent to it"
		default:
			d.State = DeliveryPending
		}
	}
	return d
}

// progressOf returns what saved progress says of activity id above the
// cursor: whether it is settled, and of its unsettled deliveries the most
// attempts made and the earliest retry time.
func progressOf(p *store.Progress, id int64) (settled bool, attempts int, next time.Time) {
	if p == nil {
		return false, 0, time.Time{}
	}
	for _, r := range p.Settled {
		if r.First <= id && id <= r.Last {
			return true, 0, time.Time{}
		}
	}
	for _, d := range p.Deliveries {
		if d.ActivityID != id || d.Settled {
			continue
		}
		attempts = max(attempts, d.Attempts)
		if !d.NextAttemptAt.IsZero() && (next.IsZero() || d.NextAttemptAt.Before(next)) {
			next = d.NextAttemptAt
		}
	}
	return false, attempts, next
}

// liveActivity is what a worker knows of one activity on its domain.
type liveActivity struct {
	status      store.DomainStatus
	lastSuccess time.Time
	domainNext  time.Time
	domainError string
	settled     bool
	attempts    int
	inFlight    bool
	next        time.Time
	lastError   string
	deadLetters []store.DeadLetter // recorded, not offered to the checkpointer yet
}

// activityAsk asks a worker about an activity.
type activityAsk struct {
	id    int64
	reply chan liveActivity // buffered: the worker never waits on it
}

// ask returns what the worker knows of activity id, or false when the
// worker has exited or ctx ended first, or when a Resolver asks (the
// worker may be the one waiting for it): the status then says what the
// store says.
func (w *worker) ask(ctx context.Context, id int64) (liveActivity, bool) {
	if fromResolver(ctx) {
		return liveActivity{}, false // the worker may be waiting for the caller
	}
	a := activityAsk{id: id, reply: make(chan liveActivity, 1)}
	select {
	case w.asks <- a:
	case <-w.done:
		return liveActivity{}, false
	case <-ctx.Done():
		return liveActivity{}, false
	}
	select {
	case lv := <-a.reply:
		return lv, true
	case <-ctx.Done():
		return liveActivity{}, false
	}
}

// answer tells what the worker knows of activity id. Called by the run
// goroutine.
func (w *worker) answer(id int64) liveActivity {
	st := &w.state
	lv := liveActivity{status: st.Status, lastSuccess: st.LastSuccessAt, domainNext: st.NextAttemptAt, domainError: st.LastError}
	for _, dl := range w.deadLetters {
		if dl.ActivityID == id {
			dl.Body = nil
			lv.deadLetters = append(lv.deadLetters, dl)
		}
	}
	switch {
	case id <= st.Cursor:
		lv.settled = true
	case id <= w.scanned:
		// Read: its deliveries are pending, or it had no inbox left here.
		lv.settled = true
		i := sort.Search(len(w.pending), func(i int) bool { return w.pending[i].entry.act.ID >= id })
		for ; i < len(w.pending) && w.pending[i].entry.act.ID == id; i++ {
			d := w.pending[i]
			if d.settled {
				continue
			}
			lv.settled = false
			lv.attempts = max(lv.attempts, d.attempts)
			lv.inFlight = lv.inFlight || d.inFlight
			if !d.nextAttempt.IsZero() && (lv.next.IsZero() || d.nextAttempt.Before(lv.next)) {
				lv.next = d.nextAttempt
			}
			if d.lastError != "" {
				lv.lastError = d.lastError
			}
		}
	default:
		// Not read yet: what the saved progress says of it, if anything
		// (the state's progress keeps what the worker has not reached).
		lv.settled, lv.attempts, lv.next = progressOf(st.Progress, id)
	}
	return lv
}

// unsavedDeadLetters returns the dead letters of activity id offered for
// saving, or being saved, and not in the store yet, for the named domains
// (for every domain when all is set).
func (c *checkpointer) unsavedDeadLetters(id int64, names []string, all bool) []store.DeadLetter {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []store.DeadLetter
	collect := func(o *offer) {
		if o == nil {
			return
		}
		for _, dl := range o.dls {
			if dl.ActivityID == id {
				dl.Body = nil
				out = append(out, dl)
			}
		}
	}
	if all {
		for _, o := range c.offers {
			collect(o)
		}
		for _, o := range c.inSave {
			collect(o)
		}
		return out
	}
	for _, n := range names {
		collect(c.offers[n])
		collect(c.inSave[n])
	}
	return out
}
