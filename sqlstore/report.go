package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
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
	page := `(SELECT ` + prefixed("v", verificationReadCols) + ` FROM verifications v ` + f.where() + `
		ORDER BY v.created_at DESC, v.id DESC LIMIT ` + f.bind(limit) + `) v`
	return withDeliveries(page, "", "v.created_at DESC, v.id DESC"), f.args
}

// Stats implements verify.ReportStore. The database aggregates, and the
// queries run in one read-only transaction so that they see the same rows.
//
// On PostgreSQL, three queries, whatever the number of flows and channels,
// which hash-join verifications and deliveries:
//
//   - counts by flow and status, of all verifications and of those with a
//     delivery that did not fail (Total, ByStatus, Sent, Verified, overall
//     and per flow);
//   - counts by channel (ChannelStats);
//   - the medians of verified_at - created_at over verified verifications,
//     overall and per flow, with percentile_cont.
//
// On SQLite, which has neither hash joins nor hash aggregates, two:
//
//   - counts by flow, status and delivery summary (the per-verification
//     counts of deliveries by channel and status that RecordDelivery keeps),
//     read in the order of the verifications_report index without sorting;
//     the few distinct summaries are added up into every count above;
//   - the medians, the middle rows of each flow's verified verifications
//     and of all of them, sorted by time to verify and cut with LIMIT and
//     OFFSET (SQLite has no percentile).
func (s *Store) Stats(ctx context.Context, q verify.Query) (verify.Stats, error) {
	st, err := s.stats(ctx, q)
	if err != nil {
		return verify.Stats{}, wrap("stats", err)
	}
	return st, nil
}

