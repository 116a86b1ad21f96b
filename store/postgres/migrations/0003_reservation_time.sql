-- apqueue schema, version 3: reservations record when they were made, so
-- that an operator can see a caller's transaction holding readers back
-- (Store.OpenTransactions). Additive: older versions insert without it and
-- get the default.
ALTER TABLE {s}.pending_appends ADD COLUMN IF NOT EXISTS reserved_at timestamptz NOT NULL DEFAULT now();
