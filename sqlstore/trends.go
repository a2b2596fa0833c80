package sqlstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/openverify/verify"
)

var _ verify.TrendStore = (*Store)(nil)

// Trends implements verify.TrendStore with aggregates in one read-only
// transaction, as Stats runs its own.
//
// On SQLite, two: the verifications grouped by bucket (its index computed
// from created_at), status, delivery summary and delivery_steps, from which
// the buckets, the statuses, the channels and the steps are added up; and
// the 50th and 95th percentiles of the time to verify, with the
// openverify_percentile aggregate the store registers (see percentile.go),
// in one pass without a sort per percentile.
//
// On PostgreSQL, four: per bucket and status, the verifications and those
// with a delivery that did not fail (a semi-join); the channels, as Stats
// counts them; the percentiles with percentile_disc; and the
// verifications per delivery step, joined.
func (s *Store) Trends(ctx context.Context, q verify.TrendQuery) (verify.Trends, error) {
	tr, err := s.trends(ctx, q)
	return tr, wrap("trends", err)
}

func (s *Store) trends(ctx context.Context, q verify.TrendQuery) (verify.Trends, error) {
	var tr verify.Trends
	opts := &sql.TxOptions{ReadOnly: true}
	if s.pg() {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return tr, err
	}
	defer tx.Rollback()

	f := s.filter(q.Query)
	var bucket string
	if s.pg() {
		bucket = `FLOOR(EXTRACT(EPOCH FROM v.created_at - ` + f.bind(q.From) + `::timestamptz) / ` + f.bind(q.Bucket.Seconds()) + `)::bigint`
	} else {
		bucket = `(v.created_at - ` + f.bind(q.From.UnixMicro()) + `) / ` + f.bind(q.Bucket.Microseconds())
	}
	buckets := map[int64]*verify.TrendBucket{}
	at := func(i int64) *verify.TrendBucket {
		b := buckets[i]
		if b == nil {
			b = &verify.TrendBucket{Start: q.From.Add(time.Duration(i) * q.Bucket)}
			buckets[i] = b
		}
		return b
	}
	verified := 0
	tr.ByStatus, tr.Channels = map[verify.Status]int{}, map[string]verify.ChannelStats{}
	if s.pg() {
		err = eachRow(ctx, tx, `SELECT `+bucket+` AS b, v.status, COUNT(*),
			COUNT(*) FILTER (WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.verification_id = v.id AND d.status <> 'failed'))
			FROM verifications v `+f.where()+` GROUP BY b, v.status`, f.args, func(rows *sql.Rows) error {
			var (
				i             int64
				status        verify.Status
				created, sent int
			)
			if err := rows.Scan(&i, &status, &created, &sent); err != nil {
				return err
			}
			b := at(i)
			b.Created += created
			b.Sent += sent
			tr.ByStatus[status] += created
			if status == verify.StatusVerified {
				b.Verified += created
				verified += created
			}
			return nil
		})
		if err == nil {
			st := verify.Stats{Channels: tr.Channels}
			sq := s.pgStatsQueries(q.Query)
			err = scanEach(ctx, tx, sq.channels, sq.args, &st, channelRow)
		}
	} else {
		// One pass: the buckets, the statuses, the channels (from the
		// delivery summaries, as Stats reads them) and the steps (from the
		// delivery_steps masks).
		err = eachRow(ctx, tx, `SELECT `+bucket+` AS b, v.status, v.delivery_summary, v.delivery_steps, COUNT(*)
			FROM verifications v `+f.where()+` GROUP BY b, v.status, v.delivery_summary, v.delivery_steps`, f.args, func(rows *sql.Rows) error {
			var (
				i       int64
				status  verify.Status
				summary string
				steps   int64
				k       int
			)
			if err := rows.Scan(&i, &status, &summary, &steps, &k); err != nil {
				return err
			}
			entries, err := parseSummary(summary)
			if err != nil {
				return err
			}
			b := at(i)
			b.Created += k
			tr.ByStatus[status] += k
			isVerified := status == verify.StatusVerified
			if isVerified {
				b.Verified += k
				verified += k
			}
			if addSummary(tr.Channels, entries, k, isVerified) {
				b.Sent += k
			}
			for step := 0; step < resendBit; step++ {
				if steps&(1<<step) != 0 {
					for len(tr.Steps) <= step {
						tr.Steps = append(tr.Steps, 0)
					}
					tr.Steps[step] += k
				}
			}
			if steps&(1<<resendBit) != 0 {
				tr.Resends += k
			}
			return nil
		})
	}
	if err != nil {
		return tr, err
	}
	for _, b := range buckets {
		tr.Buckets = append(tr.Buckets, *b)
	}

	if verified > 0 {
		g := s.filter(q.Query)
		where := g.where("v.status = 'verified'", "v.verified_at IS NOT NULL")
		var p50, p95 sql.NullInt64
		if s.pg() {
			d := `(EXTRACT(EPOCH FROM v.verified_at - v.created_at) * 1000000)::bigint`
			err = tx.QueryRowContext(ctx, `SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY `+d+`),
				percentile_disc(0.95) WITHIN GROUP (ORDER BY `+d+`) FROM verifications v `+where, g.args...).Scan(&p50, &p95)
		} else {
			err = tx.QueryRowContext(ctx, `SELECT openverify_percentile(v.verified_at - v.created_at, 50),
				openverify_percentile(v.verified_at - v.created_at, 95) FROM verifications v `+where, g.args...).Scan(&p50, &p95)
		}
		if err != nil {
			return tr, err
		}
		tr.TimeToVerify50, tr.TimeToVerify95 = time.Duration(p50.Int64)*time.Microsecond, time.Duration(p95.Int64)*time.Microsecond
	}

	if s.pg() {
		h := s.filter(q.Query)
		err = eachRow(ctx, tx, `SELECT d.step, COUNT(DISTINCT d.verification_id) FROM verifications v
			JOIN deliveries d ON d.verification_id = v.id `+h.where()+` GROUP BY d.step`, h.args, func(rows *sql.Rows) error {
			var step, n int
			if err := rows.Scan(&step, &n); err != nil {
				return err
			}
			if step < 0 {
				tr.Resends += n
				return nil
			}
			for len(tr.Steps) <= step {
				tr.Steps = append(tr.Steps, 0)
			}
			tr.Steps[step] = n
			return nil
		})
		if err != nil {
			return tr, err
		}
	}
	return tr, tx.Commit()
}

// eachRow runs query and hands each row to fn.
func eachRow(ctx context.Context, tx *sql.Tx, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}
