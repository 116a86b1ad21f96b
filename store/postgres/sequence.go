package postgres

import "strconv"

// How IDs are assigned so that a reader never skips a late commit: a
// commit-order sequencer.
//
// Activities enqueued in a caller's transaction (AppendTx) are inserted
// into staged_activities, without an ID, by one plain INSERT in that
// transaction. It takes no lock that another enqueue waits for, so a caller
// transaction left open blocks nobody, and it costs the caller one
// statement.
//
// A staged row gets its ID only after its transaction has committed, when a
// sequencer moves it into activities. Sequencing is one statement (the
// CTEs below) that locks the one-row counter (id_counter), deletes the
// committed staged rows its snapshot sees, inserts them into activities
// numbered from the counter in staging order, advances the counter,
// registers their new domains and sends NOTIFY. A staged row with an
// idempotency key claims it then (idempotency_keys); a row whose key an
// earlier activity holds is dropped, leaving its ID unused. A row whose transaction is
// still open, or rolled back, is invisible to the sequencer and is not
// numbered; when it commits, a later sequencer numbers it above everything
// numbered so far. IDs are therefore handed out in the order in which they
// become visible, and a reader that reads activities up to the counter, as
// its snapshot sees both, never passes an ID that may still appear.
//
// Who sequences: Append does, in its own statement, before numbering its
// own batch (it holds the counter lock anyway); and every reader (Activities,
// Head) does when staged rows exist and the counter is free (FOR UPDATE SKIP
// LOCKED), so that reading never waits for an appender. Sequencing runs in
// the reader's autocommit statement; the rows it numbers are returned to
// that reader only when its snapshot saw the counter at the value it
// locked (nobody sequenced in between), so that what it returns has no
// gap, and they exist only if the statement commits: a reader that gets an
// error keeps nothing.
//
// Schema version 3 processes (a rolling upgrade) still reserve IDs in
// pending_appends and insert them later in their callers' transactions, so
// the safe head stays lowered to just below the first reserved ID of any
// such transaction still in progress (safeHeadSQL), and new domains are
// registered at that safe head.
const safeHeadSQL = `(SELECT least(c.last_id, coalesce((
		SELECT min(p.first_id) - 1 FROM {s}.pending_appends p
		WHERE NOT pg_visible_in_snapshot(p.xid, pg_current_snapshot())), c.last_id))
	FROM {s}.id_counter c)`

// sequenceCTEs numbers the committed staged rows (see the comment above).
// The including statement defines h (the safe head, h.head) and lk (the
// counter's last_id, locked, or no row when the statement does not
// sequence). It defines m (the moved rows), n (them with their IDs), k (how
// many), ik (the idempotency keys claimed) and kept (the rows of n
// appended: all but the duplicates of a key), and registers the domains
// they name at h.head. The staged rows are chosen in a subquery that reads
// lk, so the counter is locked before any staged row is: sequencers cannot
// deadlock, and one that waited for the counter skips the rows its
// predecessor moved (they are deleted).
var sequenceCTEs = sequenceKeyedCTEs("")

