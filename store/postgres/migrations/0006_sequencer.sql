-- apqueue schema, version 6: transactional enqueue by a commit-order
-- sequencer (see sequence.go).
--
-- A caller's transaction inserts its activities here, without an ID, in one
-- plain INSERT that takes no lock another enqueue waits for. Once that
-- transaction has committed, a sequencer (any Append, or any reader that
-- finds the counter free) moves the rows to activities, numbering them from
-- id_counter in the order it moves them, in one statement. Rows of a
-- transaction still open, or rolled back, are invisible to it and are never
-- numbered, so a reader never passes an ID that may still appear.
--
-- Additive: a process of version 3 does not know this table and keeps
-- appending through id_counter and pending_appends, which this release still
-- honours, so the two run side by side during a rolling upgrade. Nothing
-- here locks a table that version 3 uses.
CREATE TABLE IF NOT EXISTS {s}.staged_activities (
	seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	enqueued_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
	actor        text        NOT NULL,
	ordering_key text        NOT NULL,
	body         bytea       NOT NULL,
	inboxes      text[]      NOT NULL,
	domains      text[]      NOT NULL,
	audiences    text[]      NOT NULL,
	all_domains  boolean     NOT NULL
);

ANALYZE {s}.staged_activities;
