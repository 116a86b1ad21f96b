-- apqueue schema, version 2: admin changes to a domain (pause, resume,
-- retry now, skip, mark alive) bump its revision, and checkpoints fence on
-- it, so an owner that has not seen a change cannot undo it. Additive: a
-- process of version 1 ignores the column.
ALTER TABLE {s}.domains ADD COLUMN IF NOT EXISTS revision bigint NOT NULL DEFAULT 0;
