-- Indexes for List and Stats (verify.ReportStore).

-- List: newest first, keyset pagination on (created_at, id); List and
-- Stats over a time range.
CREATE INDEX verifications_created ON verifications (created_at, id);
-- List and Stats of one flow.
CREATE INDEX verifications_flow_created ON verifications (flow_id, created_at, id);
-- List and Stats of one foreign ID (a user's verifications).
CREATE INDEX verifications_foreign_created ON verifications (foreign_id, created_at);
-- Stats: the columns it reads, grouped by flow and status and then in ID
-- order, so that it neither reads the table nor sorts to group, and its
-- lookups of each verification's deliveries move forward through
-- deliveries_verification.
CREATE INDEX verifications_report ON verifications (flow_id, status, id, created_at, verified_at);
-- A verification's deliveries, oldest first, now with their channel and
-- status: the Channel filter and Stats (a delivery that did not fail, the
-- counts by channel) read them from the index alone. One index rather than
-- a second one per delivery.
DROP INDEX deliveries_verification;
CREATE INDEX deliveries_verification ON deliveries (verification_id, created_at, seq, channel, status);
