package sqlstore_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
)

// reportFlows and reportChannels are the flows and channels of fillReports'
// verifications; the first flow gets half of them.
var (
	reportFlows    = []string{"flow-login", "flow-signup", "flow-payment", "flow-reset"}
	reportChannels = []string{"sms", "email", "voice"}
)

// fillReports stores n verifications created from start onwards, about
// 25 s apart (some at the same instant), across reportFlows and
// reportChannels and in every status, with 0 to 2 deliveries each, some
// failed, and returns them as stored, oldest first. It inserts straight
// into the tables, mirroring the schema, in multi-row INSERTs of one
// transaction per 5,000 verifications, which is much faster than the Store
// methods for a large fixture.
func fillReports(tb testing.TB, st *sqlstore.Store, n int, seed uint64) []verify.VerificationRecord {
	tb.Helper()
	rnd := rand.New(rand.NewPCG(seed, 1))
	randomID := func() string {
		b := make([]byte, 12)
		for i := range b {
			b[i] = byte(rnd.UintN(256))
		}
		return hex.EncodeToString(b)
	}
	weighted := func(weights []int) int {
		total := 0
		for _, w := range weights {
			total += w
		}
		k := rnd.IntN(total)
		for i, w := range weights {
			if k < w {
				return i
			}
			k -= w
		}
		return len(weights) - 1
	}
	statuses := []verify.Status{verify.StatusVerified, verify.StatusSent, verify.StatusDelivered, verify.StatusPending,
		verify.StatusExpired, verify.StatusCanceled, verify.StatusMaxAttempts, verify.StatusFailed}
	statusWeights := []int{55, 6, 4, 2, 18, 5, 5, 5}

	recs := make([]verify.VerificationRecord, n)
	created := start
	for i := range recs {
		if i == 0 || rnd.IntN(40) > 0 { // 1 in 40 shares the previous instant
			created = created.Add(time.Duration(20_000_000+rnd.IntN(10_000_000)) * time.Microsecond)
		}
		v := verify.VerificationRecord{
			ID:        randomID(),
			FlowID:    reportFlows[weighted([]int{50, 25, 15, 10})],
			ForeignID: fmt.Sprintf("user-%d", rnd.IntN(n/8+1)),
			Status:    statuses[weighted(statusWeights)],
			To:        verify.Recipient{Phone: fmt.Sprintf("+4740%06d", rnd.IntN(n/4+1))},
			CreatedAt: created,
			ExpiresAt: created.Add(10 * time.Minute),
		}
		if rnd.IntN(3) == 0 {
			v.To.Email = fmt.Sprintf("u%d@example.com", rnd.IntN(n/4+1))
		}
		switch v.Status {
		case verify.StatusVerified:
			v.VerifiedAt = created.Add(time.Duration(3_000_000+rnd.IntN(240_000_000)) * time.Microsecond)
			v.EndedAt = v.VerifiedAt
		case verify.StatusExpired:
			v.EndedAt = v.ExpiresAt
		case verify.StatusCanceled, verify.StatusMaxAttempts, verify.StatusFailed:
			v.EndedAt = created.Add(time.Duration(1+rnd.IntN(300)) * time.Second)
		}
		deliveries := 1
		switch {
		case v.Status == verify.StatusPending || rnd.IntN(50) == 0:
			deliveries = 0
		case rnd.IntN(10) < 3:
			deliveries = 2 // a fallback on another channel
		}
		first := rnd.IntN(len(reportChannels))
		for k := range deliveries {
			d := verify.DeliveryRecord{
				ID:             randomID(),
				VerificationID: v.ID,
				Step:           k,
				Channel:        reportChannels[(first+k)%len(reportChannels)],
				From:           "ACME",
				Status:         verify.DeliverySent,
				ProviderID:     "p-" + v.ID,
				CreatedAt:      created.Add(time.Duration(k) * 30 * time.Second),
			}
			switch r := rnd.IntN(20); {
			case v.Status == verify.StatusFailed || r < 2:
				d.Status, d.Error = verify.DeliveryFailed, "provider said no"
			case r < 12:
				d.Status = verify.DeliveryDelivered
			}
			d.UpdatedAt = d.CreatedAt.Add(time.Second)
			v.Deliveries = append(v.Deliveries, d)
		}
		recs[i] = v
	}
	insertRecords(tb, st, recs)
	return recs
}

