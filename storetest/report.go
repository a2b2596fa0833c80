package storetest

import (
	"fmt"
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
