// Package queue delivers a fediverse server's outgoing ActivityPub
// activities: persistently, in order per remote domain, with retries and
// exponential backoff, in one process or in many sharing one store.
//
// Every activity is appended once to the store's log, however many
// recipients it has, with the domains it addresses. Each remote domain has a
// cursor: everything at or below it is settled (delivered, or recorded as a
// dead letter). A worker per domain reads the activities addressed to its
// domain (from a window shared by every domain of the process, indexed by
// domain, so an activity wakes only the workers of the domains it
// addresses), sends them with up to the domain's in-flight limit of requests
// in flight, and advances the cursor over contiguous settled IDs. Two
// activities with the same ordering key are never in flight to one domain
// at once, so a Delete never overtakes its Create nor an Undo what it
// undoes. By default the key is derived from the body so that an activity
// and every Undo, Accept, Reject, Update or Delete that embeds it or its
// object share one (see Activity.OrderingKey). Every per-activity cost follows the domains the activity
// addresses, not the domains the queue knows.
//
// A domain failing as a whole is retried with exponential backoff and
// jitter, one request at a time; a Retry-After sets the wait, up to
// Config.BackoffMax. A delivery failing on its own waits alone while the
// others go on (up to Config.MaxPendingPerDomain unsettled at once), and
// becomes a dead letter after Config.MaxAttempts (counted across owners)
// once its domain accepted others. A domain failing continuously for
// Config.DeadAfter is marked dead and probed every Config.ProbeInterval
// until a delivery succeeds. It never delays any other domain.
//
// States are saved in batched checkpoints (every Config.CheckpointInterval or
// Config.CheckpointDeliveries settled deliveries per domain) with the
// progress above each cursor, so a graceful stop, a lease handover or an
// admin change re-sends nothing, and a crash re-sends at most what settled
// since the last checkpoint. Domains are worked under leases: any number of
// processes can share one store, each domain worked by one of them at a
// time, and a process's domains are taken over within Config.LeaseTTL after
// it dies.
//
// # Requests in flight
//
// Each domain's in-flight limit adapts to the domain, between 1 and
// Config.MaxInFlightPerDomain (default 64; Config.DomainLimitFunc gives a
// domain its own maximum, and Config.MaxInFlight, default 256, caps all
// domains together). It is AIMD, as TCP's congestion window: it starts at
// InitialInFlightLimit and, per window of successes (as many as the
// limit) while at least half of it is in use, doubles (slow start, until
// the domain first pushes back) or grows by one, as long as the window's
// answers took on average at most twice the domain's best latency plus
// 1 ms; beyond twice plus 5 ms it loses one, down to where it started
// (requests that only queue, at the receiver or for this machine's CPU,
// are no reason for more); in between it holds. It shrinks by a quarter, at most once per window, when
// the domain pushes back: a 408, 429 or 502–504, a timeout, a connection
// error, or an answer slower than twice the best plus 50 ms. After a
// push-back it stays one below the level that was refused, and tries that
// level again only after 48 windows without one: a domain that takes three requests at once and
// answers 503 beyond settles at three, with one refused request in about
// 150. AIMD rather than a gradient limiter (Netflix's concurrency-limits)
// because fediverse servers say "too many" with 429 and 503 far more
// reliably than with latency: their latency is dominated by the network
// and by their own background jobs, not by a queue of our requests, so a
// limiter steered by the latency gradient alone would shrink at every
// slow answer and grow into the 503s. Latency is still a signal, with wide
// tolerance, for receivers that queue rather than refuse.
//
// One bottleneck latency alone cannot see is this process's own CPU: when
// many domains answer fast, every answer waits for the machine to run its
// handler, each domain's latency grows with all domains' requests in flight
// together, and one domain's extra request barely slows its own answers.
// So the queue watches how long its goroutines wait to run (the runtime's
// scheduler latencies, every 100 ms; Stats.CPUSaturated). While they wait,
// a limit grows only by one at a time (no slow start), judged on a window
// of answers to requests sent at it after a window of warm-up, and only if
// they took at most 1.25 times the best latency plus 1 ms; a window that
// took longer, or an answer slower than twice the best plus 50 ms, takes it
// back to InitialInFlightLimit, not below. A domain far away still grows
// (its answers stay near its best), a domain this machine is the
// bottleneck for keeps what a fixed limit gave it.
//
// A 429 or 503 without Retry-After to a request that overlapped others to
// the domain (in flight at the same time) means one too many, not a failing
// domain: the limit shrinks and the delivery is retried as soon as the
// limit allows, without backing the domain off. A domain that fails as a
// whole (its backoff set by a domain-level failure of a request alone, a
// Retry-After, or Config.DomainBackoffAfter failures in a row) is sent one
// request at a time until a success, whatever its limit; the failures that
// led there shrank the limit, and after the success the domain resumes at
// the limit they left. Config.FixedInFlight turns adaptation off: each
// domain gets its maximum, and a 429 or 503 backs it off as a whole.
//
// The global cap never blocks a worker: a domain that finds it reached
// joins a queue of waiting domains, and each freed slot goes to the next
// one in turn, so one domain with a huge backlog cannot starve the
// others. Stats and the status page show each domain's limit, its last
// changes and its best latency.
//
// Recipients are named three ways, combinable: explicit inbox URLs, audience
// keys that a Resolver turns into inboxes (at enqueue, to learn the domains
// they reach, which are registered with the activity), and all known
// domains. A domain's shared inbox, once known (SetSharedInbox,
// RegisterDomains), replaces its personal inboxes: one delivery per activity
// and domain. A 404 or 410 from a personal inbox means that recipient is
// gone: the delivery is dead-lettered and the Observer gets EventInboxGone,
// so the server can drop the follower.
//
// Queue.ActivityStatus tells where one activity stands on each domain it
// addresses, from any process; Queue.Stats and Queue.StatusHandler show the
// domains. An Observer receives every event from a goroutine of the queue's
// own: it cannot stall or crash delivery.
package queue
