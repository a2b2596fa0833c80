-- Indexes for List and Stats (verify.ReportStore).

-- List: newest first, keyset pagination on (created_at, id); Stats over a
-- time range.
CREATE INDEX verifications_created ON verifications (created_at, id);
-- List and Stats of one flow.
CREATE INDEX verifications_flow_created ON verifications (flow_id, created_at, id);
-- List and Stats of one foreign ID (a user's verifications).
CREATE INDEX verifications_foreign_created ON verifications (foreign_id, created_at);
-- The Channel filter (a delivery on a channel), Stats' "sent" (a delivery
-- that did not fail) and its per-channel counts, answered from the index
-- alone.
CREATE INDEX deliveries_report ON deliveries (verification_id, channel, status);
