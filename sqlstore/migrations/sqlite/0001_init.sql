-- Flows, templates, verifications, their deliveries and pending fallback
-- steps, and counters. Times are integer microseconds since the Unix epoch,
-- UTC; NULL means the zero time. JSON columns are TEXT.

CREATE TABLE flows (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	is_default INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	definition TEXT NOT NULL -- the whole verify.Flow as JSON; the columns above win
) STRICT;

-- At most one default flow; also serves DefaultFlow.
CREATE UNIQUE INDEX flows_default ON flows (is_default) WHERE is_default;
-- ListFlows.
CREATE INDEX flows_created ON flows (created_at, id);

CREATE TABLE templates (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	channel    TEXT NOT NULL,
	body       TEXT NOT NULL,
	language   TEXT NOT NULL,
	status     TEXT NOT NULL,
	reason     TEXT NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;

-- ListTemplates.
CREATE INDEX templates_created ON templates (created_at, id);

CREATE TABLE verifications (
	id                TEXT PRIMARY KEY,
	flow_id           TEXT NOT NULL, -- not a foreign key: flows may be deleted
	foreign_id        TEXT NOT NULL,
	status            TEXT NOT NULL,
	to_phone          TEXT NOT NULL,
	to_email          TEXT NOT NULL,
	ip_address        TEXT NOT NULL,
	idempotency_key   TEXT, -- NULL when the request had none
	request_hash      BLOB,
	brand             TEXT NOT NULL,
	language          TEXT NOT NULL,
	fallback_language TEXT NOT NULL,
	code_hash         BLOB, -- HMAC of the code, never the code
	sealed_code       BLOB, -- AES-GCM-sealed code; NULL once ended
	charset           INTEGER NOT NULL,
	code_length       INTEGER NOT NULL,
	attempts          INTEGER NOT NULL,
	max_attempts      INTEGER NOT NULL,
	sends             INTEGER NOT NULL,
	steps             TEXT NOT NULL, -- JSON array of verify.Step
	allowed_ips       TEXT NOT NULL, -- JSON array of strings
	created_at        INTEGER NOT NULL,
	expires_at        INTEGER NOT NULL,
	verified_at       INTEGER,
	ended_at          INTEGER
) STRICT;

-- ExpireDue: open verifications by expiry.
CREATE INDEX verifications_expiry ON verifications (expires_at)
	WHERE status IN ('pending', 'sent', 'delivered');
-- CreateVerification's idempotency and FindByIdempotencyKey; most rows
-- have no key and no entry.
CREATE UNIQUE INDEX verifications_idempotency_key ON verifications (idempotency_key)
	WHERE idempotency_key IS NOT NULL;
-- FindOpen: a recipient's open verifications on a flow, newest first.
CREATE INDEX verifications_open_recipient ON verifications (flow_id, to_phone, to_email, created_at)
	WHERE status IN ('pending', 'sent', 'delivered');
-- Purge: ended verifications by end time.
CREATE INDEX verifications_ended ON verifications (ended_at)
	WHERE ended_at IS NOT NULL;

CREATE TABLE deliveries (
	seq             INTEGER PRIMARY KEY, -- insertion order, for ties in created_at
	id              TEXT NOT NULL UNIQUE,
	verification_id TEXT NOT NULL REFERENCES verifications (id) ON DELETE CASCADE,
	step            INTEGER NOT NULL,
	channel         TEXT NOT NULL,
	sender          TEXT NOT NULL,
	status          TEXT NOT NULL,
	provider_id     TEXT NOT NULL,
	error           TEXT NOT NULL,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL
) STRICT;

-- A verification's deliveries, oldest first.
CREATE INDEX deliveries_verification ON deliveries (verification_id, created_at, seq);

CREATE TABLE pending_steps (
	verification_id TEXT NOT NULL REFERENCES verifications (id) ON DELETE CASCADE,
	step            INTEGER NOT NULL,
	due_at          INTEGER NOT NULL,
	lease_until     INTEGER,
	ready_at        INTEGER NOT NULL, -- the later of due_at and lease_until
	PRIMARY KEY (verification_id, step)
) STRICT;

-- ClaimDue (ready_at <= now) and NextDue (MIN(ready_at)).
CREATE INDEX pending_steps_ready ON pending_steps (ready_at);

-- Counters for rate limits, lockouts and blocks.
CREATE TABLE counters (
	name       TEXT PRIMARY KEY,
	value      INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) STRICT;

-- Purge: expired counters.
CREATE INDEX counters_expiry ON counters (expires_at);
