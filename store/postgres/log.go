package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/apqueue/apqueue/store"
)

// activityColumns turns the parameters of one batch into activity rows.
// Per-activity lists travel as JSON arrays, since PostgreSQL arrays cannot
// be ragged.
const activityColumns = `x.actor, x.ordering_key, x.body,
		ARRAY(SELECT jsonb_array_elements_text(x.inboxes::jsonb)),
		ARRAY(SELECT jsonb_array_elements_text(x.domains::jsonb)),
		ARRAY(SELECT jsonb_array_elements_text(x.audiences::jsonb)),
		x.all_domains`

// activityUnnest turns the batch's parameters, from $first on, into rows
// x with their position in the batch (x.ord).
func activityUnnest(first int) string {
	p := func(i int) string { return "$" + strconv.Itoa(first+i) }
	return `unnest(` + p(0) + `::text[], ` + p(1) + `::text[], ` + p(2) + `::bytea[], ` + p(3) + `::text[], ` +
		p(4) + `::text[], ` + p(5) + `::text[], ` + p(6) + `::bool[])
		WITH ORDINALITY AS x(actor, ordering_key, body, inboxes, domains, audiences, all_domains, ord)`
}

// appendSQL sequences the committed staged rows (see sequence.go), then
// numbers and inserts the batch ($1 activities in $2..$8) after them,
// registers the new domains named by either ($9 for the batch) at the safe
// head, and notifies channel $10, in one autocommit statement. It waits for
// the counter: an appender must get its IDs. It returns the ID before the
// batch's first and how many staged rows it numbered. An empty batch only
// numbers the staged rows (see commitWatcher). It also returns the IDs of
// the batch whose idempotency keys it claimed (a keyed activity of the
// batch whose ID is not among them is a duplicate, and was not inserted)
// and the suspended domains among those of the batch.
var appendSQL = `WITH h AS (
	SELECT coalesce({safe_head}, 0) AS head
), lk AS (
	SELECT last_id FROM {s}.id_counter FOR UPDATE
), ` + sequenceKeyedCTEs(batchKeysSQL) + `, own AS (
	INSERT INTO {s}.activities (id, actor, ordering_key, body, inboxes, domains, audiences, all_domains)
	SELECT lk.last_id + k.k + x.ord, ` + activityColumns + `
	FROM lk, k, ` + activityUnnest(2) + `
	WHERE NOT (x.ord = ANY($11::bigint[])) OR lk.last_id + k.k + x.ord IN (SELECT activity_id FROM ik)
	ORDER BY x.ord
), u AS (
	UPDATE {s}.id_counter SET last_id = lk.last_id + k.k + $1::bigint FROM lk, k
	RETURNING pg_notify($10, '')
), d AS (
	INSERT INTO {s}.domains (domain, cursor)
	SELECT nd.domain, min(h.head) FROM h, (
		SELECT unnest(n.domains) FROM n UNION ALL SELECT unnest($9::text[])
	) AS nd(domain)
	GROUP BY nd.domain
	ORDER BY nd.domain COLLATE "C"
	ON CONFLICT (domain) DO NOTHING
)
SELECT lk.last_id + k.k, k.k, ARRAY(SELECT activity_id FROM ik WHERE activity_id > lk.last_id + k.k),
	` + suspendedAmong("$9") + `
FROM lk, k`

// batchKeysSQL selects the key candidates of appendSQL's batch: the
// positions in the batch of the activities with a key ($11), their keys
// ($12) and windows in microseconds ($13).
const batchKeysSQL = `SELECT y.key, lk.last_id + k.k + y.ord, statement_timestamp() + y.win * interval '1 microsecond'
	FROM lk, k, unnest($11::bigint[], $12::text[], $13::bigint[]) AS y(ord, key, win)`

// knownKeysSQL returns the activity IDs of the keys $1, for the
// duplicates of an append.
const knownKeysSQL = `SELECT key, activity_id FROM {s}.idempotency_keys WHERE key = ANY($1::text[])`

