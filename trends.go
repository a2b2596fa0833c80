package verify

import (
	"context"
	"errors"
	"slices"
	"time"
)

// TrendQuery selects the verifications of Trends: those Query's filters
// select (From and To are mandatory here), counted per Bucket of their
// CreatedAt.
type TrendQuery struct {
	Query
	// Bucket is time.Hour or 24 * time.Hour; buckets start at From.
	Bucket time.Duration
}

// Trends is how verifications went over time, for the console's charts.
type Trends struct {
	// Buckets are every bucket from From to To, oldest first, empty ones
	// included.
	Buckets []TrendBucket `json:"buckets"`
	// TimeToVerify50 and TimeToVerify95 are the 50th and 95th percentiles
	// of VerifiedAt - CreatedAt over the verified verifications (each the
	// smallest time at least that share of them took).
	TimeToVerify50 time.Duration `json:"time_to_verify_p50"`
	TimeToVerify95 time.Duration `json:"time_to_verify_p95"`
	// Steps counts, for each step of a flow (Steps[0] the first), the
	// verifications that got a delivery at it: Steps[1] / Steps[0] is how
	// often the first fallback fired.
	Steps []int `json:"steps"`
	// Resends counts verifications with a Resend delivery.
	Resends int `json:"resends"`
	// ByStatus and Channels break the verifications down as Stats does,
	// so that one call serves a dashboard.
	ByStatus map[Status]int          `json:"by_status"`
	Channels map[string]ChannelStats `json:"channels"`
}

// TrendBucket is one bucket of Trends: the verifications created in it,
// those of them with a delivery that did not fail, and those verified.
type TrendBucket struct {
	Start    time.Time `json:"start"`
	Created  int       `json:"created"`
	Sent     int       `json:"sent"`
	Verified int       `json:"verified"`
}

// TrendStore is the optional Store ability behind Engine.Trends. memstore
// and sqlstore have it.
type TrendStore interface {
	// Trends computes q's Trends (q is valid: see Engine.Trends). Buckets
	// may leave out empty ones; the engine fills them in, and the
	// channels' Conversion.
	Trends(ctx context.Context, q TrendQuery) (Trends, error)
}

// ErrTrendsUnsupported is returned by Trends when the Store does not
// implement TrendStore.
var ErrTrendsUnsupported = errors.New("verify: the store does not implement verify.TrendStore (use memstore or sqlstore)")

// maxBuckets is the most buckets a TrendQuery may span.
const maxBuckets = 1000

// Trends returns how the verifications q selects went over time: per
// bucket, and over all of them the time to verify, fallback use, resends,
// and the counts by status and by channel that Stats also gives. From and To are mandatory and must span at most 1,000 buckets;
// Bucket is an hour or a day; Limit and Cursor are ignored.
func (e *Engine) Trends(ctx context.Context, q TrendQuery) (Trends, error) {
	ts, ok := e.store.(TrendStore)
	if !ok {
		return Trends{}, ErrTrendsUnsupported
	}
	q.Limit, q.Cursor = 0, ""
	if err := q.Query.validate(); err != nil {
		return Trends{}, err
	}
	if q.From.IsZero() || q.To.IsZero() {
		return Trends{}, invalid(ErrMissingField, "from", "from and to are mandatory for trends")
	}
	if q.Bucket != time.Hour && q.Bucket != 24*time.Hour {
		return Trends{}, invalid(ErrInvalidParameter, "bucket", "bucket must be an hour or a day, got %s", q.Bucket)
	}
	q.From, q.To = q.From.UTC(), q.To.UTC()
	n := int((q.To.Sub(q.From) + q.Bucket - 1) / q.Bucket)
	if n > maxBuckets {
		return Trends{}, invalid(ErrInvalidParameter, "to", "from to to spans %d buckets, at most %d", n, maxBuckets)
	}
	tr, err := ts.Trends(ctx, q)
	if err != nil {
		return Trends{}, storeErr(ctx, "trends", err)
	}
	if tr.ByStatus == nil {
		tr.ByStatus = map[Status]int{}
	}
	if tr.Channels == nil {
		tr.Channels = map[string]ChannelStats{}
	}
	for k, c := range tr.Channels {
		c.Conversion = ratio(c.Verified, c.Verifications)
		tr.Channels[k] = c
	}
	// Every bucket, in order, whatever the store left out.
	all := make([]TrendBucket, n)
	for i := range all {
		all[i].Start = q.From.Add(time.Duration(i) * q.Bucket)
	}
	for _, b := range tr.Buckets {
		i := int(b.Start.Sub(q.From) / q.Bucket)
		if i >= 0 && i < n {
			all[i].Created += b.Created
			all[i].Sent += b.Sent
			all[i].Verified += b.Verified
		}
	}
	tr.Buckets = all
	return tr, nil
}

// ComputeTrends builds Trends from records, for stores that summarise in
// memory (memstore) and for tests of stores that aggregate in SQL. recs
// are the records q selects.
func ComputeTrends(recs []VerificationRecord, q TrendQuery) Trends {
	st := ComputeStats(recs)
	tr := Trends{ByStatus: st.ByStatus, Channels: st.Channels}
	buckets := map[int]*TrendBucket{}
	var times []time.Duration
	for _, r := range recs {
		i := int(r.CreatedAt.Sub(q.From) / q.Bucket)
		b := buckets[i]
		if b == nil {
			b = &TrendBucket{Start: q.From.Add(time.Duration(i) * q.Bucket)}
			buckets[i] = b
		}
		b.Created++
		steps := map[int]bool{}
		resent, sent := false, false
		for _, d := range r.Deliveries {
			sent = sent || d.Status != DeliveryFailed
			if d.Step < 0 {
				resent = true
			} else {
				steps[d.Step] = true
			}
		}
		if sent {
			b.Sent++
		}
		for s := range steps {
			for len(tr.Steps) <= s {
				tr.Steps = append(tr.Steps, 0)
			}
			tr.Steps[s]++
		}
		if resent {
			tr.Resends++
		}
		if r.Status == StatusVerified {
			b.Verified++
			times = append(times, r.VerifiedAt.Sub(r.CreatedAt))
		}
	}
	for _, b := range buckets {
		tr.Buckets = append(tr.Buckets, *b)
	}
	slices.SortFunc(tr.Buckets, func(a, b TrendBucket) int { return a.Start.Compare(b.Start) })
	slices.Sort(times)
	tr.TimeToVerify50 = percentile(times, 50)
	tr.TimeToVerify95 = percentile(times, 95)
	return tr
}

// percentile is the smallest of sorted that at least p percent of them
// are at most: the element at rank ceil(p/100 * n). 0 when empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := (p*n + 99) / 100 // ceil(p*n/100), 1-based
	return sorted[max(rank, 1)-1]
}
