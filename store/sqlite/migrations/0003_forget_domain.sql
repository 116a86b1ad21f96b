-- apqueue SQLite schema, version 3: domains that can be forgotten.
--
-- ForgetDomain deletes a domain's row; an activity that names the domain
-- later registers it again. Its lease tokens must not start over, or an
-- owner that still works the forgotten domain (it learns of the loss at its
-- next renewal) could pass the fencing check of the new row with a token it
-- held before. ForgetDomain keeps the last token here, and a new row of the
-- domain starts from it.
CREATE TABLE IF NOT EXISTS apqueue_forgotten_domains (
	domain      TEXT    PRIMARY KEY,
	lease_token INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS apqueue_domains_after_forget AFTER INSERT ON apqueue_domains WHEN EXISTS (SELECT 1 FROM apqueue_forgotten_domains WHERE domain = NEW.domain) BEGIN UPDATE apqueue_domains SET lease_token = (SELECT lease_token FROM apqueue_forgotten_domains WHERE domain = NEW.domain) WHERE domain = NEW.domain; DELETE FROM apqueue_forgotten_domains WHERE domain = NEW.domain; END;
