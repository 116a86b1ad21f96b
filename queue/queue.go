package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/apqueue/apqueue/internal/backoff"
	"github.com/apqueue/apqueue/internal/domain"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
	"github.com/apqueue/apqueue/store"
)

// Queue delivers activities to remote inboxes: persistently, in order per
// domain, with retries, backoff and leases so that many processes can share
// one store. Create it with New, Start it, Enqueue activities, and Stop it
// to save every cursor. It is safe for concurrent use.
type Queue struct {
	store    store.Store
	sender   sender.Sender
	ownHTTP  *sender.HTTP // the default sender New built, closed by Stop
	cfg      Config
	logger   *slog.Logger
	backoff  backoff.Policy
	resolver *resolverCache
	events   *notifier // nil without an Observer

	window      *window
	slots       *slots    // the global cap on requests in flight; nil when none
	cpu         *cpuGauge // whether this process is short of CPU; nil with fixed limits
	checkpoints *checkpointer
	leases      *leaseKeeper

	lifecycle sync.Mutex // serialises Start and Stop
	running   bool
	loopsStop context.CancelFunc // ends the background loops
	hardStop  context.CancelFunc // ends every worker at once
	workCtx   context.Context    // parent of every worker
	loops     sync.WaitGroup
	workerWG  sync.WaitGroup
	releasing sync.Mutex     // held while domains are being handed back
	releases  sync.WaitGroup // background releases, waited for by Stop

	quiet quietSignal // wakes Drain calls

	mu      sync.Mutex
	workers map[string]*worker
	noticed map[string]bool // domains seen in the log while not worked here
}

