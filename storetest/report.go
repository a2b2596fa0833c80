package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// reportFixture stores 24 verifications across two flows, three channels
// and every status, one second apart, and returns them oldest first.
func reportFixture(t *testing.T, s verificationStore) []verify.VerificationRecord {
	t.Helper()
	statuses := []verify.Status{verify.StatusVerified, verify.StatusSent, verify.StatusExpired, verify.StatusVerified,
		verify.StatusFailed, verify.StatusCanceled, verify.StatusMaxAttempts, verify.StatusVerified}
	var out []verify.VerificationRecord
	for i := range 24 {
		v := sampleVerification(5, time.Hour)
		v.FlowID = []string{"flow-a", "flow-b"}[i%2]
		v.ForeignID = fmt.Sprintf("user-%d", i%5)
		v.To = verify.Recipient{Phone: fmt.Sprintf("+47400000%02d", i%6)}
		v.CreatedAt = at(time.Duration(i) * time.Second)
		if i == 7 {
			v.CreatedAt = at(6 * time.Second) // a tie on CreatedAt, broken by ID
		}
		v.ExpiresAt = v.CreatedAt.Add(time.Hour)
		create(t, s, v, nil)
		st := statuses[i%len(statuses)]
		channel := []string{"sms", "email", "voice"}[i%3]
		dst := verify.DeliverySent
		if st == verify.StatusFailed {
			dst = verify.DeliveryFailed
		}
		d0 := delivery(v, v.ID+"-0", 0, dst, v.CreatedAt)
		d0.Channel = channel
		record(t, s, d0)
		if i%4 == 0 {
			d := delivery(v, v.ID+"-1", 1, verify.DeliveryDelivered, v.CreatedAt.Add(time.Second))
			d.Channel = "email"
			record(t, s, d)
		}
		if i%5 == 0 { // a receipt: the first delivery failed after all
			d0.Status, d0.UpdatedAt = verify.DeliveryFailed, v.CreatedAt.Add(2*time.Second)
			record(t, s, d0)
		}
		if !st.Open() {
			done := v.CreatedAt.Add(time.Duration(i+1) * time.Second)
			_, _, err := s.Finish(ctx(), v.ID, st, done)
			require.NoError(t, err)
		}
		got, err := s.GetVerification(ctx(), v.ID)
		require.NoError(t, err)
		out = append(out, got)
	}
	return out
}

func testReports(t *testing.T, s verificationStore) {
	rs, ok := s.(verify.ReportStore)
	if !ok {
		t.Logf("%T does not implement verify.ReportStore; List, Stats and WriteCSV are unavailable with it", s)
		return
	}
	all := reportFixture(t, s)

	queries := []verify.Query{
		{},
		{FlowID: "flow-a"},
		{Statuses: []verify.Status{verify.StatusVerified, verify.StatusExpired}},
		{Channel: "email"},
		{ForeignID: "user-3"},
		{Recipient: "+4740000002"},
		{From: at(5 * time.Second), To: at(15 * time.Second)},
		{FlowID: "flow-b", Channel: "sms", Statuses: []verify.Status{verify.StatusSent, verify.StatusVerified}},
		{FlowID: "none"},
	}
	for i, q := range queries {
		t.Run(fmt.Sprint("query", i), func(t *testing.T) {
			var want []verify.VerificationRecord
			for j := len(all) - 1; j >= 0; j-- {
				if q.Matches(&all[j]) {
					want = append(want, all[j])
				}
			}
			sortNewest(want)
			// Page through 5 at a time.
			var got []verify.VerificationRecord
			var after verify.Cursor
			for {
				page, err := rs.ListVerifications(ctx(), q, after, 5)
				require.NoError(t, err)
				got = append(got, page...)
				if len(page) < 5 {
					break
				}
				last := page[len(page)-1]
				after = verify.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
				require.Less(t, len(got), 100, "pagination does not end")
			}
			require.Equal(t, ids(want), ids(got), "newest first, ties by ID descending, filters applied, pages without gaps or repeats")
			for _, r := range got {
				assert.NotEmpty(t, r.Deliveries, "ListVerifications fills Deliveries")
			}

			st, err := rs.Stats(ctx(), q)
			require.NoError(t, err)
			assertStats(t, verify.ComputeStats(want), st)
		})
	}
}

