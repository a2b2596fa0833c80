-- The failure delay and the resend cooldown. Both columns are nullable
-- (NULL is the zero time), and engines from before this migration keep
-- working on the migrated schema: they neither read nor write the new
-- columns.
--
-- counters.not_before is when the next counting take is allowed (the
-- growing delay after repeated wrong codes); NULL means at once.
-- verifications.last_sent_at is when the latest send of the code was
-- counted, for the resend cooldown. Open verifications start from their
-- creation, the first send; ended ones are never sent again and keep NULL.

ALTER TABLE counters ADD COLUMN not_before INTEGER;

ALTER TABLE verifications ADD COLUMN last_sent_at INTEGER;

UPDATE verifications SET last_sent_at = created_at WHERE ended_at IS NULL;