// New returns a queue that keeps its state in st and delivers with snd. A
// nil snd means the default sender: the HTTP sender of package sender,
// configured by cfg.HTTP and signing with cfg.Keys (see Config.HTTP). A
// nil cfg means all defaults; an invalid or contradictory cfg is an error.
func New(st store.Store, snd sender.Sender, cfg *Config) (*Queue, error) {
	if st == nil {
		return nil, errors.New("queue: nil store")
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	var ownHTTP *sender.HTTP
	if snd == nil {
		var err error
		if ownHTTP, err = defaultSender(&c); err != nil {
			return nil, err
		}
		snd = ownHTTP
	} else if c.Keys != nil || c.HTTP != nil {
		return nil, errors.New("queue: Config.Keys and Config.HTTP configure the default sender, but New was given a sender: configure that sender instead")
	}
	q := &Queue{
		store:   st,
		sender:  snd,
		ownHTTP: ownHTTP,
		cfg:     c,
		logger:  c.Logger,
		backoff: backoff.Policy{Min: c.BackoffMin, Max: c.BackoffMax, Jitter: c.BackoffJitter},
		workers: make(map[string]*worker),
		noticed: make(map[string]bool),
	}
	if c.MaxInFlight > 0 {
		q.slots = &slots{cap: c.MaxInFlight}
	}
	if !c.FixedInFlight && c.cpuSaturated == nil {
		q.cpu = newCPUGauge()
	}
	if c.Observer != nil {
		q.events = newNotifier(c.Observer, c.ObserverBuffer, c.Logger)
	}
	if c.Resolver != nil {
		q.resolver = newResolverCache(c.Resolver, c.ResolverTTL, c.clock, q.checkResolved)
	}
	q.window = newWindow(st, c.ReadBatch, c.WindowSize, c.WindowBytes, c.StoreTimeout, c.Logger)
	q.window.catchUp.clock = c.clock
	q.window.arrived = q.noticeDomains
	q.window.moved = q.quiet.notify
	q.checkpoints = newCheckpointer(q)
	q.leases = newLeaseKeeper(q)
	return q, nil
}

// defaultSender builds the HTTP sender that c.HTTP configures, signing
// with c.Keys or c.HTTP.Signer, or unsigned when c.HTTP.Unsigned says so;
// contradictory settings are an error. It makes c accept plain http
// inboxes at enqueue exactly when the sender delivers them.
func defaultSender(c *Config) (*sender.HTTP, error) {
	var hc sender.HTTPConfig
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	switch {
	case c.Keys != nil && hc.Signer != nil:
		return nil, errors.New("queue: both Config.Keys and Config.HTTP.Signer sign the default sender's requests: give one")
	case c.Keys != nil && hc.Unsigned:
		return nil, errors.New("queue: Config.HTTP.Unsigned contradicts Config.Keys: give one")
	case c.Keys == nil && hc.Signer == nil && !hc.Unsigned:
		return nil, errors.New("queue: no sender given and nothing to sign the default sender's requests with: set Config.Keys (or Config.HTTP.Signer), or Config.HTTP.Unsigned for unsigned requests")
	}
	if c.AllowHTTP && !hc.AllowHTTP {
		return nil, errors.New("queue: Config.AllowHTTP accepts plain http inboxes that the default sender refuses: set Config.HTTP.AllowHTTP instead")
	}
	c.AllowHTTP = hc.AllowHTTP
	if hc.MaxIdleConnsPerHost == 0 {
		// Keep a connection for every request a domain may have in flight,
		// so that a domain whose limit grew past the sender's default does
		// not dial and close connections on every request.
		hc.MaxIdleConnsPerHost = max(c.MaxInFlightPerDomain, sender.MaxIdleConnsPerHostDefault)
	}
	if c.Keys != nil {
		sig, err := signer.New(c.Keys, nil)
		if err != nil {
			return nil, fmt.Errorf("queue: signer: %w", err)
		}
		hc.Signer = sig
	}
	h, err := sender.NewHTTP(&hc)
	if err != nil {
		return nil, fmt.Errorf("queue: HTTP sender: %w", err)
	}
	return h, nil
}

// Start begins delivering: it takes leases on domains, starts their workers
// and listens for new activities. It returns once the queue runs; ctx only
// bounds the start-up reads.
func (q *Queue) Start(ctx context.Context) error {
	q.lifecycle.Lock()
	defer q.lifecycle.Unlock()
	if q.running {
		return ErrStarted
	}
	if err := q.window.init(ctx); err != nil {
		return fmt.Errorf("queue: start: %w", err)
	}
	loopCtx, loopsStop := context.WithCancel(context.WithoutCancel(ctx))
	workCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	q.loopsStop, q.hardStop = loopsStop, hardStop
	q.mu.Lock()
	q.workers = make(map[string]*worker)
	q.mu.Unlock()
	q.workCtx = workCtx
	q.running = true

	q.goLoop(func() { q.window.run(loopCtx, q.cfg.PollInterval) })
	q.goLoop(func() { q.checkpoints.run(loopCtx) })
	q.goLoop(func() { q.leases.run(loopCtx) })
	q.goLoop(func() { q.listen(loopCtx) })
	if q.cpu != nil {
		q.goLoop(func() { q.cpu.run(loopCtx) })
	}
	if q.resolver != nil {
		q.goEvery(loopCtx, q.cfg.ResolverTTL, func(context.Context) { q.resolver.sweep() })
	}
	if q.cfg.PruneInterval > 0 {
		q.goEvery(loopCtx, q.cfg.PruneInterval, q.prune)
	}
	if q.cfg.SummaryInterval > 0 {
		q.goEvery(loopCtx, q.cfg.SummaryInterval, q.summarize)
	}
	q.logger.InfoContext(ctx, "apqueue: queue started", slog.String("owner", q.cfg.OwnerID))
	return nil
}

func (q *Queue) goLoop(f func()) {
	q.loops.Add(1)
	go func() {
		defer q.loops.Done()
		f()
	}()
}

// cpuSaturated reports whether this process is short of CPU (see
// cpuGauge): the adaptive limits then grow only on answers as fast as the
// domain's best.
func (q *Queue) cpuSaturated() bool {
	if q.cfg.cpuSaturated != nil {
		return q.cfg.cpuSaturated()
	}
	return q.cpu != nil && q.cpu.saturated()
}

// listenHealthy is how long a call of the store's Listen must have lasted
// for the next failure to count as the first one again.
const listenHealthy = 30 * time.Second

// listen wakes the window whenever the store reports an append, by this
// process or another; it retries after errors and gives up only when the
// store cannot notify, leaving polling to the window. The wait before a
// retry follows the delivery backoff, capped at readRetryMax and at the
// poll interval: while nobody listens, appends are seen only by polling.
func (q *Queue) listen(ctx context.Context) {
	failures := 0
	for {
		started := time.Now()
		err := q.store.Listen(ctx, q.window.wake)
		if ctx.Err() != nil || errors.Is(err, store.ErrNotifyUnsupported) {
			return
		}
		if time.Since(started) > listenHealthy {
			failures = 0
		}
		failures++
		delay := min(q.backoff.Delay(failures, 0), readRetryMax, q.cfg.PollInterval)
		q.logger.WarnContext(ctx, "apqueue: listening for new activities failed; polling meanwhile", slog.Any("error", err), slog.Duration("retry_in", delay))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		// Appends made while nobody listened were not notified.
		q.window.wake()
	}
}

// goEvery runs f every interval in a background loop until ctx ends.
func (q *Queue) goEvery(ctx context.Context, interval time.Duration, f func(context.Context)) {
	q.goLoop(func() {
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				f(ctx)
			}
		}
	})
}