// stageTxSQL stages a batch ($1..$7) in the caller's transaction and
// returns the transaction's ID, for the commit watcher, the suspended
// domains among those of the batch ($8), and the positions of the
// duplicates it did not stage (none here): the only statement AppendTx
// sends. It takes no lock another enqueue waits for, and sends no
// NOTIFY, which would serialise the callers' commits (see commitWatcher).
var stageTxSQL = `WITH i AS (
	INSERT INTO {s}.staged_activities (actor, ordering_key, body, inboxes, domains, audiences, all_domains)
	SELECT ` + activityColumns + `
	FROM ` + activityUnnest(1) + `
	ORDER BY x.ord
)
SELECT pg_current_xact_id()::text, ` + suspendedAmong("$8") + `, '{}'::bigint[]`

// suspendedAmong selects the suspended domains among the array param.
func suspendedAmong(param string) string {
	return `ARRAY(SELECT domain FROM {s}.domains WHERE domain = ANY(` + param + `::text[]) AND status = 'suspended')`
}

// stageKeyedTxSQL is stageTxSQL for a batch with idempotency keys, at
// most one activity per key: $8 are the positions in the batch of the
// activities with a key, $9 their keys and $10 their windows in
// microseconds; $11 the batch's domains. An activity whose key an
// appended activity holds, or a staged one that the caller's transaction
// sees (its own, or another's committed and not numbered yet), is not
// staged. Two transactions open at once with one key both stage their
// activity; the sequencer keeps the first it numbers and drops the other
// (see sequenceKeyedCTEs). No key is written here, so the caller's
// transaction holds none that another enqueue would wait for.
var stageKeyedTxSQL = `WITH y AS (
	SELECT y.* FROM unnest($8::bigint[], $9::text[], $10::bigint[]) AS y(ord, key, win)
	WHERE NOT EXISTS (SELECT 1 FROM {s}.idempotency_keys ko WHERE ko.key = y.key AND ko.expires_at > statement_timestamp())
	AND NOT EXISTS (SELECT 1 FROM {s}.staged_activities p WHERE p.idempotency_key = y.key)
), i AS (
	INSERT INTO {s}.staged_activities (actor, ordering_key, body, inboxes, domains, audiences, all_domains,
		idempotency_key, idempotency_expires_at)
	SELECT ` + activityColumns + `, y.key, statement_timestamp() + y.win * interval '1 microsecond'
	FROM ` + activityUnnest(1) + ` LEFT JOIN y ON y.ord = x.ord
	WHERE NOT (x.ord = ANY($8::bigint[])) OR y.ord IS NOT NULL
	ORDER BY x.ord
)
SELECT pg_current_xact_id()::text, ` + suspendedAmong("$11") + `,
	ARRAY(SELECT o FROM unnest($8::bigint[]) AS o WHERE o NOT IN (SELECT ord FROM y))`

// stageOneTxSQL is stageTxSQL for a batch of one activity, with its lists
// as arrays ($4..$6): a simpler statement for the common case.
var stageOneTxSQL = `WITH i AS (
	INSERT INTO {s}.staged_activities (actor, ordering_key, body, inboxes, domains, audiences, all_domains)
	VALUES ($1, $2, $3, $4::text[], $5::text[], $6::text[], $7)
)
SELECT pg_current_xact_id()::text, ` + suspendedAmong("$5") + `, '{}'::bigint[]`

const activityReadColumns = `id, enqueued_at, actor, ordering_key, body, inboxes, domains, audiences, all_domains`

// activitiesSQL sequences what it can (readerSequence) and returns up to
// $2 activities after $1: those up to the safe head its snapshot sees, and
// the ones it numbered itself when nothing was numbered between its
// snapshot and its lock (then they directly follow the safe head).
var activitiesSQL = readerSequence("$3") + `
SELECT r.* FROM ((
	SELECT a.` + activityReadColumns + `
	FROM {s}.activities a, h
	WHERE a.id > $1 AND a.id <= h.head
	ORDER BY a.id
	LIMIT $2
) UNION ALL (
	SELECT n.id, n.enqueued_at, n.actor, n.ordering_key, n.body, n.inboxes, n.domains, n.audiences, n.all_domains
	FROM kept n, lk, h
	WHERE n.id > $1 AND lk.last_id = h.head
)) AS r
ORDER BY r.id
LIMIT $2`

