-- The steps a verification's deliveries were sent at, as a bit mask (bit
-- s for step s, bit 30 for a Resend), kept by RecordDelivery in the
-- UPDATE that keeps delivery_summary, so that Trends counts the fallback
-- steps without joining the deliveries. SQLite only: PostgreSQL joins.
-- The backfill ORs the bits with SUM(DISTINCT), as distinct powers of
-- two add up to their OR.

ALTER TABLE verifications ADD COLUMN delivery_steps INTEGER NOT NULL DEFAULT 0;

UPDATE verifications SET delivery_steps = (
	SELECT SUM(DISTINCT CASE WHEN step >= 0 THEN 1 << step ELSE 1 << 30 END)
	FROM deliveries WHERE verification_id = verifications.id)
WHERE EXISTS (SELECT 1 FROM deliveries WHERE verification_id = verifications.id);