// Stop stops dispatching, waits for in-flight requests until ctx ends (or
// Config.StopTimeout when ctx has no deadline), cancels those still running,
// saves every domain's state and releases the leases. The queue can be
// started again afterwards.
func (q *Queue) Stop(ctx context.Context) error {
	q.lifecycle.Lock()
	defer q.lifecycle.Unlock()
	if !q.running {
		return ErrNotStarted
	}
	q.running = false
	q.loopsStop()
	q.loops.Wait()
	q.releases.Wait()

	workers := q.workerList()
	waitCtx, cancel := q.stopContext(ctx)
	q.drain(waitCtx, workers)
	cancel()

	saveCtx, cancelSave := context.WithTimeout(context.WithoutCancel(ctx), q.cfg.StopTimeout)
	defer cancelSave()
	var errs []error
	if err := q.checkpoints.save(saveCtx); err != nil {
		errs = append(errs, fmt.Errorf("saving domain states: %w", err))
	}
	leases := make([]store.Lease, 0, len(workers))
	for _, w := range workers {
		leases = append(leases, w.lease())
	}
	if len(leases) > 0 {
		if err := q.store.ReleaseLeases(saveCtx, q.cfg.OwnerID, leases); err != nil {
			errs = append(errs, fmt.Errorf("releasing leases: %w", err))
		}
	}
	q.hardStop()
	q.workerWG.Wait()
	q.mu.Lock()
	q.workers = make(map[string]*worker)
	q.mu.Unlock()
	if q.ownHTTP != nil {
		q.ownHTTP.Close() // idle connections; a restart opens new ones
	}
	if q.events != nil {
		flushCtx, cancelFlush := q.stopContext(ctx)
		q.events.flush(flushCtx) // the workers' last events
		cancelFlush()
	}
	q.logger.InfoContext(ctx, "apqueue: queue stopped", slog.String("owner", q.cfg.OwnerID), slog.Int("domains", len(workers)))
	if len(errs) > 0 {
		return fmt.Errorf("queue: stop: %w", errors.Join(errs...))
	}
	return nil
}

// stopContext bounds the wait for in-flight requests.
func (q *Queue) stopContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, q.cfg.StopTimeout)
}

// drain stops the workers, waits for their in-flight requests until ctx
// ends, then cancels what is left and waits for the workers to exit.
func (q *Queue) drain(ctx context.Context, workers []*worker) {
	for _, w := range workers {
		w.stop()
	}
	for _, w := range workers {
		select {
		case <-w.done:
			continue
		case <-ctx.Done():
		}
		// Time is up: cancel every worker (its requests, and any resolver
		// or store call it waits on), then wait for them to exit.
		for _, w := range workers {
			w.cancel()
		}
		break
	}
	for _, w := range workers {
		<-w.done
	}
}