// headSQL sequences what it can, notifying channel $1, and returns the
// safe head, including what it numbered under the same condition as
// activitiesSQL.
var headSQL = readerSequence("$1") + `
SELECT CASE WHEN lk.last_id = h.head THEN h.head + k.k ELSE h.head END
FROM h LEFT JOIN lk ON true, k`

// batch is a validated batch of activities as statement parameters.
type batch struct {
	n                                   int
	actors, keys, inboxes, doms, audies []string
	bodies                              [][]byte
	all                                 []bool
	// newDomains are the distinct domains the batch names, sorted so that
	// concurrent registrations lock them in one order.
	newDomains []string
	// keyOrds are the positions in the batch (from 1) of the activities
	// with an idempotency key, keyNames their keys and keyWindows their
	// windows in microseconds.
	keyOrds, keyWindows []int64
	keyNames            []string
}

func newBatch(op string, activities []store.NewActivity) (*batch, error) {
	if err := store.CheckAppend(activities); err != nil {
		return nil, refused(op, err)
	}
	b := &batch{n: len(activities)}
	for i, a := range activities {
		b.actors = append(b.actors, a.Actor)
		b.keys = append(b.keys, a.OrderingKey)
		b.bodies = append(b.bodies, a.Body)
		b.inboxes = append(b.inboxes, jsonList(a.Inboxes))
		b.doms = append(b.doms, jsonList(a.Domains))
		b.audies = append(b.audies, jsonList(a.Audiences))
		b.all = append(b.all, a.AllDomains)
		b.newDomains = append(b.newDomains, a.Domains...)
		if a.IdempotencyKey != "" {
			b.keyOrds = append(b.keyOrds, int64(i+1))
			b.keyNames = append(b.keyNames, a.IdempotencyKey)
			b.keyWindows = append(b.keyWindows, a.IdempotencyWindow.Microseconds())
		}
	}
	if b.keyOrds == nil {
		b.keyOrds, b.keyNames, b.keyWindows = []int64{}, []string{}, []int64{}
	}
	slices.Sort(b.newDomains)
	b.newDomains = slices.Compact(b.newDomains)
	if b.newDomains == nil {
		b.newDomains = []string{}
	}
	return b, nil
}

// jsonList encodes a list of strings as a JSON array; nil becomes [].
func jsonList(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	out, _ := json.Marshal(l) // cannot fail for []string
	return string(out)
}

// ids returns the IDs of a batch whose IDs follow prev.
func (b *batch) ids(prev int64) []int64 {
	out := make([]int64, b.n)
	for i := range out {
		out[i] = prev + int64(i) + 1
	}
	return out
}

// Append implements store.Store, in one statement that first numbers what
// callers' transactions staged (see sequence.go). Concurrent calls on one
// Store share a statement (see groupCommit).
func (s *Store) Append(ctx context.Context, activities []store.NewActivity) ([]store.Appended, error) {
	const op = "append"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	b, err := newBatch(op, activities)
	if err != nil {
		return nil, err
	}
	res, err := s.appends.append(ctx, b, s.appendBatch)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out := make([]store.Appended, b.n)
	for i, id := range b.ids(res.prev) {
		out[i].ID = id
		if len(res.suspended) > 0 {
			out[i].Suspended = suspendedOf(activities[i].Domains, res.suspended)
		}
	}
	if len(b.keyOrds) > 0 {
		if err := s.resolveDuplicates(ctx, b, out, res.claimed); err != nil {
			return nil, s.fail(ctx, op, err)
		}
	}
	return out, nil
}

