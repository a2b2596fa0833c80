package verify_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func TestTrends(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	for i := range 3 {
		v, code := h.send()
		if i < 2 {
			_, err := h.check(v.ID, code)
			require.NoError(t, err)
		}
		h.clock.Add(2 * time.Hour)
	}
	q := verify.TrendQuery{Query: verify.Query{From: start, To: start.Add(8 * time.Hour)}, Bucket: time.Hour}
	tr, err := h.eng.Trends(h.ctx, q)
	require.NoError(t, err)
	require.Len(t, tr.Buckets, 8, "every bucket, empty ones too")
	for i, b := range tr.Buckets {
		assert.Equal(t, start.Add(time.Duration(i)*time.Hour), b.Start)
	}
	assert.Equal(t, verify.TrendBucket{Start: start, Created: 1, Sent: 1, Verified: 1}, tr.Buckets[0])
	assert.Equal(t, 0, tr.Buckets[1].Created)
	assert.Equal(t, verify.TrendBucket{Start: start.Add(4 * time.Hour), Created: 1, Sent: 1}, tr.Buckets[4])
	assert.Equal(t, []int{3}, tr.Steps)

	for _, c := range []struct {
		q     verify.TrendQuery
		param string
	}{
		{verify.TrendQuery{Query: verify.Query{To: start}, Bucket: time.Hour}, "from"},
		{verify.TrendQuery{Query: verify.Query{From: start, To: start.Add(time.Hour)}, Bucket: time.Minute}, "bucket"},
		{verify.TrendQuery{Query: verify.Query{From: start, To: start.Add(1001 * time.Hour)}, Bucket: time.Hour}, "to"},
		{verify.TrendQuery{Query: verify.Query{From: start, To: start}, Bucket: time.Hour}, "from"},
	} {
		_, err := h.eng.Trends(h.ctx, c.q)
		ve, ok := verify.AsError(err)
		require.True(t, ok, "%v", err)
		assert.Equal(t, c.param, ve.Parameter)
	}
	_, err = h.engineOn(noAudit{h.store}).Trends(h.ctx, q)
	assert.ErrorIs(t, err, verify.ErrTrendsUnsupported)
}