// kill ends the queue as a crash would: no checkpoint, no lease release.
// Tests use it to prove what survives a crash.
func (q *Queue) kill() {
	q.lifecycle.Lock()
	defer q.lifecycle.Unlock()
	if !q.running {
		return
	}
	q.running = false
	q.loopsStop()
	q.hardStop()
	q.loops.Wait()
	q.releases.Wait()
	q.workerWG.Wait()
}

// startWorker starts a worker for a domain this process just leased.
func (q *Queue) startWorker(st store.DomainState, leaseUntil time.Time) {
	upper := q.domainLimit(st.Domain) // outside q.mu: DomainLimitFunc may call the queue
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.workers[st.Domain]; ok || q.workCtx == nil || q.workCtx.Err() != nil {
		return
	}
	w := newWorker(q, q.workCtx, st, leaseUntil, upper)
	q.window.join(w)
	w.leaseTimer = time.AfterFunc(time.Until(leaseUntil), func() { q.drop(w, "lease expired before it was renewed") })
	q.workers[st.Domain] = w
	q.workerWG.Add(1)
	go func() {
		defer q.workerWG.Done()
		w.run()
	}()
}

// dropWorker ends the worker of a domain whose lease was lost, at once: its
// in-flight requests are cancelled and nothing more of it is saved.
func (q *Queue) dropWorker(dom, reason string) {
	q.mu.Lock()
	w := q.workers[dom]
	q.mu.Unlock()
	if w != nil {
		q.drop(w, reason)
	}
}

// drop ends w at once, and forgets it if it is still the domain's worker.
func (q *Queue) drop(w *worker, reason string) {
	q.mu.Lock()
	current := q.workers[w.domain] == w
	if current {
		delete(q.workers, w.domain)
	}
	q.mu.Unlock()
	if w.ctx.Err() != nil {
		return // already ended
	}
	w.cancel()
	q.logger.WarnContext(context.Background(), "apqueue: stopped working domain", slog.String("domain", w.domain), slog.String("reason", reason))
}

// releaseExcess hands n domains back to the store for other processes, in
// the background so that lease renewals of the other domains go on: the
// workers finish their in-flight requests, their state is saved, then their
// leases are released. One release runs at a time; Stop waits for it.
func (q *Queue) releaseExcess(n int) {
	if !q.releasing.TryLock() {
		return
	}
	q.mu.Lock()
	var give []*worker
	for dom, w := range q.workers {
		if len(give) == n {
			break
		}
		give = append(give, w)
		delete(q.workers, dom)
	}
	q.mu.Unlock()
	q.releases.Add(1)
	go func() {
		defer q.releases.Done()
		defer q.releasing.Unlock()
		q.release(give)
	}()
}

func (q *Queue) release(give []*worker) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*q.cfg.StopTimeout)
	defer cancel()
	waitCtx, cancelWait := context.WithTimeout(ctx, q.cfg.StopTimeout)
	q.drain(waitCtx, give)
	cancelWait()
	if err := q.checkpoints.save(ctx); err != nil {
		q.logger.WarnContext(ctx, "apqueue: saving released domains failed", slog.Any("error", err))
		return // the leases expire; the next owner re-sends what was not saved
	}
	leases := make([]store.Lease, len(give))
	for i, w := range give {
		leases[i] = w.lease()
	}
	if err := q.store.ReleaseLeases(ctx, q.cfg.OwnerID, leases); err != nil {
		q.logger.WarnContext(ctx, "apqueue: releasing leases failed", slog.Any("error", err))
	}
}

func (q *Queue) workerList() []*worker {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]*worker, 0, len(q.workers))
	for _, w := range q.workers {
		out = append(out, w)
	}
	return out
}

