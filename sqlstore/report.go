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

// where returns "WHERE c1 AND c2 ...", or "" without conditions.
func (f *filter) where() string {
	if len(f.conds) == 0 {
		return ""
	}
	return "WHERE " + strings.Join(f.conds, " AND ")
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
	f := s.filter(q)
	if after.ID != "" {
		f.and("(v.created_at, v.id) < (" + f.bind(s.tv(after.CreatedAt)) + ", " + f.bind(after.ID) + ")")
	}
	page := `(SELECT ` + prefixed("v", verificationCols) + ` FROM verifications v ` + f.where() + `
		ORDER BY v.created_at DESC, v.id DESC LIMIT ` + f.bind(limit) + `) v`
	rows, err := s.db.QueryContext(ctx, withDeliveries(page, "", "v.created_at DESC, v.id DESC"), f.args...)
	if err != nil {
		return nil, wrap("list verifications", err)
	}
	vs, err := scanVerifications(rows)
	if err != nil {
		return nil, wrap("list verifications", err)
	}
	return vs, nil
}

// Stats implements verify.ReportStore. The database aggregates; three
// queries, whatever the number of flows and channels, run in one read-only
// transaction so that they see the same data:
//
//   - counts by flow and status, each with how many of them have a
//     delivery that did not fail (Total, ByStatus, Sent, Verified, and the
//     same per flow);
//   - deliveries by channel (ChannelStats);
//   - the medians of verified_at - created_at of verified verifications,
//     overall and per flow: percentile_cont on PostgreSQL, the middle rows
//     by ROW_NUMBER() on SQLite.
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

	f := s.filter(q)
	if err := s.statusCounts(ctx, tx, f, &st); err != nil {
		return st, err
	}
	if err := s.channelCounts(ctx, tx, f, &st); err != nil {
		return st, err
	}
	if err := s.medians(ctx, tx, f, &st); err != nil {
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

// sentCond holds for a verification with a delivery that did not fail.
// deliveries_report answers it from the index alone.
const sentCond = `EXISTS (SELECT 1 FROM deliveries d WHERE d.verification_id = v.id AND d.status <> 'failed')`

// statusCounts fills Total, ByStatus, Sent and Verified, overall and per
// flow.
func (s *Store) statusCounts(ctx context.Context, tx *sql.Tx, f *filter, st *verify.Stats) error {
	rows, err := tx.QueryContext(ctx, `SELECT v.flow_id, v.status, COUNT(*),
		SUM(CASE WHEN `+sentCond+` THEN 1 ELSE 0 END)
		FROM verifications v `+f.where()+`
		GROUP BY v.flow_id, v.status`, f.args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			flow     string
			status   verify.Status
			n, nsent int
		)
		if err := rows.Scan(&flow, &status, &n, &nsent); err != nil {
			return err
		}
		fl := st.Flows[flow]
		fl.Total += n
		fl.Sent += nsent
		st.Total += n
		st.Sent += nsent
		st.ByStatus[status] += n
		if status == verify.StatusVerified {
			fl.Verified += n
			st.Verified += n
		}
		st.Flows[flow] = fl
	}
	return rows.Err()
}

// channelCounts fills Channels. A verification counts once per channel on
// which it has a delivery that did not fail.
func (s *Store) channelCounts(ctx context.Context, tx *sql.Tx, f *filter, st *verify.Stats) error {
	rows, err := tx.QueryContext(ctx, `SELECT d.channel, COUNT(*),
		SUM(CASE WHEN d.status = 'sent' THEN 1 ELSE 0 END),
		SUM(CASE WHEN d.status = 'delivered' THEN 1 ELSE 0 END),
		SUM(CASE WHEN d.status = 'failed' THEN 1 ELSE 0 END),
		COUNT(DISTINCT CASE WHEN d.status <> 'failed' THEN v.id END),
		COUNT(DISTINCT CASE WHEN d.status <> 'failed' AND v.status = 'verified' THEN v.id END)
		FROM verifications v JOIN deliveries d ON d.verification_id = v.id `+f.where()+`
		GROUP BY d.channel`, f.args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			channel string
			c       verify.ChannelStats
		)
		if err := rows.Scan(&channel, &c.Deliveries, &c.Sent, &c.Delivered, &c.Failed, &c.Verifications, &c.Verified); err != nil {
			return err
		}
		st.Channels[channel] = c
	}
	return rows.Err()
}

// medians fills MedianTimeToVerify, overall and per flow: the median of
// verified_at - created_at over verified verifications, the mean of the two
// middle values for an even count. Each row of the query is a flow's
// median, or the overall one for a NULL flow; the values are in
// microseconds.
func (s *Store) medians(ctx context.Context, tx *sql.Tx, f *filter, st *verify.Stats) error {
	verified := &filter{conds: append(slices.Clip(f.conds), "v.status = 'verified'", "v.verified_at IS NOT NULL"), args: f.args}
	var query string
	if s.pg() {
		query = `SELECT CASE WHEN GROUPING(v.flow_id) = 0 THEN v.flow_id END,
			percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM v.verified_at - v.created_at) * 1000000)
			FROM verifications v ` + verified.where() + `
			GROUP BY GROUPING SETS ((v.flow_id), ())`
	} else {
		// The middle rows of n are numbers (n+1)/2 and n/2+1 (one row when
		// n is odd), counted within the flow and overall.
		query = `WITH r AS MATERIALIZED (
				SELECT v.flow_id AS flow_id, v.verified_at - v.created_at AS d,
					ROW_NUMBER() OVER (PARTITION BY v.flow_id ORDER BY v.verified_at - v.created_at) AS fi,
					COUNT(*) OVER (PARTITION BY v.flow_id) AS fn,
					ROW_NUMBER() OVER (ORDER BY v.verified_at - v.created_at) AS ai,
					COUNT(*) OVER () AS an
				FROM verifications v ` + verified.where() + `)
			SELECT flow_id, AVG(d) FROM r WHERE fi IN ((fn + 1) / 2, fn / 2 + 1) GROUP BY flow_id
			UNION ALL
			SELECT NULL, AVG(d) FROM r WHERE ai IN ((an + 1) / 2, an / 2 + 1)`
	}
	rows, err := tx.QueryContext(ctx, query, verified.args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			flow   sql.NullString
			median sql.NullFloat64
		)
		if err := rows.Scan(&flow, &median); err != nil {
			return err
		}
		d := time.Duration(math.Round(median.Float64 * float64(time.Microsecond)))
		if !flow.Valid {
			st.MedianTimeToVerify = d
			continue
		}
		if fl, ok := st.Flows[flow.String]; ok {
			fl.MedianTimeToVerify = d
			st.Flows[flow.String] = fl
		}
	}
	return rows.Err()
}

// ratio is a / b, or 0 when b is 0.
func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
