-- apqueue schema, version 5: each domain remembers the HTTP signature
-- scheme it accepted ('cavage' or 'rfc9421', '' while unknown) and when the
-- preferred scheme was last re-checked, so every process and every restart
-- signs with it first. Additive: older versions neither read nor write the
-- columns, and their checkpoints leave them as they are.
ALTER TABLE {s}.domains ADD COLUMN IF NOT EXISTS signature_scheme text NOT NULL DEFAULT '';
ALTER TABLE {s}.domains ADD COLUMN IF NOT EXISTS signature_checked_at timestamptz;
