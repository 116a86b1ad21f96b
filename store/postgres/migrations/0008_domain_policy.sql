-- apqueue schema, version 8: domains that can be forgotten.
--
-- ForgetDomain deletes a domain's row; an activity that names the domain
-- later registers it again. Its lease tokens must not start over, or an
-- owner that still works the forgotten domain (it learns of the loss at its
-- next renewal) could pass the fencing check of the new row with a token it
-- held before. A new row's first token is the time in microseconds, above
-- every token the old row reached (one per acquisition).
--
-- Suspension needs no column: 'suspended' is a value of status.
--
-- Additive: a process of version 3 inserts domains without naming
-- lease_token and only ever compares or increments it. The change of a
-- default takes the table's lock for a moment, within the lock timeout.
ALTER TABLE {s}.domains ALTER COLUMN lease_token
	SET DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
