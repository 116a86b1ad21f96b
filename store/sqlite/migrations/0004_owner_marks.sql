-- apqueue SQLite schema, version 4: owners' change marks, for KeepLeases.
--
-- An owner renews its leases without listing them (store.LeaseKeeper): a
-- lease that follows its owner has lease_expires_at set to the largest
-- integer and lives as long as the owner's row in apqueue_owners does
-- (live_until). The owner must still learn when one of its leases is lost
-- or one of its domains is changed by someone else; apqueue_owner_marks
-- holds, for every owner, a mark that moves whenever that happens, and the
-- owner looks at its whole list only when its mark moved.
--
-- Triggers move the mark, so that every statement that changes a domain
-- moves it, whichever process runs it: an update that increments a
-- domain's revision (an admin's change, a new shared inbox, a retention
-- fast-forward) or its lease token (an acquisition: the lease was taken,
-- from another owner or from one that let it expire), and the deletion of a
-- domain (ForgetDomain). The owner's own checkpoints, renewals and releases
-- change neither. Marks come from a one-row counter, so no mark is given
-- twice and taking one costs the same however many owners there are.
--
-- Additive: processes of version 3 go on renewing with their whole list,
-- and their statements move the marks too. They take a lease that follows
-- its owner for one held for ever, so they never take a domain over from a
-- process of this version, which still takes theirs when they stop.
CREATE TABLE IF NOT EXISTS apqueue_owner_marks (
	owner TEXT    PRIMARY KEY,
	mark  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS apqueue_owner_mark_counter (
	id   INTEGER PRIMARY KEY CHECK (id = 1),
	last INTEGER NOT NULL
);
INSERT INTO apqueue_owner_mark_counter (id, last) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TRIGGER IF NOT EXISTS apqueue_domains_move_owner_mark_on_update AFTER UPDATE OF revision, lease_token ON apqueue_domains WHEN OLD.owner <> '' AND (NEW.revision <> OLD.revision OR NEW.lease_token <> OLD.lease_token) BEGIN UPDATE apqueue_owner_mark_counter SET last = last + 1 WHERE id = 1; INSERT INTO apqueue_owner_marks (owner, mark) VALUES (OLD.owner, (SELECT last FROM apqueue_owner_mark_counter WHERE id = 1)) ON CONFLICT (owner) DO UPDATE SET mark = excluded.mark; END;
CREATE TRIGGER IF NOT EXISTS apqueue_domains_move_owner_mark_on_delete AFTER DELETE ON apqueue_domains WHEN OLD.owner <> '' BEGIN UPDATE apqueue_owner_mark_counter SET last = last + 1 WHERE id = 1; INSERT INTO apqueue_owner_marks (owner, mark) VALUES (OLD.owner, (SELECT last FROM apqueue_owner_mark_counter WHERE id = 1)) ON CONFLICT (owner) DO UPDATE SET mark = excluded.mark; END;
