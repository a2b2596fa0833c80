-- Flows, templates, verifications, their deliveries and pending fallback
-- steps, and counters. Times are timestamptz (microseconds); NULL means the
-- zero time. JSON (not JSONB) columns are written whole, read whole and
-- never queried inside, so they skip JSONB's conversions.

CREATE TABLE flows (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	is_default BOOLEAN NOT NULL DEFAULT FALSE,
	created_at TIMESTAMPTZ NOT NULL,
	definition JSON NOT NULL -- the whole verify.Flow as JSON; the columns above win
);

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
	created_at TIMESTAMPTZ NOT NULL
);

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
	request_hash      BYTEA,
	brand             TEXT NOT NULL,
	language          TEXT NOT NULL,
	fallback_language TEXT NOT NULL,
	code_hash         BYTEA, -- HMAC of the code, never the code
	sealed_code       BYTEA, -- AES-GCM-sealed code; NULL once ended
	charset           INTEGER NOT NULL,
	code_length       INTEGER NOT NULL,
	attempts          INTEGER NOT NULL,
	max_attempts      INTEGER NOT NULL,
	sends             INTEGER NOT NULL,
	steps             JSON NOT NULL, -- array of verify.Step
	allowed_ips       JSON NOT NULL, -- array of strings
	created_at        TIMESTAMPTZ NOT NULL,
	expires_at        TIMESTAMPTZ NOT NULL,
	verified_at       TIMESTAMPTZ,
	ended_at          TIMESTAMPTZ
) WITH (fillfactor = 80); -- room for HOT updates of attempts and sends

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
	id              TEXT PRIMARY KEY,
	seq             BIGINT GENERATED ALWAYS AS IDENTITY, -- insertion order, for ties in created_at
	verification_id TEXT NOT NULL REFERENCES verifications (id) ON DELETE CASCADE,
	step            INTEGER NOT NULL,
	channel         TEXT NOT NULL,
	sender          TEXT NOT NULL,
	status          TEXT NOT NULL,
	provider_id     TEXT NOT NULL,
	error           TEXT NOT NULL,
	created_at      TIMESTAMPTZ NOT NULL,
	updated_at      TIMESTAMPTZ NOT NULL
);

-- A verification's deliveries, oldest first (and the foreign key's cascade).
CREATE INDEX deliveries_verification ON deliveries (verification_id, created_at, seq);

CREATE TABLE pending_steps (
	verification_id TEXT NOT NULL REFERENCES verifications (id) ON DELETE CASCADE,
	step            INTEGER NOT NULL,
	due_at          TIMESTAMPTZ NOT NULL,
	lease_until     TIMESTAMPTZ,
	ready_at        TIMESTAMPTZ NOT NULL, -- the later of due_at and lease_until
	PRIMARY KEY (verification_id, step)
);

-- ClaimDue (ready_at <= now) and NextDue (MIN(ready_at)).
CREATE INDEX pending_steps_ready ON pending_steps (ready_at);

-- Counters for rate limits, lockouts and blocks.
CREATE TABLE counters (
	name       TEXT PRIMARY KEY,
	value      BIGINT NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL,
	expires_at TIMESTAMPTZ NOT NULL
);

-- Purge: expired counters.
CREATE INDEX counters_expiry ON counters (expires_at);