// insertRecords inserts verifications and their deliveries.
func insertRecords(tb testing.TB, st *sqlstore.Store, recs []verify.VerificationRecord) {
	tb.Helper()
	ctx := context.Background()
	pg := st.Dialect() == sqlstore.Postgres
	tv := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		if pg {
			return t
		}
		return t.UnixMicro()
	}
	const (
		perTx   = 5000
		perStmt = 500
	)
	for lo := 0; lo < len(recs); lo += perTx {
		batch := recs[lo:min(lo+perTx, len(recs))]
		tx, err := st.DB().BeginTx(ctx, nil)
		require.NoError(tb, err)
		var vrows, drows [][]any
		for _, v := range batch {
			vrows = append(vrows, []any{v.ID, v.FlowID, v.ForeignID, string(v.Status), v.To.Phone, v.To.Email, "192.0.2.1",
				nil, nil, "Acme", "en", "en", []byte("0123456789abcdef0123456789abcdef"), nil, 0, 6, 1, 5, 1,
				`[{"channel":"sms"},{"channel":"email","after":30000000000}]`, `null`,
				tv(v.CreatedAt), tv(v.ExpiresAt), tv(v.VerifiedAt), tv(v.EndedAt)})
			for _, d := range v.Deliveries {
				drows = append(drows, []any{d.ID, d.VerificationID, d.Step, d.Channel, d.From, string(d.Status),
					d.ProviderID, d.Error, tv(d.CreatedAt), tv(d.UpdatedAt)})
			}
		}
		insertRows(tb, tx, pg, `INSERT INTO verifications (id, flow_id, foreign_id, status, to_phone, to_email, ip_address,
			idempotency_key, request_hash, brand, language, fallback_language, code_hash, sealed_code, charset,
			code_length, attempts, max_attempts, sends, steps, allowed_ips, created_at, expires_at, verified_at, ended_at)
			VALUES `, vrows, perStmt)
		insertRows(tb, tx, pg, `INSERT INTO deliveries (id, verification_id, step, channel, sender, status,
			provider_id, error, created_at, updated_at) VALUES `, drows, perStmt)
		require.NoError(tb, tx.Commit())
	}
	require.NoError(tb, st.SummarizeDeliveries(ctx))
}

// insertRows runs prefix with up to per rows of values at a time. SQLite
// gets ? placeholders: it takes $N for a parameter name, and looking up
// thousands of names in one statement is slow.
func insertRows(tb testing.TB, tx *sql.Tx, pg bool, prefix string, rows [][]any, per int) {
	tb.Helper()
	for lo := 0; lo < len(rows); lo += per {
		chunk := rows[lo:min(lo+per, len(rows))]
		var b strings.Builder
		b.WriteString(prefix)
		var args []any
		for i, row := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(")
			for j, a := range row {
				if j > 0 {
					b.WriteString(", ")
				}
				args = append(args, a)
				if pg {
					fmt.Fprintf(&b, "$%d", len(args))
				} else {
					b.WriteString("?")
				}
			}
			b.WriteString(")")
		}
		_, err := tx.ExecContext(context.Background(), b.String(), args...)
		require.NoError(tb, err)
	}
}

