-- apqueue schema, version 4: a domain's progress above its cursor (what its
-- owner settled there and the retry state of what it attempted), saved with
-- its state so that a graceful stop or a lease handover re-sends nothing;
-- and an index to record each delivery's dead letter once. Additive: older
-- versions neither read nor write progress, and a stale one is ignored
-- below the cursor.
ALTER TABLE {s}.domains ADD COLUMN IF NOT EXISTS progress jsonb;
CREATE INDEX IF NOT EXISTS dead_letters_delivery_idx ON {s}.dead_letters (activity_id, domain, inbox);
