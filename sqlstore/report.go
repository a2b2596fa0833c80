package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

var _ verify.ReportStore = (*Store)(nil)

// filter is the WHERE clause that selects a Query's verifications, over
// the table alias v, with its values bound as $1, $2, ... in args.
type filter struct {
	conds []string
	args  []any
}

// bind adds a value to the arguments and returns its placeholder.
func (f *filter) bind(v any) string {
	f.args = append(f.args, v)
	return "$" + strconv.Itoa(len(f.args))
}

// and adds a condition.
func (f *filter) and(cond string) { f.conds = append(f.conds, cond) }

// where returns "WHERE c1 AND c2 ...", with the extra conditions too, or
// "" without any.
func (f *filter) where(extra ...string) string {
	conds := append(slices.Clip(f.conds), extra...)
	if len(conds) == 0 {
		return ""
	}
	return "WHERE " + strings.Join(conds, " AND ")
}

// filter returns the conditions of q's filters (not its Limit or Cursor).
// Every value is a bound parameter; the SQL text depends only on which
// filters are set and on how many distinct statuses q lists.
func (s *Store) filter(q verify.Query) *filter {
	f := &filter{}
	// Stored times are whole microseconds, so t <= created_at holds exactly
	// when t rounded up to the microsecond does; likewise created_at < t.
	if !q.From.IsZero() {
		f.and("v.created_at >= " + f.bind(s.tv(ceilMicro(q.From))))
	}
	if !q.To.IsZero() {
		f.and("v.created_at < " + f.bind(s.tv(ceilMicro(q.To))))
	}
	if len(q.Statuses) > 0 {
		var in []string
		seen := make(map[verify.Status]bool, len(q.Statuses))
		for _, st := range q.Statuses {
			if !seen[st] {
				seen[st] = true
				in = append(in, f.bind(string(st)))
			}
		}
		f.and("v.status IN (" + strings.Join(in, ", ") + ")")
	}
	if q.FlowID != "" {
		f.and("v.flow_id = " + f.bind(q.FlowID))
	}
	if q.ForeignID != "" {
		f.and("v.foreign_id = " + f.bind(q.ForeignID))
	}
	if q.Recipient != "" {
		p := f.bind(q.Recipient)
		f.and("(v.to_phone = " + p + " OR v.to_email = " + p + ")")
	}
	if q.Channel != "" {
		f.and(`EXISTS (SELECT 1 FROM deliveries c
			WHERE c.verification_id = v.id AND c.channel = ` + f.bind(q.Channel) + `)`)
	}
	return f
}

// ceilMicro rounds t up to a whole microsecond.
func ceilMicro(t time.Time) time.Time {
	if r := t.Truncate(time.Microsecond); !r.Equal(t) {
		return r.Add(time.Microsecond)
	}
	return t
}

// ListVerifications implements verify.ReportStore with one query: the page
// of verifications (keyset pagination on the index of created_at and id,
// or of flow_id, created_at and id) joined to their deliveries.
//
// Report queries are built per call from the filters set, so they are not
// kept in the Store's cache of prepared statements.
func (s *Store) ListVerifications(ctx context.Context, q verify.Query, after verify.Cursor, limit int) ([]verify.VerificationRecord, error) {
	if limit <= 0 {
		return nil, nil
	}
	query, args := s.listQuery(q, after, limit)
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrap("list verifications", err)
	}
	vs, err := scanVerifications(rows)
	if err != nil {
		return nil, wrap("list verifications", err)
	}
	return vs, nil
}

// listQuery returns ListVerifications' query and its arguments.
func (s *Store) listQuery(q verify.Query, after verify.Cursor, limit int) (string, []any) {
	f := s.filter(q)
	if after.ID != "" {
		f.and("(v.created_at, v.id) < (" + f.bind(s.tv(after.CreatedAt)) + ", " + f.bind(after.ID) + ")")
	}
	page := `(SELECT ` + prefixed("v", verificationCols) + ` FROM verifications v ` + f.where() + `
		ORDER BY v.created_at DESC, v.id DESC LIMIT ` + f.bind(limit) + `) v`
	return withDeliveries(page, "", "v.created_at DESC, v.id DESC"), f.args
}