func sortNewest(rs []verify.VerificationRecord) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && newerThan(rs[j], rs[j-1]); j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

func newerThan(a, b verify.VerificationRecord) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.ID > b.ID
}

func ids(rs []verify.VerificationRecord) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// assertStats compares Stats, durations to the millisecond and ratios to
// 1e-9, treating missing and zero map entries alike.
func assertStats(t *testing.T, want, got verify.Stats) {
	t.Helper()
	assert.Equal(t, want.Total, got.Total, "Total")
	assert.Equal(t, want.Sent, got.Sent, "Sent")
	assert.Equal(t, want.Verified, got.Verified, "Verified")
	assert.InDelta(t, want.Conversion, got.Conversion, 1e-9, "Conversion")
	assert.InDelta(t, want.MedianTimeToVerify.Seconds(), got.MedianTimeToVerify.Seconds(), 1e-3, "MedianTimeToVerify")
	for s, n := range want.ByStatus {
		assert.Equal(t, n, got.ByStatus[s], "ByStatus[%s]", s)
	}
	for s, n := range got.ByStatus {
		assert.Equal(t, want.ByStatus[s], n, "ByStatus[%s]", s)
	}
	assert.Len(t, got.Channels, len(want.Channels), "Channels")
	for k, w := range want.Channels {
		g := got.Channels[k]
		assert.InDelta(t, w.Conversion, g.Conversion, 1e-9, "Channels[%s].Conversion", k)
		w.Conversion, g.Conversion = 0, 0
		assert.Equal(t, w, g, "Channels[%s]", k)
	}
	assert.Len(t, got.Flows, len(want.Flows), "Flows")
	for k, w := range want.Flows {
		g := got.Flows[k]
		assert.InDelta(t, w.Conversion, g.Conversion, 1e-9, "Flows[%s].Conversion", k)
		assert.InDelta(t, w.MedianTimeToVerify.Seconds(), g.MedianTimeToVerify.Seconds(), 1e-3, "Flows[%s].MedianTimeToVerify", k)
		w.Conversion, g.Conversion, w.MedianTimeToVerify, g.MedianTimeToVerify = 0, 0, 0, 0
		assert.Equal(t, w, g, "Flows[%s]", k)
	}
}

