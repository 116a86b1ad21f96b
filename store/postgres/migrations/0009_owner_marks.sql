-- apqueue schema, version 9: owners' change marks.
--
-- An owner renews its leases without listing them (KeepLeases): its row in
-- owners keeps every lease that follows it alive. It must still learn when
-- one of its leases is lost or one of its domains is changed by someone
-- else; owner_marks holds, for every owner, a mark that moves whenever that
-- happens, and the owner looks at its whole list only when its mark moved.
--
-- The mark is moved by triggers, so that every statement that changes a
-- domain moves it, whichever process and whichever version of the library
-- runs it: an update that increments a domain's revision (an admin's
-- change, a new shared inbox, a retention fast-forward) or its lease token
-- (an acquisition: the lease was taken, from another owner or from one
-- that let it expire), and the deletion of a domain (ForgetDomain). The
-- owner's own checkpoints and releases change neither, and cost nothing
-- here: the WHEN conditions are tested without calling the function. The
-- marks come from a sequence, so no mark is ever given twice, and a
-- transaction moves an owner's mark once however many of its domains it
-- changes (an owner's takeover of 20,000 domains writes one row per
-- previous owner, not 20,000 versions of it).
--
-- The triggers take an owner_marks row lock only at the end of a statement
-- that holds its domain row locks already, and nothing waits for a domain
-- row while holding one: the lease statements only read owner_marks.
--
-- Additive: processes of version 8 go on renewing with their whole list,
-- and their statements move the marks too.
CREATE SEQUENCE IF NOT EXISTS {s}.owner_mark_seq;

CREATE TABLE IF NOT EXISTS {s}.owner_marks (
	owner text   PRIMARY KEY,
	mark  bigint NOT NULL
);

CREATE OR REPLACE FUNCTION {s}.move_owner_mark() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO {s}.owner_marks AS m (owner, mark) VALUES (OLD.owner, nextval('{s}.owner_mark_seq'))
	ON CONFLICT (owner) DO UPDATE SET mark = EXCLUDED.mark
		WHERE m.xmin <> pg_current_xact_id()::xid;
	RETURN NULL;
END
$$;

-- Like every statement of the migrations, the triggers are created only
-- where they are missing.
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_trigger
		WHERE tgrelid = '{s}.domains'::regclass AND tgname = 'domains_move_owner_mark_on_update') THEN
		CREATE TRIGGER domains_move_owner_mark_on_update AFTER UPDATE ON {s}.domains
			FOR EACH ROW WHEN (OLD.owner <> '' AND (NEW.revision <> OLD.revision OR NEW.lease_token <> OLD.lease_token))
			EXECUTE FUNCTION {s}.move_owner_mark();
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_trigger
		WHERE tgrelid = '{s}.domains'::regclass AND tgname = 'domains_move_owner_mark_on_delete') THEN
		CREATE TRIGGER domains_move_owner_mark_on_delete AFTER DELETE ON {s}.domains
			FOR EACH ROW WHEN (OLD.owner <> '')
			EXECUTE FUNCTION {s}.move_owner_mark();
	END IF;
END
$$;
