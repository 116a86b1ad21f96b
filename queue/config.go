package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/apqueue/apqueue/internal/clock"
	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/signer"
)

// Defaults applied by New to zero fields of Config.
const (
	// MaxInFlightPerDomainDefault is the most requests in flight to one
	// domain: the upper bound of its adaptive limit.
	MaxInFlightPerDomainDefault = 64
	// MaxInFlightDefault caps the requests in flight across all domains.
	// Each request holds a connection and its buffers; without a cap, a
	// backlog to 1,000 domains put up to four requests in flight to each
	// (InitialInFlightLimit): 4,000 connections, and 50–80 MiB of heap
	// growth in the load generator's restart scenario, against about
	// 20 MiB with this cap, which also drained faster (README,
	// Performance).
	MaxInFlightDefault = 256
	// MaxBodyBytesDefault caps the size of an activity body (1 MiB).
	MaxBodyBytesDefault = 1 << 20
	// BackoffMinDefault is the delay after the first failure.
	BackoffMinDefault = 2 * time.Second
	// BackoffMaxDefault caps every backoff delay, Retry-After included.
	BackoffMaxDefault = time.Hour
	// BackoffJitterDefault spreads each delay by ±20%.
	BackoffJitterDefault = 0.2
	// MaxAttemptsDefault is how many times one delivery is tried, while its
	// domain accepts other deliveries, before it becomes a dead letter.
	MaxAttemptsDefault = 10
	// DomainBackoffAfterDefault is how many consecutive failures without a
	// success make the queue back off the whole domain even when the sender
	// did not blame the domain (a storm of 5xx answers). It is high enough
	// that random failures of single deliveries (a 20 % rate gives 8 in a
	// row about once in 400,000 attempts) do not throttle a healthy domain.
	DomainBackoffAfterDefault = 8
	// MaxPendingPerDomainDefault bounds the unsettled deliveries a domain
	// holds in memory past its cursor.
	MaxPendingPerDomainDefault = 1024
	// MaxPendingBytesPerDomainDefault bounds the memory of the activities a
	// domain's pending deliveries hold (8 MiB).
	MaxPendingBytesPerDomainDefault = 8 << 20
	// DeadAfterDefault is how long a domain must fail continuously before it
	// is marked dead.
	DeadAfterDefault = 3 * 24 * time.Hour
	// ProbeIntervalDefault is how often a dead domain is probed.
	ProbeIntervalDefault = 6 * time.Hour
	// CheckpointIntervalDefault is how often changed domain states are saved.
	CheckpointIntervalDefault = time.Second
	// CheckpointDeliveriesDefault saves early once a domain has settled this
	// many deliveries since the last checkpoint, bounding re-sends after a
	// crash.
	CheckpointDeliveriesDefault = 100
	// LeaseTTLDefault is how long a domain lease lasts without renewal: the
	// longest an orphaned domain waits for another process to take it over.
	LeaseTTLDefault = 30 * time.Second
	// PollIntervalDefault is how often the log is polled when no wake-up
	// arrives (from this process or, through the store, from another).
	PollIntervalDefault = 2 * time.Second
	// ReadBatchDefault is how many activities one read of the log returns.
	ReadBatchDefault = 256
	// WindowSizeDefault is how many recent activities the shared window keeps
	// in memory for the domains that are caught up.
	WindowSizeDefault = 4096
	// WindowBytesDefault bounds the shared window's memory (64 MiB).
	WindowBytesDefault = 64 << 20
	// ResolverTTLDefault is how long a Resolver's answer is cached.
	ResolverTTLDefault = time.Minute
	// SummaryIntervalDefault is how often the federation summary is logged.
	SummaryIntervalDefault = time.Minute
	// PruneIntervalDefault is how often settled activities are deleted.
	PruneIntervalDefault = time.Minute
	// DeadLetterRetentionDefault is how long dead letters are kept.
	DeadLetterRetentionDefault = 30 * 24 * time.Hour
	// DeadLetterCapDefault is how many dead letters are kept per domain.
	DeadLetterCapDefault = 10000
	// StopTimeoutDefault is how long Stop waits for in-flight requests when
	// its context has no deadline.
	StopTimeoutDefault = 10 * time.Second
	// StoreTimeoutDefault bounds each call the queue makes to the store in
	// the background.
	StoreTimeoutDefault = 30 * time.Second
	// IdempotencyWindowDefault is how long an idempotency key is
	// remembered.
	IdempotencyWindowDefault = 24 * time.Hour
	// ObserverBufferDefault is how many events may wait for the Observer
	// before the workers wait for room (or, while it is blocked, events
	// are dropped).
	ObserverBufferDefault = 8192
)