// testTrends checks verify.TrendStore, for the stores that have it,
// against verify.ComputeTrends over the same records.
func testTrends(t *testing.T, s verificationStore) {
	ts, ok := s.(verify.TrendStore)
	if !ok {
		t.Logf("%T does not implement verify.TrendStore; Trends is unavailable with it", s)
		return
	}
	// 30 verifications 25 minutes apart, over two flows: some with a
	// fallback step, some with a failed first delivery, some resent;
	// verified ones taking 1 to 30 seconds.
	var all []verify.VerificationRecord
	for i := range 30 {
		v := sampleVerification(5, time.Hour)
		v.FlowID = []string{"flow-a", "flow-b"}[i%2]
		v.CreatedAt = at(time.Duration(i) * 25 * time.Minute)
		v.ExpiresAt = v.CreatedAt.Add(time.Hour)
		create(t, s, v, nil)
		st0 := verify.DeliverySent
		if i%7 == 0 {
			st0 = verify.DeliveryFailed
		}
		record(t, s, delivery(v, v.ID+"-0", 0, st0, v.CreatedAt))
		if i%3 == 0 {
			d := delivery(v, v.ID+"-1", 1, verify.DeliveryDelivered, v.CreatedAt.Add(30*time.Second))
			d.Channel = "voice"
			record(t, s, d)
		}
		if i%5 == 0 {
			record(t, s, delivery(v, v.ID+"-r", -1, verify.DeliverySent, v.CreatedAt.Add(40*time.Second)))
		}
		if i%2 == 0 || i%3 == 0 {
			_, _, err := s.Finish(ctx(), v.ID, verify.StatusVerified, v.CreatedAt.Add(time.Duration(i+1)*time.Second))
			require.NoError(t, err)
		}
		got, err := s.GetVerification(ctx(), v.ID)
		require.NoError(t, err)
		all = append(all, got)
	}
	for i, q := range []verify.TrendQuery{
		{Query: verify.Query{From: base, To: at(13 * time.Hour)}, Bucket: time.Hour},
		{Query: verify.Query{From: base.Add(-3 * time.Hour), To: base.Add(45 * time.Hour)}, Bucket: 24 * time.Hour},
		{Query: verify.Query{From: at(90 * time.Minute), To: at(7*time.Hour + 17*time.Minute), FlowID: "flow-b"}, Bucket: time.Hour},
		{Query: verify.Query{From: base, To: at(13 * time.Hour), Statuses: []verify.Status{verify.StatusVerified}}, Bucket: time.Hour},
		{Query: verify.Query{From: at(20 * time.Hour), To: at(30 * time.Hour)}, Bucket: time.Hour},
	} {
		var want []verify.VerificationRecord
		for j := range all {
			if q.Matches(&all[j]) {
				want = append(want, all[j])
			}
		}
		got, err := ts.Trends(ctx(), q)
		require.NoError(t, err, "query %d", i)
		exp := verify.ComputeTrends(want, q)
		assert.Equal(t, nonEmpty(exp.Buckets), nonEmpty(got.Buckets), "query %d: buckets", i)
		assert.Equal(t, exp.TimeToVerify50, got.TimeToVerify50, "query %d: p50", i)
		assert.Equal(t, exp.TimeToVerify95, got.TimeToVerify95, "query %d: p95", i)
		assert.Equal(t, exp.Steps, got.Steps, "query %d: steps", i)
		assert.Equal(t, exp.Resends, got.Resends, "query %d: resends", i)
		assert.Equal(t, exp.ByStatus, got.ByStatus, "query %d: by status", i)
		assert.Equal(t, withoutConversion(exp.Channels), withoutConversion(got.Channels), "query %d: channels", i)
	}
	// The fixture's figures, to check ComputeTrends itself.
	q := verify.TrendQuery{Query: verify.Query{From: base, To: at(13 * time.Hour)}, Bucket: time.Hour}
	exp := verify.ComputeTrends(all, q)
	assert.Equal(t, []int{30, 10}, exp.Steps)
	assert.Equal(t, 6, exp.Resends)
	assert.Equal(t, 15*time.Second, exp.TimeToVerify50, "20 verified: the 10th fastest")
	assert.Equal(t, 28*time.Second, exp.TimeToVerify95, "the 19th")
	assert.Equal(t, verify.TrendBucket{Start: base, Created: 3, Sent: 3, Verified: 2}, exp.Buckets[0], "0, 25 and 50 minutes; #0's first delivery failed, its fallback did not; #0 and #2 verified")
}

// nonEmpty is buckets without the empty ones, in order of Start, with
// times in UTC to the microsecond.
func nonEmpty(bs []verify.TrendBucket) []verify.TrendBucket {
	var out []verify.TrendBucket
	for _, b := range bs {
		if b.Created > 0 {
			b.Start = b.Start.UTC().Truncate(time.Microsecond)
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b verify.TrendBucket) int { return a.Start.Compare(b.Start) })
	return out
}

// withoutConversion is channels without their Conversion, which the
// engine computes from the counts.
func withoutConversion(channels map[string]verify.ChannelStats) map[string]verify.ChannelStats {
	out := make(map[string]verify.ChannelStats, len(channels))
	for k, c := range channels {
		c.Conversion = 0
		out[k] = c
	}
	return out
}
