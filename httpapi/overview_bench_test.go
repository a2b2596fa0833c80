package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/sqlstore"
)

// overviewRows is how many verifications BenchmarkConsoleOverview's store
// holds, all of them in the page's range.
const overviewRows = 100_000

// BenchmarkConsoleOverview renders the console's overview (the last 24
// hours: totals, charts, figures by channel and status, the newest 25)
// over a SQLite file holding 100,000 verifications of those 24 hours, with
// 133,333 deliveries (a voice fallback on every third), 80 % verified.
// The rows are written with SQL in bulk (the store's own statements would
// take minutes), their delivery summaries and steps with the statements of
// migrations delivery_summary and delivery_steps, and checked through Stats
// and Trends before the timing. It
// reports ms/page.
//
//	go test -run '^$' -bench ConsoleOverview -benchtime 20x ./httpapi/
func BenchmarkConsoleOverview(b *testing.B) {
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "overview.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	clk := clock.NewMock()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	clk.Set(now)
	eng, err := verify.New(st, verify.WithClock(clk), verify.WithSecret(testSecret), verify.WithLogger(discard),
		verify.WithChannels(recorders("sms", "voice")...))
	if err != nil {
		b.Fatal(err)
	}
	f, err := eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true,
		Steps: []verify.Step{{Channel: "sms"}, {Channel: "voice", After: 30 * time.Second}}})
	if err != nil {
		b.Fatal(err)
	}
	from := now.Truncate(time.Hour).Add(-23 * time.Hour)
	spacing := 24 * time.Hour / overviewRows
	for _, q := range []string{
		`WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $1 - 1)
		INSERT INTO verifications (id, flow_id, foreign_id, status, to_phone, to_email, ip_address, brand, language,
			fallback_language, code_hash, charset, code_length, attempts, max_attempts, sends, last_sent_at, steps, allowed_ips,
			created_at, expires_at, verified_at, ended_at, checks)
		SELECT printf('v%06d', i), $2, printf('user-%d', i % 5000),
			CASE WHEN i % 10 < 8 THEN 'verified' WHEN i % 10 = 8 THEN 'expired' ELSE 'sent' END,
			printf('+4790%06d', i), '', '', 'Acme', 'en', 'en', randomblob(32), 0, 6,
			CASE WHEN i % 10 < 8 THEN 1 ELSE 0 END, 5, 1, $3 + i * $4, '[]', '[]',
			$3 + i * $4, $3 + i * $4 + 300000000,
			CASE WHEN i % 10 < 8 THEN $3 + i * $4 + (3 + i % 40) * 1000000 END,
			CASE WHEN i % 10 < 8 THEN $3 + i * $4 + (3 + i % 40) * 1000000 WHEN i % 10 = 8 THEN $3 + i * $4 + 300000000 END,
			CASE WHEN i % 10 < 8 THEN printf('%dr', $3 + i * $4 + (3 + i % 40) * 1000000) ELSE '' END
		FROM n`,
		`INSERT INTO deliveries (id, verification_id, step, channel, sender, status, provider_id, error, created_at, updated_at)
		SELECT id || '-0', id, 0, 'sms', '', CASE WHEN rowid % 7 = 0 THEN 'delivered' ELSE 'sent' END, '', '', created_at, created_at
		FROM verifications`,
		`INSERT INTO deliveries (id, verification_id, step, channel, sender, status, provider_id, error, created_at, updated_at)
		SELECT id || '-1', id, 1, 'voice', '', 'sent', '', '', created_at + 30000000, created_at + 30000000
		FROM verifications WHERE rowid % 3 = 0`,
		`UPDATE verifications SET delivery_summary = (
			SELECT json_group_array(json_array(channel, status, n)) FROM (
				SELECT channel, status, COUNT(*) AS n FROM deliveries
				WHERE verification_id = verifications.id
				GROUP BY channel, status ORDER BY channel, status))`,
		`UPDATE verifications SET delivery_steps = (
			SELECT SUM(DISTINCT CASE WHEN step >= 0 THEN 1 << step ELSE 1 << 30 END)
			FROM deliveries WHERE verification_id = verifications.id)`,
		`ANALYZE`,
	} {
		if _, err := st.DB().ExecContext(ctx, q, overviewRows, f.ID, from.UnixMicro(), spacing.Microseconds()); err != nil {
			b.Fatalf("%v\n%s", err, q)
		}
	}
	stats, err := eng.Stats(ctx, verify.Query{From: from, To: from.Add(24 * time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	if stats.Total != overviewRows || stats.Sent != overviewRows || stats.Verified != overviewRows*8/10 {
		b.Fatalf("the fixture is not what it should be: %+v", stats)
	}
	tr, err := eng.Trends(ctx, verify.TrendQuery{Query: verify.Query{From: from, To: from.Add(24 * time.Hour)}, Bucket: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	if len(tr.Steps) != 2 || tr.Steps[0] != overviewRows || tr.Steps[1] != overviewRows/3 {
		b.Fatalf("the fixture's steps are not what they should be: %v", tr.Steps)
	}

	srv := New(eng, WithAdminKeys(testAdminKey), WithLogger(discard))
	cookie := &http.Cookie{Name: sessionCookie, Value: newSession(testAdminKey, "bench", now, time.Hour).encode()}
	get := func() {
		req := httptest.NewRequest("GET", consolePath+"?range=24h", nil)
		req.AddCookie(cookie)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("overview: %d %s", w.Code, w.Body.String()[:min(w.Body.Len(), 500)])
		}
	}
	get()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		get()
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/page")
}

// recorders are channels that keep what they are given.
func recorders(names ...string) []verify.Channel {
	out := make([]verify.Channel, len(names))
	for i, n := range names {
		out[i] = channels.NewRecorder(n)
	}
	return out
}