// sequenceKeyedCTEs is sequenceCTEs for a statement that appends a keyed
// batch of its own too: batchKeys selects the batch's key candidates (key,
// id, expires_at) and may use lk and k. Keys are claimed in one INSERT (ik)
// for the staged rows and the batch, the lowest ID first for each key, so
// of activities with one key the first in ID order is appended and the
// others are dropped (their IDs stay unused). ik returns the IDs whose
// keys it claimed: new keys, and keys whose record had expired.
func sequenceKeyedCTEs(batchKeys string) string {
	candidates := `SELECT n.idempotency_key, n.id, n.idempotency_expires_at FROM n WHERE n.idempotency_key IS NOT NULL`
	if batchKeys != "" {
		candidates += ` UNION ALL ` + batchKeys
	}
	return `m AS (
	DELETE FROM {s}.staged_activities p
	WHERE p.seq IN (SELECT q.seq FROM {s}.staged_activities q, lk ORDER BY q.seq LIMIT ` + strconv.Itoa(sweepLimit) + `)
	RETURNING p.seq, p.enqueued_at, p.actor, p.ordering_key, p.body, p.inboxes, p.domains, p.audiences, p.all_domains,
		p.idempotency_key, p.idempotency_expires_at
), n AS (
	SELECT lk.last_id + row_number() OVER (ORDER BY m.seq) AS id, m.* FROM lk, m
), k AS (
	SELECT count(*) AS k FROM m
), ik AS (
	INSERT INTO {s}.idempotency_keys AS ko (key, activity_id, expires_at)
	SELECT DISTINCT ON (c.key) c.key, c.id, c.expires_at FROM (` + candidates + `) AS c(key, id, expires_at)
	ORDER BY c.key, c.id
	ON CONFLICT (key) DO UPDATE SET activity_id = EXCLUDED.activity_id, expires_at = EXCLUDED.expires_at
	WHERE ko.expires_at <= statement_timestamp()
	RETURNING ko.activity_id
), kept AS (
	SELECT n.* FROM n WHERE n.idempotency_key IS NULL OR n.id IN (SELECT activity_id FROM ik)
), sa AS (
	INSERT INTO {s}.activities (id, enqueued_at, actor, ordering_key, body, inboxes, domains, audiences, all_domains)
	SELECT n.id, n.enqueued_at, n.actor, n.ordering_key, n.body, n.inboxes, n.domains, n.audiences, n.all_domains
	FROM kept n ORDER BY n.id
)`
}

// sweepLimit bounds the staged rows one sequencer statement numbers, so
// that the counter's lock is held for a bounded time.
const sweepLimit = 5000

// stagedAnySQL is true when a row is staged that the statement's snapshot
// sees. It reads the first entry of the primary key rather than the table:
// a staging table's rows are deleted moments after they are inserted, and
// its pages stay until a vacuum (which then keeps them, empty, for reuse),
// so an EXISTS, which PostgreSQL runs as a sequential scan, read every page
// of what had been staged since, on every poll and every read. After a
// burst of 20,000 activities, Head took 560–750 µs with EXISTS and
// 200–270 µs with this (BenchmarkHeadAfterABurst, four runs each). The
// index has the same entries but is tens of times smaller, and a scan
// skips those of deleted rows once one has found them dead to every
// transaction. While a transaction older than the deletions stays open,
// neither can skip them: both forms then read every row of the burst
// (3–7 ms with either).
const stagedAnySQL = `(SELECT min(seq) FROM {s}.staged_activities) IS NOT NULL`

// readerLockCTE locks the counter for a reader that sequences: only when
// there is something staged (otherwise the read stays read-only and costs
// no commit), and only when no one else holds it (a reader never waits for
// an appender; the appender sequences too).
const readerLockCTE = `lk AS (
	SELECT last_id FROM {s}.id_counter
	WHERE ` + stagedAnySQL + `
	FOR UPDATE SKIP LOCKED
)`

// readerSequence returns the head of a reader's statement: it sequences
// what it can and advances the counter, notifying the channel in parameter
// channel when it numbered anything (other processes' readers woke at the
// caller's commit, before the rows had IDs). The reader's query follows it.
func readerSequence(channel string) string {
	return `WITH h AS (
	SELECT coalesce({safe_head}, 0) AS head
), ` + readerLockCTE + `, ` + sequenceCTEs + `, u AS (
	UPDATE {s}.id_counter SET last_id = lk.last_id + k.k FROM lk, k
	WHERE k.k > 0
	RETURNING pg_notify(` + channel + `, '')
), d AS (
	INSERT INTO {s}.domains (domain, cursor)
	SELECT nd.domain, min(h.head) FROM h, n, unnest(n.domains) AS nd(domain)
	GROUP BY nd.domain
	ORDER BY nd.domain COLLATE "C"
	ON CONFLICT (domain) DO NOTHING
)`
}