// resolveDuplicates marks as duplicates the keyed activities of b whose
// keys the append did not claim (their IDs are not in claimed), with the
// ID of the activity that holds the key.
func (s *Store) resolveDuplicates(ctx context.Context, b *batch, out []store.Appended, claimedIDs []int64) error {
	claimed := make(map[int64]bool, len(claimedIDs))
	for _, id := range claimedIDs {
		claimed[id] = true
	}
	var dups []string
	for i, ord := range b.keyOrds {
		if !claimed[out[ord-1].ID] {
			dups = append(dups, b.keyNames[i])
		}
	}
	if len(dups) == 0 {
		return nil
	}
	s.count(1)
	rows, err := s.pool.Query(ctx, s.sql.knownKeys, dups)
	if err != nil {
		return err
	}
	held := make(map[string]int64, len(dups))
	var (
		key string
		id  int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&key, &id}, func() error { held[key] = id; return nil }); err != nil {
		return err
	}
	for i, ord := range b.keyOrds {
		if claimed[out[ord-1].ID] {
			continue
		}
		id, ok := held[b.keyNames[i]]
		if !ok {
			return fmt.Errorf("idempotency key %q of a duplicate was deleted before it was read", b.keyNames[i])
		}
		out[ord-1] = store.Appended{ID: id, Duplicate: true}
	}
	return nil
}

// appendBatch runs appendSQL for b.
func (s *Store) appendBatch(ctx context.Context, b *batch) (appendResult, error) {
	var res appendResult
	s.count(1)
	err := s.pool.QueryRow(ctx, s.sql.append, b.n, b.actors, b.keys, b.bodies, b.inboxes, b.doms, b.audies, b.all,
		b.newDomains, s.channel, b.keyOrds, b.keyNames, b.keyWindows).Scan(&res.prev, &res.numbered, &res.claimed, &res.suspended)
	return res, err
}

// Tx binds the caller's transaction tx (a *pgxpool.Tx is one), on the same
// database as the store, to the store, for queue.EnqueueTx: appends made
// through it are AppendTx calls.
func (s *Store) Tx(tx pgx.Tx) store.Tx { return boundTx{s: s, tx: tx} }

type boundTx struct {
	s  *Store
	tx pgx.Tx
}

func (b boundTx) Append(ctx context.Context, activities []store.NewActivity) ([]store.Appended, error) {
	return b.s.appendTx(ctx, b.tx, activities)
}

// AppendTx appends activities inside the caller's transaction tx, on the
// same database as the store: they are appended if and only if tx commits.
// It is one statement in tx, a plain INSERT that takes no lock another
// enqueue waits for, and uses no connection but tx's. Soon after tx
// commits, the store numbers the activities and notifies listeners (see
// commitWatcher).
//
// The activities get their IDs after tx commits, when the store numbers
// them (see sequence.go), above every ID given out before; that is why
// AppendTx returns none. Their new domains are registered then too. A
// transaction left open holds back nothing but its own activities.
//
// What it did with each activity (duplicates of an idempotency key, the
// suspended domains named) is what Store.Tx(tx).Append returns.
func (s *Store) AppendTx(ctx context.Context, ptx pgx.Tx, activities []store.NewActivity) error {
	_, err := s.appendTx(ctx, ptx, activities)
	return err
}

