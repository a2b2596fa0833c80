-- Indexes for List and Stats (verify.ReportStore). Stats over many rows
-- hash-joins the tables and needs none; over few, it reaches deliveries
-- through deliveries_verification.

-- List: newest first, keyset pagination on (created_at, id); List and
-- Stats over a time range.
CREATE INDEX verifications_created ON verifications (created_at, id);
-- List and Stats of one flow.
CREATE INDEX verifications_flow_created ON verifications (flow_id, created_at, id);
-- List and Stats of one foreign ID (a user's verifications).
CREATE INDEX verifications_foreign_created ON verifications (foreign_id, created_at);
