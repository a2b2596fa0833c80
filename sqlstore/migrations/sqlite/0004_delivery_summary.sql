-- SQLite groups only by sorting and joins only with nested loops, so
-- counting deliveries by channel and status for Stats meant walking every
-- delivery and sorting them. Each verification now carries a summary of
-- its deliveries, kept by RecordDelivery in the same transaction: a JSON
-- array of [channel, status, count], ordered by channel and status ("[]"
-- for none). Stats groups verifications by flow, status and summary in the
-- order of verifications_report, reading neither the table nor deliveries
-- and sorting nothing; the few distinct groups are added up in Go.
-- (PostgreSQL hash-joins and hash-aggregates, and needs no summary.)

ALTER TABLE verifications ADD COLUMN delivery_summary TEXT NOT NULL DEFAULT '[]';

UPDATE verifications SET delivery_summary = (
	SELECT json_group_array(json_array(channel, status, n)) FROM (
		SELECT channel, status, COUNT(*) AS n FROM deliveries
		WHERE verification_id = verifications.id
		GROUP BY channel, status ORDER BY channel, status));

DROP INDEX verifications_report;
-- Stats: the columns it reads (id for the Channel filter), grouped by
-- flow, status and summary.
CREATE INDEX verifications_report ON verifications (flow_id, status, delivery_summary, id, created_at, verified_at);