// Config configures a Queue. A nil *Config means all defaults; zero fields
// take the default named in their documentation.
type Config struct {
	// MaxInFlightPerDomain is the most requests in flight to one domain.
	// Each domain's limit adapts between 1 and it, from the domain's
	// answers (see the package documentation); with FixedInFlight, it is
	// the limit. 1 means strictly serial. While a domain is failing it
	// drops to one. Default MaxInFlightPerDomainDefault.
	MaxInFlightPerDomain int
	// FixedInFlight turns the adaptive limit off: every healthy domain gets
	// MaxInFlightPerDomain requests in flight (or what DomainLimitFunc
	// gives it), as a 429 or 503 backs the whole domain off. Default
	// false: the limit adapts.
	FixedInFlight bool
	// DomainLimitFunc, when set, gives a domain a maximum of its own in
	// place of MaxInFlightPerDomain: more for a big server, 1 for a fragile
	// one that takes one request at a time. It is called when this process
	// takes the domain (so a change applies from the next lease); 0 or less
	// means MaxInFlightPerDomain. It must be quick. It runs outside the
	// queue's lock, so it may read the Queue and change domains (Stats,
	// Pause), but not Stop or Drain it. Default: none.
	DomainLimitFunc func(domain string) int
	// MaxInFlight caps the requests in flight across all domains, so that
	// the connections and memory a process uses stay bounded however many
	// domains have work; a negative value means no cap. No domain's limit
	// exceeds it. A domain that finds the cap reached waits for a slot
	// without holding up anything else, and the slots freed go to the
	// waiting domains in turn, one each, so that one domain with a huge
	// backlog cannot starve the others. Default MaxInFlightDefault.
	MaxInFlight int
	// MaxBodyBytes caps the size of an activity body. Default
	// MaxBodyBytesDefault.
	MaxBodyBytes int
	// AllowHTTP accepts plain http inbox URLs at enqueue, for a sender of
	// the caller's own. With the default sender, set Config.HTTP.AllowHTTP
	// instead, which lets that sender deliver them too; AllowHTTP without
	// it is an error from New. Default false: only https.
	AllowHTTP bool

	// BackoffMin is the delay after the first failure; each further failure
	// doubles it. Default BackoffMinDefault.
	BackoffMin time.Duration
	// BackoffMax caps every delay, including a receiver's Retry-After.
	// Default BackoffMaxDefault.
	BackoffMax time.Duration
	// BackoffJitter spreads delays by ± this fraction, in [0, 1). Negative
	// disables jitter. Default BackoffJitterDefault.
	BackoffJitter float64
	// MaxAttempts bounds the attempts of one delivery that keeps failing while
	// its domain is otherwise healthy; it then becomes a dead letter. Default
	// MaxAttemptsDefault.
	MaxAttempts int
	// DomainBackoffAfter is how many consecutive failures back off the whole
	// domain even when the sender did not blame the domain. Default
	// DomainBackoffAfterDefault.
	DomainBackoffAfter int
	// MaxPendingPerDomain bounds how many unsettled deliveries a domain holds
	// past its cursor: behind deliveries that keep failing, the domain reads
	// on while fewer are unsettled (an activity's inboxes on the domain are
	// read together, so one with more is held whole). What settled past the
	// cursor leaves memory but for a range of IDs next to each unsettled
	// activity. This progress is saved with each checkpoint, so the bound is
	// one of memory and of the saved progress's size, not of re-sends.
	// Default MaxPendingPerDomainDefault.
	MaxPendingPerDomain int
	// MaxPendingBytesPerDomain bounds the approximate memory of the
	// activities a domain's pending deliveries hold. Default
	// MaxPendingBytesPerDomainDefault.
	MaxPendingBytesPerDomain int
	// DeadAfter is how long a domain must fail continuously before it is
	// marked dead. Default DeadAfterDefault.
	DeadAfter time.Duration
	// ProbeInterval is how often a dead domain is tried again. Default
	// ProbeIntervalDefault.
	ProbeInterval time.Duration

	// CheckpointInterval is how often changed domain states are saved, in one
	// store call for all domains. Default CheckpointIntervalDefault.
	CheckpointInterval time.Duration
	// CheckpointDeliveries triggers an early checkpoint once a domain has
	// settled this many deliveries since the last one, and bounds what a
	// crash re-sends: a domain that has settled this many since its last
	// saved checkpoint sends nothing more until that checkpoint is saved.
	// Default CheckpointDeliveriesDefault.
	CheckpointDeliveries int
	// LeaseTTL is the lifetime of a domain lease; leases are renewed every
	// third of it. Default LeaseTTLDefault.
	LeaseTTL time.Duration
	// PollInterval is how often the log is read when no wake-up arrives.
	// Default PollIntervalDefault.
	PollInterval time.Duration
	// ReadBatch is how many activities one read of the log returns. Default
	// ReadBatchDefault.
	ReadBatch int
	// WindowSize is how many recent activities are kept in memory and shared
	// by every caught-up domain of this process. Default WindowSizeDefault.
	WindowSize int
	// SummaryInterval is how often the queue logs, at Info level, the
	// domains that are behind or failing (with the causes) and a one-line
	// total. Negative turns the summary off. Default SummaryIntervalDefault.
	SummaryInterval time.Duration
	// PruneInterval is how often activities settled by every live domain are
	// deleted from the log. Negative disables pruning (another process, or
	// the operator, does it). Default PruneIntervalDefault.
	PruneInterval time.Duration
	// DeadLetterRetention is how long dead letters are kept (each holds a
	// copy of its activity's body); the retention job that runs every
	// PruneInterval deletes older ones, when the store implements
	// store.DeadLetterPruner. Negative keeps them by age. Default
	// DeadLetterRetentionDefault.
	DeadLetterRetention time.Duration
	// DeadLetterCap is how many dead letters are kept per domain, the
	// newest; the retention job deletes older ones beyond it (an activity
	// for all domains can leave one per domain). Negative means no cap.
	// Default DeadLetterCapDefault.
	DeadLetterCap int
	// WindowBytes bounds the approximate memory of the shared window (bodies
	// and explicit inbox lists); the oldest activities leave it first.
	// Default WindowBytesDefault.
	WindowBytes int
	// StopTimeout bounds how long Stop waits for in-flight requests when its
	// context has no deadline. Default StopTimeoutDefault.
	StopTimeout time.Duration
	// StoreTimeout bounds each call the queue makes to the store in the
	// background to deliver: reads of the log (the window's and the
	// catch-up's), checkpoints, lease calls (a renewal within a third of
	// LeaseTTL too, at least a second), a worker's reload of its domain.
	// One that does not answer is abandoned and retried, as a failed call
	// is: a connection that died without a word (a failover that sends no
	// reset) would otherwise hold it until TCP gives up, many minutes
	// later. It must exceed the slowest such call the store makes when
	// healthy. The retention job's calls get the longer of it and
	// PruneInterval (a prune cut short keeps what it deleted, and the next
	// one goes on); Stop's own calls are not bounded by it. Default
	// StoreTimeoutDefault.
	StoreTimeout time.Duration

	// Resolver turns audience keys into inboxes. Required only for activities
	// with Audiences.
	Resolver Resolver
	// ResolverTTL is how long a Resolver answer is cached. Default
	// ResolverTTLDefault.
	ResolverTTL time.Duration

	// Keys provides the actors' signing keys for the HTTP sender that New
	// builds when it is given no sender: the default sender signs with a
	// signer.New(Keys, nil). Give Keys, or a Signer in HTTP, or set
	// HTTP.Unsigned; more than one of them is an error, and so are Keys
	// with a sender of the caller's own. Default: nil.
	Keys signer.KeySource
	// HTTP configures the default sender, the HTTP sender that New builds
	// when it is given none, in one place: TLS roots (TLSClientConfig),
	// name resolution (Resolver), loopback and private addresses
	// (AllowLoopback, AllowPrefixes), plain http inboxes (AllowHTTP, which
	// the queue then accepts at enqueue too), signing (Signer, or Unsigned
	// for tests; or Config.Keys), timeouts, User-Agent and the signature
	// policy. Stop closes that sender's idle connections. Giving HTTP
	// together with a sender of the caller's own is an error. Default:
	// nil, the sender's defaults (https only, public addresses only,
	// draft-cavage first, the other scheme when refused).
	HTTP *sender.HTTPConfig

	// Observer receives delivery and domain events, for metrics, from a
	// goroutine of the queue's own (see Observer). Default: none.
	Observer Observer
	// ObserverBuffer is how many events may wait for the Observer. Beyond
	// it a worker waits for room while the Observer makes progress, and
	// events are dropped and counted (Stats.ObserverDropped) while it is
	// blocked (see Observer). Default ObserverBufferDefault.
	ObserverBuffer int

	// OwnerID names this process in leases. Default: host name, process ID
	// and a random suffix.
	OwnerID string
	// Logger receives the queue's logs. Default slog.Default().
	Logger *slog.Logger
	// IdempotencyWindow is how long the store remembers an
	// Activity.IdempotencyKey: an enqueue with a key enqueued within the
	// window returns the first activity's ID and writes nothing. The
	// retention job deletes older keys. Default IdempotencyWindowDefault.
	IdempotencyWindow time.Duration

	// clock drives delivery scheduling; tests set a fake one.
	clock clock.Clock
	// cpuSaturated, when set, replaces the CPU gauge (Queue.cpuSaturated):
	// tests set it so that the limits they watch do not depend on the
	// machine's load.
	cpuSaturated func() bool
}