// Stats implements verify.ReportStore. The database aggregates, in three
// queries whatever the number of flows and channels, run in one read-only
// transaction so that they see the same rows:
//
//   - counts by flow and status, of all verifications and of those with a
//     delivery that did not fail (Total, ByStatus, Sent, Verified, overall
//     and per flow);
//   - counts by channel (ChannelStats);
//   - the medians of verified_at - created_at over verified verifications,
//     overall and per flow: percentile_cont on PostgreSQL; on SQLite, which
//     has no percentile, the middle rows found with ROW_NUMBER() and with
//     LIMIT and OFFSET.
func (s *Store) Stats(ctx context.Context, q verify.Query) (verify.Stats, error) {
	st, err := s.stats(ctx, q)
	if err != nil {
		return verify.Stats{}, fmt.Errorf("sqlstore: stats: %w", err)
	}
	return st, nil
}

func (s *Store) stats(ctx context.Context, q verify.Query) (verify.Stats, error) {
	st := verify.Stats{
		ByStatus: map[verify.Status]int{},
		Channels: map[string]verify.ChannelStats{},
		Flows:    map[string]verify.FlowStats{},
	}
	sq := s.statsQueries(q)
	// On PostgreSQL, REPEATABLE READ gives the three queries one snapshot;
	// on SQLite, any read transaction does (a deferred BEGIN, since it is
	// read-only, so writers are not locked out).
	opts := &sql.TxOptions{ReadOnly: true}
	if s.pg() {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return st, err
	}
	defer tx.Rollback()
	if err := scanEach(ctx, tx, sq.statuses, sq.args, &st, statusRow); err != nil {
		return st, err
	}
	if err := scanEach(ctx, tx, sq.channels, sq.args, &st, channelRow); err != nil {
		return st, err
	}
	if err := scanEach(ctx, tx, sq.medians, sq.args, &st, medianRow); err != nil {
		return st, err
	}
	if err := tx.Commit(); err != nil {
		return st, err
	}

	st.Conversion = ratio(st.Verified, st.Sent)
	for k, c := range st.Channels {
		c.Conversion = ratio(c.Verified, c.Verifications)
		st.Channels[k] = c
	}
	for k, fl := range st.Flows {
		fl.Conversion = ratio(fl.Verified, fl.Sent)
		st.Flows[k] = fl
	}
	return st, nil
}

// statsQueries are the queries Stats runs, which share their arguments.
type statsQueries struct {
	// statuses counts verifications by flow and status (sent false), and
	// those of them with a delivery that did not fail (sent true): sent,
	// flow_id, status, count.
	statuses string
	// channels counts deliveries by channel, and the verifications with a
	// delivery on it that did not fail, and of those the verified: channel,
	// deliveries, sent, delivered, failed, verifications, verified.
	channels string
	// medians is the median of verified_at - created_at in microseconds
	// over verified verifications, per flow and overall (flow NULL):
	// flow_id, median.
	medians string
	args    []any
}