func (s *Store) stats(ctx context.Context, q verify.Query) (verify.Stats, error) {
	st := verify.Stats{
		ByStatus: map[verify.Status]int{},
		Channels: map[string]verify.ChannelStats{},
		Flows:    map[string]verify.FlowStats{},
	}
	// On PostgreSQL, REPEATABLE READ gives the queries one snapshot; on
	// SQLite, any read transaction does (a deferred BEGIN, since it is
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
	if s.pg() {
		sq := s.pgStatsQueries(q)
		if err := scanEach(ctx, tx, sq.statuses, sq.args, &st, statusRow); err != nil {
			return st, err
		}
		if err := scanEach(ctx, tx, sq.channels, sq.args, &st, channelRow); err != nil {
			return st, err
		}
		if err := scanEach(ctx, tx, sq.medians, sq.args, &st, medianRow); err != nil {
			return st, err
		}
	} else {
		f := s.filter(q)
		if err := scanEach(ctx, tx, sqliteSummaries(f), f.args, &st, summaryRow); err != nil {
			return st, err
		}
		if st.Verified > 0 {
			medians, args := sqliteMedians(f, &st)
			if err := scanEach(ctx, tx, medians, args, &st, medianRow); err != nil {
				return st, err
			}
		}
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

// pgStatsQueries are the queries Stats runs on PostgreSQL, which share
// their arguments.
type pgStatsQueries struct {
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

// pgStatsQueries returns the queries Stats runs on PostgreSQL for q.
func (s *Store) pgStatsQueries(q verify.Query) pgStatsQueries {
	f := s.filter(q)
	where := f.where()
	sq := pgStatsQueries{args: f.args}
	// Two counts by flow and status: of every verification, and of those
	// with a delivery that did not fail (a hash semi-join), told apart by
	// the first column.
	sq.statuses = `SELECT 0, v.flow_id, v.status, COUNT(*) FROM verifications v ` + where + `
		GROUP BY v.flow_id, v.status
		UNION ALL
		SELECT 1, v.flow_id, v.status, COUNT(*) FROM verifications v ` + f.where(`EXISTS (SELECT 1 FROM deliveries d
			WHERE d.verification_id = v.id AND d.status <> 'failed')`) + `
		GROUP BY v.flow_id, v.status`
	// Verifications without deliveries make a NULL channel, left out.
	sq.channels = `SELECT d.channel, COUNT(*),
		SUM(CASE WHEN d.status = 'sent' THEN 1 ELSE 0 END),
		SUM(CASE WHEN d.status = 'delivered' THEN 1 ELSE 0 END),
		SUM(CASE WHEN d.status = 'failed' THEN 1 ELSE 0 END),
		COUNT(DISTINCT CASE WHEN d.status <> 'failed' THEN v.id END),
		COUNT(DISTINCT CASE WHEN d.status <> 'failed' AND v.status = 'verified' THEN v.id END)
		FROM verifications v LEFT JOIN deliveries d ON d.verification_id = v.id ` + where + `
		GROUP BY d.channel
		HAVING d.channel IS NOT NULL`
	sq.medians = `SELECT CASE WHEN GROUPING(v.flow_id) = 0 THEN v.flow_id END,
		percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM v.verified_at - v.created_at) * 1000000)
		FROM verifications v ` + f.where("v.status = 'verified'", "v.verified_at IS NOT NULL") + `
		GROUP BY GROUPING SETS ((v.flow_id), ())`
	return sq
}

// sqliteSummaries is SQLite's count of the verifications f selects by
// flow, status and delivery summary: flow_id, status, summary, count.
// Without filters, or with the flow and status ones, it reads
// verifications_report in order and sorts nothing.
func sqliteSummaries(f *filter) string {
	return `SELECT v.flow_id, v.status, v.delivery_summary, COUNT(*) FROM verifications v ` + f.where() + `
		GROUP BY v.flow_id, v.status, v.delivery_summary`
}

// sqliteMedians returns SQLite's query of the median time to verify of
// each flow in st with verified verifications, and overall (flow NULL),
// over the verifications f selects, in microseconds: the middle rows of n
// sorted ones are numbers (n+1)/2 and n/2+1 (the same row when n is odd),
// found with ORDER BY, LIMIT 2 - n%2 and OFFSET (n-1)/2, which SQLite sorts
// keeping only the rows up to the limit. The counts c are made in the same
// query, from the same rows.
func sqliteMedians(f *filter, st *verify.Stats) (string, []any) {
	g := &filter{conds: slices.Clip(f.conds), args: slices.Clip(f.args)}
	g.and("v.status = 'verified'")
	g.and("v.verified_at IS NOT NULL")
	where := g.where()
	middle := func(flowCond, n string) string {
		return `(SELECT AVG(d) FROM (SELECT v.verified_at - v.created_at AS d FROM verifications v ` + where + flowCond + `
			ORDER BY d LIMIT 2 - ` + n + ` % 2 OFFSET (` + n + ` - 1) / 2))`
	}
	var b strings.Builder
	b.WriteString(`WITH c AS MATERIALIZED (SELECT v.flow_id AS flow_id, COUNT(*) AS n FROM verifications v ` + where + `
		GROUP BY v.flow_id)
		SELECT NULL, ` + middle("", "(SELECT SUM(n) FROM c)"))
	flows := make([]string, 0, len(st.Flows))
	for id, fl := range st.Flows {
		if fl.Verified > 0 {
			flows = append(flows, id)
		}
	}
	slices.Sort(flows)
	for _, id := range flows {
		p := g.bind(id)
		b.WriteString("\n\t\tUNION ALL SELECT " + p + ", " + middle(" AND v.flow_id = "+p, "(SELECT n FROM c WHERE flow_id = "+p+")"))
	}
	return b.String(), g.args
}

// scanEach runs one of Stats' queries and adds each row to st with fn.
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

// statusRow adds a row of pgStatsQueries.statuses to Total, ByStatus and
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

// summaryRow adds a row of sqliteSummaries: k verifications of one flow
// and status with the same deliveries.
func summaryRow(st *verify.Stats, rows *sql.Rows) error {
	var (
		flow, summary string
		status        verify.Status
		k             int
	)
	if err := rows.Scan(&flow, &status, &summary, &k); err != nil {
		return err
	}
	entries, err := parseSummary(summary)
	if err != nil {
		return err
	}
	fl := st.Flows[flow]
	fl.Total += k
	st.Total += k
	st.ByStatus[status] += k
	verified := status == verify.StatusVerified
	if verified {
		fl.Verified += k
		st.Verified += k
	}
	if addSummary(st.Channels, entries, k, verified) {
		fl.Sent += k
		st.Sent += k
	}
	st.Flows[flow] = fl
	return nil
}

// summaryEntry is one [channel, status, count] of a delivery summary.
type summaryEntry struct {
	channel string
	status  verify.DeliveryStatus
	n       int
}

// parseSummary decodes a delivery summary and sorts it by channel, each
// channel's failed entries first, so that summaryRow finds the first entry
// of a channel that did not fail right after another channel's entry or a
// failed one.
// addSummary adds k verifications with the delivery summary entries (and
// verified or not) to the channels' figures, and reports whether they were
// sent: whether any delivery did not fail.
func addSummary(channels map[string]verify.ChannelStats, entries []summaryEntry, k int, verified bool) bool {
	sent := false
	for i, e := range entries {
		c := channels[e.channel]
		c.Deliveries += e.n * k
		switch e.status {
		case verify.DeliverySent:
			c.Sent += e.n * k
		case verify.DeliveryDelivered:
			c.Delivered += e.n * k
		case verify.DeliveryFailed:
			c.Failed += e.n * k
		}
		// A channel's verifications are counted by the first of its
		// entries that did not fail.
		if e.status != verify.DeliveryFailed {
			sent = true
			if i == 0 || entries[i-1].channel != e.channel || entries[i-1].status == verify.DeliveryFailed {
				c.Verifications += k
				if verified {
					c.Verified += k
				}
			}
		}
		channels[e.channel] = c
	}
	return sent
}

func parseSummary(summary string) ([]summaryEntry, error) {
	var raw [][]json.RawMessage
	if err := json.Unmarshal([]byte(summary), &raw); err != nil {
		return nil, fmt.Errorf("delivery summary %q: %w", summary, err)
	}
	out := make([]summaryEntry, len(raw))
	for i, r := range raw {
		e := &out[i]
		if len(r) != 3 || json.Unmarshal(r[0], &e.channel) != nil || json.Unmarshal(r[1], &e.status) != nil || json.Unmarshal(r[2], &e.n) != nil {
			return nil, fmt.Errorf("delivery summary %q: entry %d is not [channel, status, count]", summary, i)
		}
	}
	slices.SortStableFunc(out, func(a, b summaryEntry) int {
		if c := strings.Compare(a.channel, b.channel); c != 0 {
			return c
		}
		return boolOrder(a.status != verify.DeliveryFailed) - boolOrder(b.status != verify.DeliveryFailed)
	})
	return out, nil
}

func boolOrder(b bool) int {
	if b {
		return 1
	}
	return 0
}

// channelRow adds a row of pgStatsQueries.channels: one channel's figures.
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

// medianRow adds a row of the medians query: a flow's median time to
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