// withDefaults returns a copy of c (or of the zero Config) with defaults
// applied.
func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	setDefault(&out.MaxInFlightPerDomain, MaxInFlightPerDomainDefault)
	setDefault(&out.MaxInFlight, MaxInFlightDefault)
	setDefault(&out.MaxBodyBytes, MaxBodyBytesDefault)
	setDefault(&out.BackoffMin, BackoffMinDefault)
	setDefault(&out.BackoffMax, BackoffMaxDefault)
	if out.BackoffJitter == 0 {
		out.BackoffJitter = BackoffJitterDefault
	} else if out.BackoffJitter < 0 {
		out.BackoffJitter = 0
	}
	setDefault(&out.MaxAttempts, MaxAttemptsDefault)
	setDefault(&out.DomainBackoffAfter, DomainBackoffAfterDefault)
	setDefault(&out.DeadAfter, DeadAfterDefault)
	setDefault(&out.ProbeInterval, ProbeIntervalDefault)
	setDefault(&out.CheckpointInterval, CheckpointIntervalDefault)
	setDefault(&out.CheckpointDeliveries, CheckpointDeliveriesDefault)
	setDefault(&out.LeaseTTL, LeaseTTLDefault)
	setDefault(&out.PollInterval, PollIntervalDefault)
	setDefault(&out.ReadBatch, ReadBatchDefault)
	setDefault(&out.WindowSize, WindowSizeDefault)
	setDefault(&out.WindowBytes, WindowBytesDefault)
	setDefault(&out.StopTimeout, StopTimeoutDefault)
	setDefault(&out.StoreTimeout, StoreTimeoutDefault)
	setDefault(&out.MaxPendingPerDomain, MaxPendingPerDomainDefault)
	setDefault(&out.MaxPendingBytesPerDomain, MaxPendingBytesPerDomainDefault)
	setDefault(&out.PruneInterval, PruneIntervalDefault)
	setDefault(&out.DeadLetterRetention, DeadLetterRetentionDefault)
	setDefault(&out.DeadLetterCap, DeadLetterCapDefault)
	setDefault(&out.SummaryInterval, SummaryIntervalDefault)
	setDefault(&out.ResolverTTL, ResolverTTLDefault)
	setDefault(&out.IdempotencyWindow, IdempotencyWindowDefault)
	setDefault(&out.ObserverBuffer, ObserverBufferDefault)
	if out.OwnerID == "" {
		out.OwnerID = defaultOwnerID()
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.clock == nil {
		out.clock = clock.Real{}
	}
	return out
}

