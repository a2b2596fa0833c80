-- The audit log: what operators did through the console and the admin API
-- (verify.AuditStore).

CREATE TABLE audit_log (
	id     TEXT PRIMARY KEY,
	at     TIMESTAMPTZ NOT NULL,
	actor  TEXT NOT NULL,
	action TEXT NOT NULL,
	target TEXT NOT NULL,
	detail TEXT NOT NULL
);

-- ListAudit (newest first, keyset on (at, id)) and PurgeAudit.
CREATE INDEX audit_log_at ON audit_log (at, id);
