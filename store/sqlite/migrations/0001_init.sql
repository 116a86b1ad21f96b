-- apqueue SQLite schema, version 1.
--
-- Tables are prefixed with apqueue_ so that they can live in the embedder's
-- own database file, next to its tables, for transactional enqueue. Times
-- are INTEGER microseconds since the Unix epoch (NULL: none); lists are JSON
-- arrays of strings. Each statement ends with a semicolon at the end of a
-- line, which is how Migrate splits the file.

-- The ID counter: one row, written by whoever takes IDs (see log.go).
CREATE TABLE IF NOT EXISTS apqueue_id_counter (
	singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
	last_id   INTEGER NOT NULL
);
INSERT OR IGNORE INTO apqueue_id_counter (singleton, last_id) VALUES (1, 0);

-- The activity log, append-only, pruned from below.
CREATE TABLE IF NOT EXISTS apqueue_activities (
	id           INTEGER PRIMARY KEY,
	enqueued_at  INTEGER NOT NULL,
	actor        TEXT    NOT NULL,
	ordering_key TEXT    NOT NULL,
	body         BLOB    NOT NULL,
	inboxes      TEXT    NOT NULL,
	domains      TEXT    NOT NULL,
	audiences    TEXT    NOT NULL,
	all_domains  INTEGER NOT NULL
);

-- One row per remote domain: its cursor, failure bookkeeping and lease.
CREATE TABLE IF NOT EXISTS apqueue_domains (
	domain           TEXT    PRIMARY KEY,
	shared_inbox     TEXT    NOT NULL DEFAULT '',
	cursor           INTEGER NOT NULL,
	status           TEXT    NOT NULL DEFAULT 'active',
	fail_count       INTEGER NOT NULL DEFAULT 0,
	failing_since    INTEGER,
	next_attempt_at  INTEGER,
	last_status      INTEGER NOT NULL DEFAULT 0,
	last_error       TEXT    NOT NULL DEFAULT '',
	last_success_at  INTEGER,
	owner            TEXT    NOT NULL DEFAULT '',
	lease_token      INTEGER NOT NULL DEFAULT 0,
	lease_expires_at INTEGER,
	revision         INTEGER NOT NULL DEFAULT 0,
	-- What the owner settled above the cursor and the retry state of what
	-- it attempted there (store.Progress as JSON), NULL for none.
	progress         TEXT,
	-- The HTTP signature scheme the domain accepted ('' while unknown), and
	-- when it last refused the preferred one.
	signature_scheme     TEXT NOT NULL DEFAULT '',
	signature_checked_at INTEGER
) WITHOUT ROWID;

-- Owners that asked for leases recently, live until live_until even while
-- they hold none, so that processes split the domains evenly.
CREATE TABLE IF NOT EXISTS apqueue_owners (
	owner      TEXT    PRIMARY KEY,
	live_until INTEGER NOT NULL
) WITHOUT ROWID;

-- Deliveries that failed for good, with a copy of the activity.
-- AUTOINCREMENT: an ID is never reused, even after the newest is deleted.
CREATE TABLE IF NOT EXISTS apqueue_dead_letters (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	activity_id  INTEGER NOT NULL,
	domain       TEXT    NOT NULL,
	inbox        TEXT    NOT NULL,
	actor        TEXT    NOT NULL,
	ordering_key TEXT    NOT NULL,
	body         BLOB    NOT NULL,
	status       INTEGER NOT NULL,
	reason       TEXT    NOT NULL,
	attempts     INTEGER NOT NULL,
	created_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS apqueue_dead_letters_domain_idx ON apqueue_dead_letters (domain, id);
-- Each delivery's dead letter is recorded once (see checkpoint.go).
CREATE INDEX IF NOT EXISTS apqueue_dead_letters_delivery_idx ON apqueue_dead_letters (activity_id, domain, inbox);