// validate reports every invalid field of a defaulted Config.
func (c *Config) validate() error {
	var errs []error
	positive := func(name string, ok bool) {
		if !ok {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	positive("MaxInFlightPerDomain", c.MaxInFlightPerDomain > 0)
	positive("MaxBodyBytes", c.MaxBodyBytes > 0)
	positive("BackoffMin", c.BackoffMin > 0)
	positive("MaxAttempts", c.MaxAttempts > 0)
	positive("DomainBackoffAfter", c.DomainBackoffAfter > 0)
	positive("DeadAfter", c.DeadAfter > 0)
	positive("ProbeInterval", c.ProbeInterval > 0)
	positive("CheckpointInterval", c.CheckpointInterval > 0)
	positive("CheckpointDeliveries", c.CheckpointDeliveries > 0)
	positive("PollInterval", c.PollInterval > 0)
	positive("ReadBatch", c.ReadBatch > 0)
	positive("StopTimeout", c.StopTimeout > 0)
	positive("StoreTimeout", c.StoreTimeout > 0)
	positive("WindowBytes", c.WindowBytes > 0)
	positive("ResolverTTL", c.ResolverTTL > 0)
	positive("MaxPendingPerDomain", c.MaxPendingPerDomain > 0)
	positive("MaxPendingBytesPerDomain", c.MaxPendingBytesPerDomain > 0)
	positive("IdempotencyWindow", c.IdempotencyWindow > 0)
	positive("ObserverBuffer", c.ObserverBuffer > 0)
	if c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("BackoffMax (%v) must not be below BackoffMin (%v)", c.BackoffMax, c.BackoffMin))
	}
	if c.BackoffJitter >= 1 {
		errs = append(errs, fmt.Errorf("BackoffJitter must be below 1, got %v", c.BackoffJitter))
	}
	if c.LeaseTTL < 3*time.Millisecond {
		errs = append(errs, fmt.Errorf("LeaseTTL must be at least 3ms, got %v", c.LeaseTTL))
	}
	if c.WindowSize < c.ReadBatch {
		errs = append(errs, fmt.Errorf("WindowSize (%d) must be at least ReadBatch (%d)", c.WindowSize, c.ReadBatch))
	}
	if len(errs) > 0 {
		return fmt.Errorf("queue: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// domainLimit is the most requests in flight to dom: DomainLimitFunc's
// answer or MaxInFlightPerDomain, within the global cap.
func (q *Queue) domainLimit(dom string) int {
	upper := q.cfg.MaxInFlightPerDomain
	if f := q.cfg.DomainLimitFunc; f != nil {
		if n := f(dom); n > 0 {
			upper = n
		}
	}
	if q.cfg.MaxInFlight > 0 {
		upper = min(upper, q.cfg.MaxInFlight)
	}
	return upper
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

func defaultOwnerID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "apqueue"
	}
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatUint(uint64(time.Now().UnixNano())&0xffffff, 36)
}