// TestReportsMatchComputeStats checks List and Stats over 2,000
// verifications against verify.Query.Matches and verify.ComputeStats, the
// reference semantics, for each filter and some combinations: every page
// in order with its deliveries, and every figure of Stats, the medians to
// the microsecond.
func TestReportsMatchComputeStats(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t, b.newDSN(t))
			recs := fillReports(t, st, 2000, 7)
			var email string
			for _, r := range recs[100:] {
				if r.To.Email != "" {
					email = r.To.Email
					break
				}
			}
			mid := recs[len(recs)/2].CreatedAt
			queries := []verify.Query{
				{},
				{FlowID: reportFlows[1]},
				{FlowID: "no-such-flow"},
				{Channel: "voice"},
				{Statuses: []verify.Status{verify.StatusVerified, verify.StatusFailed, verify.StatusVerified}},
				{Statuses: []verify.Status{verify.StatusPending}},
				{ForeignID: recs[10].ForeignID},
				{Recipient: recs[20].To.Phone},
				{Recipient: email},
				{From: mid.Add(-3 * time.Hour), To: mid.Add(3 * time.Hour)},
				// Bounds between stored microseconds: From excludes the
				// verification created a nanosecond before it, To includes
				// the one created a nanosecond before it.
				{From: recs[100].CreatedAt.Add(time.Nanosecond), To: recs[300].CreatedAt.Add(time.Nanosecond)},
				{From: recs[100].CreatedAt.Add(-time.Nanosecond), To: recs[300].CreatedAt.Add(-time.Nanosecond)},
				{FlowID: reportFlows[0], Channel: "sms", Statuses: []verify.Status{verify.StatusVerified, verify.StatusExpired},
					From: recs[200].CreatedAt, To: recs[1500].CreatedAt},
			}
			for i, q := range queries {
				var want []verify.VerificationRecord
				for j := len(recs) - 1; j >= 0; j-- {
					if q.Matches(&recs[j]) {
						want = append(want, recs[j])
					}
				}
				sortNewest(want)

				var got []verify.VerificationRecord
				var after verify.Cursor
				for {
					page, err := st.ListVerifications(ctx, q, after, 97)
					require.NoError(t, err)
					got = append(got, page...)
					if len(page) < 97 {
						break
					}
					last := page[len(page)-1]
					after = verify.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
				}
				require.Equal(t, summaries(want), summaries(got), "query %d (%v): List pages", i, q)

				stats, err := st.Stats(ctx, q)
				require.NoError(t, err)
				requireSameStats(t, verify.ComputeStats(want), stats, fmt.Sprintf("query %d (%v)", i, q))
			}
		})
	}
}

// sortNewest sorts records in List's order.
func sortNewest(rs []verify.VerificationRecord) {
	slices.SortFunc(rs, func(a, b verify.VerificationRecord) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
}

// summaries describes records, with their deliveries, one line each.
func summaries(rs []verify.VerificationRecord) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		s := fmt.Sprintf("%s %s %s %s %s", r.ID, r.CreatedAt.Format(time.RFC3339Nano), r.FlowID, r.Status, r.VerifiedAt.Format(time.RFC3339Nano))
		for _, d := range r.Deliveries {
			s += fmt.Sprintf(" [%s %s %s %s]", d.ID, d.Channel, d.Status, d.CreatedAt.Format(time.RFC3339Nano))
		}
		out[i] = s
	}
	return out
}

// requireSameStats compares Stats exactly, but for durations (to the
// microsecond) and ratios (to 1e-12), treating nil and empty maps alike.
func requireSameStats(t testing.TB, want, got verify.Stats, what string) {
	t.Helper()
	const eps = 1e-12
	assert.InDelta(t, want.Conversion, got.Conversion, eps, "%s: Conversion", what)
	assert.InDelta(t, want.MedianTimeToVerify, got.MedianTimeToVerify, float64(time.Microsecond), "%s: MedianTimeToVerify", what)
	for k, w := range want.Channels {
		g := got.Channels[k]
		assert.InDelta(t, w.Conversion, g.Conversion, eps, "%s: Channels[%s].Conversion", what, k)
		w.Conversion, g.Conversion = 0, 0
		want.Channels[k], got.Channels[k] = w, g
	}
	for k, w := range want.Flows {
		g := got.Flows[k]
		assert.InDelta(t, w.Conversion, g.Conversion, eps, "%s: Flows[%s].Conversion", what, k)
		assert.InDelta(t, w.MedianTimeToVerify, g.MedianTimeToVerify, float64(time.Microsecond), "%s: Flows[%s].MedianTimeToVerify", what, k)
		w.Conversion, g.Conversion, w.MedianTimeToVerify, g.MedianTimeToVerify = 0, 0, 0, 0
		want.Flows[k], got.Flows[k] = w, g
	}
	want.Conversion, got.Conversion, want.MedianTimeToVerify, got.MedianTimeToVerify = 0, 0, 0, 0
	require.Equal(t, want, got, what)
}

