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
// addresses), sends them with up to Config.MaxInFlightPerDomain requests in
// flight, and advances the cursor over contiguous settled IDs. Two
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
// others go on, up to Config.MaxPendingPerDomain ahead of it, and becomes a
// dead letter after Config.MaxAttempts (counted across owners) once its
// domain accepted others. A domain failing continuously for
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
// Recipients are named three ways, combinable: explicit inbox URLs, audience
// keys that a Resolver turns into inboxes (at enqueue, to learn the domains
// they reach, which are registered with the activity), and all known
// domains. A domain's shared inbox, once known (SetSharedInbox,
// RegisterDomains), replaces its personal inboxes: one delivery per activity
// and domain.
package queue