// statsQueries returns the queries Stats runs for q. SQLite joins with
// nested loops and groups by sorting (it has no hash joins or hash
// aggregates), so on SQLite the queries walk the covering indexes
// verifications_report and deliveries_verification in ID order;
// PostgreSQL hash-joins the tables.
func (s *Store) statsQueries(q verify.Query) statsQueries {
	f := s.filter(q)
	where := f.where()
	sq := statsQueries{args: f.args}
	// Two counts by flow and status: of every verification, and of those
	// with a delivery that did not fail, told apart by the first column.
	// The second is a semi-join: a hash join on PostgreSQL; on SQLite one
	// lookup in deliveries_verification per verification, made in ID order
	// within each flow and status, since verifications_report yields them
	// so (and grouped by flow and status, so neither part sorts).
	sq.statuses = `SELECT 0, v.flow_id, v.status, COUNT(*) FROM verifications v ` + where + `
		GROUP BY v.flow_id, v.status
		UNION ALL
		SELECT 1, v.flow_id, v.status, COUNT(*) FROM verifications v ` + f.where(`EXISTS (SELECT 1 FROM deliveries d
			WHERE d.verification_id = v.id AND d.status <> 'failed')`) + `
		GROUP BY v.flow_id, v.status`
	// The LEFT JOIN makes SQLite read the verifications first (through
	// verifications_report, when no other index suits the filters), each
	// followed by its deliveries; verifications without deliveries make a
	// NULL channel, left out.
	sq.channels = `SELECT d.channel, COUNT(*),
		SUM(CASE WHEN d.status = 'sent' THEN 1 ELSE 0 END),
		SUM(CASE WHEN d.status = 'delivered' THEN 1 ELSE 0 END),
		SUM(CASE WHEN d.status = 'failed' THEN 1 ELSE 0 END),
		COUNT(DISTINCT CASE WHEN d.status <> 'failed' THEN v.id END),
		COUNT(DISTINCT CASE WHEN d.status <> 'failed' AND v.status = 'verified' THEN v.id END)
		FROM verifications v LEFT JOIN deliveries d ON d.verification_id = v.id ` + where + `
		GROUP BY d.channel
		HAVING d.channel IS NOT NULL`
	verified := f.where("v.status = 'verified'", "v.verified_at IS NOT NULL")
	if s.pg() {
		sq.medians = `SELECT CASE WHEN GROUPING(v.flow_id) = 0 THEN v.flow_id END,
			percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM v.verified_at - v.created_at) * 1000000)
			FROM verifications v ` + verified + `
			GROUP BY GROUPING SETS ((v.flow_id), ())`
	} else {
		// SQLite has no percentile. The middle rows of n sorted ones are
		// numbers (n+1)/2 and n/2+1 (the same row when n is odd). Per flow:
		// number the rows in order of flow and then time (one sort, one
		// window), where flow f's rows follow the skip rows of the flows
		// before it. Overall: one more sort, cut with LIMIT and OFFSET.
		sq.medians = `WITH t AS MATERIALIZED (
				SELECT v.flow_id AS flow_id, v.verified_at - v.created_at AS d
				FROM verifications v ` + verified + `),
			c AS MATERIALIZED (
				SELECT flow_id, n, SUM(n) OVER (ORDER BY flow_id) - n AS skip
				FROM (SELECT flow_id, COUNT(*) AS n FROM t GROUP BY flow_id)),
			r AS (SELECT flow_id, d, ROW_NUMBER() OVER (ORDER BY flow_id, d) AS i FROM t)
			SELECT flow_id, AVG(d) FROM r
			WHERE i IN (SELECT skip + (n + 1) / 2 FROM c UNION ALL SELECT skip + n / 2 + 1 FROM c)
			GROUP BY flow_id
			UNION ALL
			SELECT NULL, AVG(d) FROM (SELECT d FROM t ORDER BY d
				LIMIT 2 - (SELECT COALESCE(SUM(n), 0) FROM c) % 2 OFFSET ((SELECT COALESCE(SUM(n), 0) FROM c) - 1) / 2)`
	}
	return sq
}

// scanEach runs one of the statsQueries and adds each row to st with fn.
func scanEach(ctx context.Context, tx *sql.Tx, query string, args []any, st *verify.Stats, fn func(*verify.Stats, *sql.Rows) error) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(st, rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// statusRow adds a row of statsQueries.statuses to Total, ByStatus and
// Verified, or to Sent, overall and for the flow.
func statusRow(st *verify.Stats, rows *sql.Rows) error {
	var (
		sent   bool
		flow   string
		status verify.Status
		n      int
	)
	if err := rows.Scan(&sent, &flow, &status, &n); err != nil {
		return err
	}
	fl := st.Flows[flow]
	if sent {
		fl.Sent += n
		st.Sent += n
	} else {
		fl.Total += n
		st.Total += n
		st.ByStatus[status] += n
		if status == verify.StatusVerified {
			fl.Verified += n
			st.Verified += n
		}
	}
	st.Flows[flow] = fl
	return nil
}

// channelRow adds a row of statsQueries.channels: one channel's figures.
func channelRow(st *verify.Stats, rows *sql.Rows) error {
	var (
		channel string
		c       verify.ChannelStats
	)
	if err := rows.Scan(&channel, &c.Deliveries, &c.Sent, &c.Delivered, &c.Failed, &c.Verifications, &c.Verified); err != nil {
		return err
	}
	st.Channels[channel] = c
	return nil
}

// medianRow adds a row of statsQueries.medians: a flow's median time to
// verify, or the overall one.
func medianRow(st *verify.Stats, rows *sql.Rows) error {
	var (
		flow   sql.NullString
		median sql.NullFloat64 // microseconds
	)
	if err := rows.Scan(&flow, &median); err != nil {
		return err
	}
	d := time.Duration(math.Round(median.Float64 * float64(time.Microsecond)))
	if !flow.Valid {
		st.MedianTimeToVerify = d
		return nil
	}
	// The flow is there: the statuses query saw the same rows.
	if fl, ok := st.Flows[flow.String]; ok {
		fl.MedianTimeToVerify = d
		st.Flows[flow.String] = fl
	}
	return nil
}

// ratio is a / b, or 0 when b is 0.
func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
