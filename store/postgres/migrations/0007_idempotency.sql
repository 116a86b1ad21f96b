-- apqueue schema, version 7: idempotency keys.
--
-- An activity appended with an idempotency key records it here with its ID
-- until expires_at; an append with a key still here appends nothing. Keys
-- outlive the pruning of their activities; Prune deletes them once expired.
-- Rows are written only by statements that hold the id_counter lock (an
-- Append, or a sequencer numbering staged activities), so an open caller
-- transaction never holds a key that another enqueue would wait for.
--
-- Additive: a process of version 3 knows neither this table nor the columns
-- added to staged_activities (created in version 6, which it never used),
-- and nothing here locks a table that version 3 uses.
CREATE TABLE IF NOT EXISTS {s}.idempotency_keys (
	key         text        PRIMARY KEY,
	activity_id bigint      NOT NULL,
	expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expires_idx ON {s}.idempotency_keys (expires_at);

-- The key of an activity staged in a caller's transaction, and when it
-- expires: the sequencer records it when it numbers the activity, or drops
-- the activity when the key is taken by then.
ALTER TABLE {s}.staged_activities
	ADD COLUMN IF NOT EXISTS idempotency_key text,
	ADD COLUMN IF NOT EXISTS idempotency_expires_at timestamptz;
CREATE INDEX IF NOT EXISTS staged_activities_key_idx ON {s}.staged_activities (idempotency_key)
	WHERE idempotency_key IS NOT NULL;

ANALYZE {s}.idempotency_keys;
