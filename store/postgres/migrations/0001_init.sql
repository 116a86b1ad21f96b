-- apqueue schema, version 1.
--
-- Every statement is idempotent, and later versions only add: new tables,
-- new nullable or defaulted columns, new indexes. A process running an
-- older version of the library keeps working on a newer schema.

-- The ID counter: one row, locked by whoever takes IDs (see log.go).
CREATE TABLE IF NOT EXISTS {s}.id_counter (
	singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	last_id   bigint  NOT NULL
);
INSERT INTO {s}.id_counter (singleton, last_id) VALUES (true, 0) ON CONFLICT DO NOTHING;

-- IDs reserved by AppendTx for a caller's transaction that may still be
-- open. Readers do not pass the first ID of a reservation whose transaction
-- is in progress.
CREATE TABLE IF NOT EXISTS {s}.pending_appends (
	xid      xid8   NOT NULL,
	first_id bigint NOT NULL
);

-- The activity log, append-only, pruned from below.
CREATE TABLE IF NOT EXISTS {s}.activities (
	id           bigint      PRIMARY KEY,
	enqueued_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
	actor        text        NOT NULL,
	ordering_key text        NOT NULL,
	body         bytea       NOT NULL,
	inboxes      text[]      NOT NULL,
	domains      text[]      NOT NULL,
	audiences    text[]      NOT NULL,
	all_domains  boolean     NOT NULL
);

-- One row per remote domain: its cursor, failure bookkeeping and lease.
CREATE TABLE IF NOT EXISTS {s}.domains (
	domain           text        PRIMARY KEY,
	shared_inbox     text        NOT NULL DEFAULT '',
	cursor           bigint      NOT NULL,
	status           text        NOT NULL DEFAULT 'active',
	fail_count       integer     NOT NULL DEFAULT 0,
	failing_since    timestamptz,
	next_attempt_at  timestamptz,
	last_status      integer     NOT NULL DEFAULT 0,
	last_error       text        NOT NULL DEFAULT '',
	last_success_at  timestamptz,
	owner            text        NOT NULL DEFAULT '',
	lease_token      bigint      NOT NULL DEFAULT 0,
	lease_expires_at timestamptz
) WITH (fillfactor = 80);
-- No index but the primary key: every checkpoint rewrites the cursors of the
-- domains that moved, and without an index on a changed column (and with
-- free space on the page) those are HOT updates that write no index entries.
-- AcquireLeases and Prune scan the table instead, which is cheap at the
-- number of domains a server knows and happens only every few seconds.

-- Owners that asked for leases recently, live until live_until even while
-- they hold none, so that processes split the domains evenly.
CREATE TABLE IF NOT EXISTS {s}.owners (
	owner      text        PRIMARY KEY,
	live_until timestamptz NOT NULL
);

-- Deliveries that failed for good, with a copy of the activity.
CREATE TABLE IF NOT EXISTS {s}.dead_letters (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	activity_id  bigint      NOT NULL,
	domain       text        NOT NULL,
	inbox        text        NOT NULL,
	actor        text        NOT NULL,
	ordering_key text        NOT NULL,
	body         bytea       NOT NULL,
	status       integer     NOT NULL,
	reason       text        NOT NULL,
	attempts     integer     NOT NULL,
	created_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_domain_idx ON {s}.dead_letters (domain, id);

-- Statistics for the tiny tables every append reads, so the planner never
-- takes them for large ones (on a never-analysed table it guesses thousands
-- of rows, and the append statement would cross-join those guesses past
-- jit_above_cost and spend milliseconds compiling a sub-millisecond query).
ANALYZE {s}.id_counter, {s}.pending_appends;
