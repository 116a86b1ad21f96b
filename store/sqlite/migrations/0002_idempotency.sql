-- apqueue SQLite schema, version 2: idempotency keys.
--
-- An activity appended with an idempotency key records it here with its ID
-- until expires_at (microseconds since the Unix epoch); an append with a
-- key still here appends nothing and returns activity_id. Keys outlive the
-- pruning of their activities; Prune deletes them once expired.
CREATE TABLE IF NOT EXISTS apqueue_idempotency_keys (
	key         TEXT    PRIMARY KEY,
	activity_id INTEGER NOT NULL,
	expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS apqueue_idempotency_keys_expires_idx ON apqueue_idempotency_keys (expires_at);
