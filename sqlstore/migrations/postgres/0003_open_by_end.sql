-- A verification is open exactly while its ended_at is NULL (the store
-- sets ended_at whenever it ends one), so the indexes of open
-- verifications test ended_at rather than status. Then the status moving
-- forward (pending → sent → delivered) touches no indexed column, and on
-- PostgreSQL that update is a heap-only tuple update that writes no index
-- entries.

UPDATE verifications SET ended_at = NULL WHERE status IN ('pending', 'sent', 'delivered');
UPDATE verifications SET ended_at = created_at
	WHERE ended_at IS NULL AND status NOT IN ('pending', 'sent', 'delivered');

DROP INDEX verifications_expiry;
-- ExpireDue: open verifications by expiry.
CREATE INDEX verifications_expiry ON verifications (expires_at) WHERE ended_at IS NULL;

DROP INDEX verifications_open_recipient;
-- FindOpen: a recipient's open verifications on a flow, newest first.
CREATE INDEX verifications_open_recipient ON verifications (flow_id, to_phone, to_email, created_at)
	WHERE ended_at IS NULL;