// appendTx is AppendTx, returning what it did with each activity: no IDs,
// which come at commit.
func (s *Store) appendTx(ctx context.Context, ptx pgx.Tx, activities []store.NewActivity) ([]store.Appended, error) {
	const op = "append in transaction"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if ptx == nil {
		return nil, invalid(op, "nil transaction")
	}
	staged, pos := firstOfEachKey(activities)
	var (
		xid       string
		suspended []string
		dupOrds   []int64
		row       pgx.Row
	)
	if len(staged) == 1 && staged[0].IdempotencyKey == "" {
		// The common case, with its lists as arrays: no batch to encode.
		a := staged[0]
		if err := store.CheckAppend(staged); err != nil {
			return nil, refused(op, err)
		}
		s.count(1)
		row = ptx.QueryRow(ctx, s.sql.stageOneTx, a.Actor, a.OrderingKey, a.Body, nonNil(a.Inboxes), nonNil(a.Domains),
			nonNil(a.Audiences), a.AllDomains)
	} else {
		b, err := newBatch(op, staged)
		if err != nil {
			return nil, err
		}
		s.count(1)
		if len(b.keyOrds) > 0 {
			row = ptx.QueryRow(ctx, s.sql.stageKeyedTx, b.actors, b.keys, b.bodies, b.inboxes, b.doms, b.audies, b.all,
				b.keyOrds, b.keyNames, b.keyWindows, b.newDomains)
		} else {
			row = ptx.QueryRow(ctx, s.sql.stageTx, b.actors, b.keys, b.bodies, b.inboxes, b.doms, b.audies, b.all, b.newDomains)
		}
	}
	if err := row.Scan(&xid, &suspended, &dupOrds); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	s.watch(xid, len(staged)-len(dupOrds))
	out := make([]store.Appended, len(activities))
	for i := range out {
		out[i].Duplicate = true // unless staged below
	}
	for j, a := range staged {
		i := j
		if pos != nil {
			i = pos[j]
		}
		out[i] = store.Appended{Duplicate: slices.Contains(dupOrds, int64(j+1))}
		if !out[i].Duplicate && len(suspended) > 0 {
			out[i].Suspended = suspendedOf(a.Domains, suspended)
		}
	}
	return out, nil
}

// firstOfEachKey returns activities without those whose idempotency key an
// earlier one of them has, and the positions in activities of those it
// returns (nil, with activities itself, when it drops none).
func firstOfEachKey(activities []store.NewActivity) ([]store.NewActivity, []int) {
	var (
		seen map[string]bool
		out  []store.NewActivity
		pos  []int
	)
	for i, a := range activities {
		if a.IdempotencyKey != "" {
			if seen[a.IdempotencyKey] {
				if pos == nil {
					out = slices.Clone(activities[:i])
					pos = make([]int, i)
					for j := range pos {
						pos[j] = j
					}
				}
				continue
			}
			if seen == nil {
				seen = make(map[string]bool)
			}
			seen[a.IdempotencyKey] = true
		}
		if pos != nil {
			out = append(out, a)
			pos = append(pos, i)
		}
	}
	if pos == nil {
		return activities, nil
	}
	return out, pos
}

// suspendedOf returns the domains that are in suspended, in order.
func suspendedOf(domains, suspended []string) []string {
	var out []string
	for _, d := range domains {
		if slices.Contains(suspended, d) {
			out = append(out, d)
		}
	}
	return out
}

// Activities implements store.Store, in one statement that also numbers
// what callers' transactions staged when the counter is free (see
// sequence.go). It returns nothing past the safe head.
func (s *Store) Activities(ctx context.Context, after int64, limit int) ([]store.Activity, error) {
	const op = "read activities"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := store.CheckBatchSize(limit); err != nil {
		return nil, refused(op, err)
	}
	s.count(1)
	rows, err := s.pool.Query(ctx, s.sql.activities, after, limit, s.channel)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	out := make([]store.Activity, 0, min(limit, 256))
	var at pgtype.Timestamptz
	for rows.Next() {
		var a store.Activity
		if err := rows.Scan(&a.ID, &at, &a.Actor, &a.OrderingKey, &a.Body, &a.Inboxes, &a.Domains, &a.Audiences, &a.AllDomains); err != nil {
			rows.Close()
			return nil, s.fail(ctx, op, err)
		}
		a.EnqueuedAt = fromTS(at)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	return out, nil
}

// Head implements store.Store, in one statement that numbers staged
// activities as Activities does: it returns the safe head.
func (s *Store) Head(ctx context.Context) (int64, error) {
	const op = "read head"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	var h int64
	s.count(1)
	if err := s.pool.QueryRow(ctx, s.sql.head, s.channel).Scan(&h); err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return h, nil
}