// TestReportsCanceledContext: a canceled context is an error, wrapped with
// the operation.
func TestReportsCanceledContext(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := open(t, b.newDSN(t))
			fillReports(t, st, 10, 1)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := st.Stats(ctx, verify.Query{})
			require.Error(t, err)
			assert.True(t, errors.Is(err, context.Canceled), "%v", err)
			assert.True(t, strings.HasPrefix(err.Error(), "sqlstore: stats: "), err.Error())
			_, err = st.ListVerifications(ctx, verify.Query{}, verify.Cursor{}, 10)
			require.Error(t, err)
			assert.True(t, errors.Is(err, context.Canceled), "%v", err)
			assert.True(t, strings.HasPrefix(err.Error(), "sqlstore: list verifications: "), err.Error())
		})
	}
}

// BenchmarkStats100k measures Stats and the first page of List (50 rows
// and one more, as the engine asks) over 100,000 stored verifications with
// their deliveries, across 4 flows and 3 channels, on each database. Run
// it with
//
//	VERIFY_POSTGRES_DSN=postgres://... go test -run '^$' -bench Stats100k ./sqlstore/
func BenchmarkStats100k(b *testing.B) {
	for _, bk := range backends {
		b.Run(bk.name, func(b *testing.B) {
			ctx := context.Background()
			st := open(b, bk.newDSN(b))
			began := time.Now()
			recs := fillReports(b, st, 100_000, 1)
			b.Logf("stored %d verifications in %v", len(recs), time.Since(began).Round(time.Millisecond))
			if st.Dialect() == sqlstore.Postgres {
				// What autovacuum would have done by now.
				_, err := st.DB().ExecContext(ctx, `ANALYZE`)
				require.NoError(b, err)
			}
			last := recs[len(recs)-1].CreatedAt
			stats := func(q verify.Query) func(b *testing.B) {
				return func(b *testing.B) {
					var want []verify.VerificationRecord
					for i := range recs {
						if q.Matches(&recs[i]) {
							want = append(want, recs[i])
						}
					}
					got, err := st.Stats(ctx, q)
					require.NoError(b, err)
					requireSameStats(b, verify.ComputeStats(want), got, q.String())
					b.ReportAllocs()
					b.ResetTimer()
					for range b.N {
						if _, err := st.Stats(ctx, q); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			list := func(q verify.Query) func(b *testing.B) {
				return func(b *testing.B) {
					b.ReportAllocs()
					for range b.N {
						page, err := st.ListVerifications(ctx, q, verify.Cursor{}, 51)
						if err != nil {
							b.Fatal(err)
						}
						if len(page) != 51 {
							b.Fatalf("got %d rows, want 51", len(page))
						}
					}
				}
			}
			b.Run("stats", stats(verify.Query{}))
			b.Run("stats-flow", stats(verify.Query{FlowID: reportFlows[1]}))
			b.Run("stats-last-week", stats(verify.Query{From: last.Add(-7 * 24 * time.Hour)}))
			b.Run("list", list(verify.Query{}))
			b.Run("list-flow", list(verify.Query{FlowID: reportFlows[1]}))
		})
	}
}

// TestReportQueryPlans checks that List and Stats use the indexes made for
// them: the plans of the very statements they run, for each kind of filter.
func TestReportQueryPlans(t *testing.T) {
	at := start.Add(time.Hour)
	cases := []struct {
		q verify.Query
		// want maps a statement of sqlstore.ReportQueries to the indexes
		// its plan names, per dialect.
		want map[sqlstore.Dialect]map[string][]string
	}{
		{verify.Query{}, map[sqlstore.Dialect]map[string][]string{
			sqlstore.SQLite: {
				"list":            {"verifications_created", "deliveries_verification"},
				"list-next":       {"verifications_created"},
				"stats-summaries": {"verifications_report"},
				"stats-medians":   {"verifications_report"},
			},
			sqlstore.Postgres: {
				"list":      {"verifications_created", "deliveries_verification"},
				"list-next": {"verifications_created"},
			},
		}},
		{verify.Query{FlowID: "f"}, map[sqlstore.Dialect]map[string][]string{
			sqlstore.SQLite: {
				"list":            {"verifications_flow_created"},
				"list-next":       {"verifications_flow_created"},
				"stats-summaries": {"verifications_report"},
				"stats-medians":   {"verifications_report"},
			},
			sqlstore.Postgres: {
				"list":           {"verifications_flow_created"},
				"list-next":      {"verifications_flow_created"},
				"stats-statuses": {"verifications_flow_created"},
				"stats-channels": {"verifications_flow_created"},
				"stats-medians":  {"verifications_flow_created"},
			},
		}},
		{verify.Query{ForeignID: "u"}, map[sqlstore.Dialect]map[string][]string{
			sqlstore.SQLite: {
				"list":            {"verifications_foreign_created"},
				"stats-summaries": {"verifications_foreign_created"},
				"stats-medians":   {"verifications_foreign_created"},
			},
			sqlstore.Postgres: {
				"list":           {"verifications_foreign_created"},
				"stats-statuses": {"verifications_foreign_created", "deliveries_verification"},
				"stats-channels": {"verifications_foreign_created", "deliveries_verification"},
				"stats-medians":  {"verifications_foreign_created"},
			},
		}},
		{verify.Query{From: at, To: at.Add(time.Hour)}, map[sqlstore.Dialect]map[string][]string{
			sqlstore.SQLite: {
				"list":      {"verifications_created"},
				"list-next": {"verifications_created"},
			},
			sqlstore.Postgres: {
				"list":           {"verifications_created"},
				"list-next":      {"verifications_created"},
				"stats-statuses": {"verifications_created"},
				"stats-channels": {"verifications_created"},
				"stats-medians":  {"verifications_created"},
			},
		}},
		{verify.Query{Channel: "sms"}, map[sqlstore.Dialect]map[string][]string{
			sqlstore.SQLite: {
				"list":            {"verifications_created", "deliveries_verification"},
				"stats-summaries": {"deliveries_verification"},
			},
			sqlstore.Postgres: {
				"list": {"deliveries_verification"},
			},
		}},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t, b.newDSN(t))
			conn, err := st.DB().Conn(ctx)
			require.NoError(t, err)
			defer conn.Close()
			if st.Dialect() == sqlstore.Postgres {
				// The tables are empty: make the planner show what it would
				// do with data in them.
				_, err := conn.ExecContext(ctx, `SET enable_seqscan = off`)
				require.NoError(t, err)
				defer conn.ExecContext(ctx, `RESET enable_seqscan`)
			}
			if st.Dialect() == sqlstore.SQLite {
				// Unfiltered, Stats' counts read one index in order and sort
				// nothing.
				stmt := st.ReportQueries(verify.Query{})["stats-summaries"]
				plan := queryPlan(t, conn, st.Dialect(), stmt.SQL, stmt.Args...)
				assert.NotContains(t, plan, "TEMP B-TREE", "plan of the unfiltered stats-summaries:\n%s", plan)
				assert.Contains(t, plan, "COVERING INDEX verifications_report", "plan of the unfiltered stats-summaries:\n%s", plan)
			}
			for _, c := range cases {
				stmts := st.ReportQueries(c.q)
				for name, indexes := range c.want[st.Dialect()] {
					plan := queryPlan(t, conn, st.Dialect(), stmts[name].SQL, stmts[name].Args...)
					for _, index := range indexes {
						assert.Contains(t, plan, index, "%v: plan of %s:\n%s", c.q, name, plan)
					}
				}
			}
		})
	}
}