func (q *Queue) workerCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.workers)
}

// checkResolved validates an inbox from the Resolver and returns it in
// normal form with its domain. An unusable one is logged; when it names a
// domain, that domain's worker records a dead letter for it (see
// audienceAnswer.refused).
func (q *Queue) checkResolved(raw string) (inbox, dom string, err error) {
	inbox, dom, err = q.checkInbox(raw)
	if err != nil {
		q.logger.Warn("apqueue: resolver returned an unusable inbox", slog.String("inbox", raw), slog.Any("error", err))
	}
	return inbox, dom, err
}

// InvalidateAudience drops this process's cached Resolver answer for an
// audience, so that activities enqueued from now on use a fresh answer. An
// empty audience drops every cached answer. The cache is per process: a
// process that enqueues for an audience whose followers changed in another
// process learns of it within Config.ResolverTTL, so call it in every
// enqueuing process (or keep ResolverTTL short) where a new follower must
// be reached at once.
func (q *Queue) InvalidateAudience(audience string) {
	if q.resolver != nil {
		q.resolver.invalidate(audience)
	}
}

// AddDomains makes domains known to the queue (host[:port]), with their
// cursor at the log's head, so that activities addressed to all domains
// reach them from now on. Domains reached by an activity's inboxes or
// audiences need no registration: they are registered with it.
func (q *Queue) AddDomains(ctx context.Context, domains ...string) error {
	regs := make([]store.DomainRegistration, len(domains))
	for i, d := range domains {
		regs[i] = store.DomainRegistration{Domain: d}
	}
	return q.RegisterDomains(ctx, regs)
}

// RegisterDomains makes many domains known in one store call, with their
// shared inboxes where given, as a server does at start with the domains it
// knows. A registration may name only the shared inbox: its domain is the
// inbox's. Known domains keep their cursor; a new shared inbox replaces the
// old one. Invalid input is an error and registers nothing.
func (q *Queue) RegisterDomains(ctx context.Context, domains []store.DomainRegistration) error {
	regs := make([]store.DomainRegistration, 0, len(domains))
	for _, r := range domains {
		var reg store.DomainRegistration
		if r.SharedInbox != "" {
			inbox, dom, err := q.checkInbox(r.SharedInbox)
			if err != nil {
				return fmt.Errorf("queue: register domains: shared inbox: %w", err)
			}
			reg = store.DomainRegistration{Domain: dom, SharedInbox: inbox}
		}
		if r.Domain != "" {
			n, err := domain.Normalize(r.Domain, "https")
			if err != nil {
				return fmt.Errorf("queue: register domain %q: %w", r.Domain, err)
			}
			if reg.Domain != "" && reg.Domain != n {
				return fmt.Errorf("queue: register domain %q: shared inbox %q is on %s", r.Domain, r.SharedInbox, reg.Domain)
			}
			reg.Domain = n
		}
		if reg.Domain == "" {
			return errors.New("queue: register domains: a registration names neither a domain nor a shared inbox")
		}
		regs = append(regs, reg)
	}
	if len(regs) == 0 {
		return nil
	}
	if err := q.store.RegisterDomains(ctx, regs); err != nil {
		return fmt.Errorf("queue: register domains: %w", err)
	}
	q.mu.Lock()
	var changed []*worker
	for _, r := range regs {
		if w := q.workers[r.Domain]; w != nil && r.SharedInbox != "" {
			changed = append(changed, w)
		}
	}
	q.mu.Unlock()
	for _, w := range changed {
		w.reload() // an owner elsewhere learns it at its next renewal
	}
	q.leases.kick()
	return nil
}

// SetSharedInbox records the shared inbox of its domain (registering the
// domain if new). Deliveries to that domain read from then on go to the
// shared inbox, once per activity, instead of to each personal inbox.
func (q *Queue) SetSharedInbox(ctx context.Context, inboxURL string) error {
	return q.RegisterDomains(ctx, []store.DomainRegistration{{SharedInbox: inboxURL}})
}
