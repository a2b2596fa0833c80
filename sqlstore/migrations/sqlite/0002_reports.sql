-- Indexes for List and Stats (verify.ReportStore).

-- List: newest first, keyset pagination on (created_at, id); Stats over a
-- time range.
CREATE INDEX verifications_created ON verifications (created_at, id);
-- List and Stats of one flow.
CREATE INDEX verifications_flow_created ON verifications (flow_id, created_at, id);
-- List and Stats of one foreign ID (a user's verifications).
CREATE INDEX verifications_foreign_created ON verifications (foreign_id, created_at);
-- Stats: the columns it reads, grouped by flow and status and then in ID
-- order, so that it reads neither the table nor sorts, and its lookups in
-- deliveries_report go forward through that index.
CREATE INDEX verifications_report ON verifications (flow_id, status, id, created_at, verified_at);
-- The Channel filter (a delivery on a channel), and Stats: whether a
-- verification has a delivery that did not fail, and the counts by channel,
-- answered from the index alone.
CREATE INDEX deliveries_report ON deliveries (verification_id, channel, status);
