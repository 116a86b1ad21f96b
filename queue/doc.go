// Package queue delivers a fediverse server's outgoing ActivityPub
// activities: persistently, in order per remote domain, with retries and
// exponential backoff, in one process or in many sharing one store.
//
// Every activity is appended once to the store's log, however many
// recipients it has. Each remote domain has a cursor: everything at or below
// it is settled (delivered, or recorded as a dead letter). A worker per
// domain reads the log after its cursor (from a window shared by every
// caught-up domain of the process), sends what is addressed to its domain
// with up to Config.MaxInFlightPerDomain requests in flight, and advances
// the cursor over contiguous settled IDs. Two activities with the same
// ordering key are never in flight to one domain at once, so a Delete never
// overtakes its Create nor an Undo what it undoes. By default the key is
// derived from the body so that an activity and every Undo, Accept, Reject,
// Update or Delete that embeds it or its object share one (see
// Activity.OrderingKey).
//
// A failing domain is retried with exponential backoff and jitter, one
// request at a time, honouring Retry-After up to Config.BackoffMax; it never
// delays any other domain. A delivery that keeps failing while its domain
// accepts others becomes a dead letter after Config.MaxAttempts. A domain
// failing continuously for Config.DeadAfter is marked dead and probed every
// Config.ProbeInterval until a delivery succeeds.
//
// States are saved in batched checkpoints (every Config.CheckpointInterval or
// Config.CheckpointDeliveries settled deliveries per domain), so a crash
// re-sends at most that window. Domains are worked under leases: any number
// of processes can share one store, each domain worked by one of them at a
// time, and a process's domains are taken over within Config.LeaseTTL after
// it dies.
//
// Recipients are named three ways, combinable: explicit inbox URLs, audience
// keys that a Resolver turns into the inboxes of each domain, and all known
// domains. A domain's shared inbox, once known (SetSharedInbox), replaces its
// personal inboxes: one delivery per activity and domain.
package queue
