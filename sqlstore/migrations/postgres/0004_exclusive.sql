-- At most one exclusive verification (one of a flow whose Duplicates
-- policy is reuse or replace) is open per flow and recipient, enforced by a
-- unique index, so that Sends racing on several instances cannot both start
-- one. exclusive is TRUE for an exclusive verification and NULL otherwise
-- (never FALSE): NULLs never clash in a unique index, so the others, and
-- the rows stored before this migration, are not constrained. FindOpen
-- keeps verifications_open_recipient, which also orders by created_at.

ALTER TABLE verifications ADD COLUMN exclusive BOOLEAN;

-- CreateVerification's exclusivity.
CREATE UNIQUE INDEX verifications_exclusive ON verifications (flow_id, to_phone, to_email, exclusive)
	WHERE ended_at IS NULL;
