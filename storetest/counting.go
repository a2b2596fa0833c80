package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// countingStore is what the Counting part tests: a Store that counts its
// own counters with its writes.
type countingStore interface {
	verificationStore
	verify.Counters
	verify.CountingStore
}

var countingTests = []test[countingStore]{
	{"CreateCounts", testCreateCounts},
	{"CreateRefusedCountsNothing", testCreateRefusedCountsNothing},
	{"BadCountsChangeNothing", testBadCountsChangeNothing},
	{"AttemptCountsWhenVerified", testAttemptCountsWhenVerified},
	{"CreateCountsConcurrent", testCreateCountsConcurrent},
	{"CreateGuarded", testCreateGuarded},
	{"CreateGuardedConcurrent", testCreateGuardedConcurrent},
	{"CreateLimited", testCreateLimited},
	{"CreateLimitedConcurrent", testCreateLimitedConcurrent},
	{"AttemptCountsConcurrent", testAttemptCountsConcurrent},
}

func counter(t *testing.T, s verify.Counters, key string, now time.Time) verify.Counter {
	t.Helper()
	c, err := s.GetCounter(ctx(), key, now)
	require.NoError(t, err)
	return c
}

// CreateVerificationCounting stores the verification and applies the
// counts at its CreatedAt: a new counter starts at Delta, an existing one
// adds it, an expired one starts again; ExpiresAt is the count's. It
// returns the counters after the counts, in order.
func testCreateCounts(t *testing.T, s countingStore) {
	v := sampleVerification(3, time.Minute)
	counts := []verify.Count{{Key: "conv:sent:a", Delta: 1, ExpiresAt: at(time.Hour)}, {Key: "conv:sent:b", Delta: 3, ExpiresAt: at(2 * time.Hour)}}
	got, err := s.CreateVerificationCounting(ctx(), v, steps(v), verify.Guard{}, counts)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, int64(1), got[0].Value)
	assert.Equal(t, int64(3), got[1].Value)
	sameTime(t, at(time.Hour), got[0].ExpiresAt, "ExpiresAt of the first")
	sameTime(t, at(2*time.Hour), got[1].ExpiresAt, "ExpiresAt of the second")
	sameTime(t, base, got[0].UpdatedAt, "UpdatedAt: the verification's CreatedAt")
	assertRecord(t, v, getVerification(t, s, v.ID))
	assert.Len(t, claimAll(t, s, at(time.Hour)), 2, "the steps are stored")
	assert.Equal(t, int64(3), counter(t, s, "conv:sent:b", base).Value, "GetCounter agrees")

	w := sampleVerification(3, time.Minute)
	w.CreatedAt = at(time.Minute)
	got, err = s.CreateVerificationCounting(ctx(), w, nil, verify.Guard{}, counts[:1])
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, int64(2), got[0].Value, "a count adds to the counter")

	// A counter that has expired at CreatedAt starts again.
	x := sampleVerification(3, time.Minute)
	x.CreatedAt, x.ExpiresAt = at(time.Hour), at(time.Hour+time.Minute)
	got, err = s.CreateVerificationCounting(ctx(), x, nil, verify.Guard{}, []verify.Count{{Key: "conv:sent:a", Delta: 1, ExpiresAt: at(3 * time.Hour)}})
	require.NoError(t, err)
	assert.Equal(t, int64(1), got[0].Value, "an expired counter starts from zero")
	sameTime(t, at(3*time.Hour), got[0].ExpiresAt, "the count's ExpiresAt")

	// A count does not wait out a NotBefore that a Take's Backoff set.
	_, err = s.Take(ctx(), base, []verify.Take{{Key: "conv:sent:c", Delta: 1, Max: verify.NoLimit, ExpiresAt: at(time.Hour),
		Backoff: verify.Backoff{Base: time.Hour}}})
	require.NoError(t, err)
	y := sampleVerification(3, time.Minute)
	got, err = s.CreateVerificationCounting(ctx(), y, nil, verify.Guard{}, []verify.Count{{Key: "conv:sent:c", Delta: 1, ExpiresAt: at(time.Hour)}})
	require.NoError(t, err)
	assert.Equal(t, int64(2), got[0].Value, "a count has no limit and no wait")
	assert.True(t, got[0].NotBefore.IsZero(), "a count has no Backoff: NotBefore is cleared, as Take.Apply does")
}

// A verification that is not stored (its ID, its idempotency key, an open
// exclusive one) counts nothing.
func testCreateRefusedCountsNothing(t *testing.T, s countingStore) {
	count := []verify.Count{{Key: "conv:sent:x", Delta: 1, ExpiresAt: at(time.Hour)}}
	v := sampleVerification(3, time.Minute)
	v.IdempotencyKey = "key-" + newID()
	v.Exclusive = true
	_, err := s.CreateVerificationCounting(ctx(), v, steps(v), verify.Guard{}, count)
	require.NoError(t, err)

	sameID := sampleVerification(3, time.Minute)
	sameID.ID = v.ID
	sameKey := sampleVerification(3, time.Minute)
	sameKey.IdempotencyKey = v.IdempotencyKey
	openExclusive := sampleVerification(3, time.Minute)
	openExclusive.FlowID, openExclusive.Exclusive = v.FlowID, true
	for name, w := range map[string]verify.VerificationRecord{"same ID": sameID, "same key": sameKey, "open exclusive": openExclusive} {
		got, err := s.CreateVerificationCounting(ctx(), w, steps(w), verify.Guard{}, count)
		require.Error(t, err, name)
		if name != "same ID" { // which fails with an error of the Store's own
			assert.True(t, errors.Is(err, verify.ErrDuplicate) || errors.Is(err, verify.ErrOpenExists), "%s: %v", name, err)
		}
		assert.Nil(t, got, name)
	}
	assert.Equal(t, int64(1), counter(t, s, "conv:sent:x", base).Value, "refused verifications counted nothing")
}

// Counts that are not distinct or not positive are refused with an error
// before anything changes.
func testBadCountsChangeNothing(t *testing.T, s countingStore) {
	bad := map[string][]verify.Count{
		"zero Delta":     {{Key: "conv:bad", Delta: 0, ExpiresAt: at(time.Hour)}},
		"negative Delta": {{Key: "conv:bad", Delta: -1, ExpiresAt: at(time.Hour)}},
		"no key":         {{Delta: 1, ExpiresAt: at(time.Hour)}},
		"a key twice":    {{Key: "conv:bad", Delta: 1, ExpiresAt: at(time.Hour)}, {Key: "conv:bad", Delta: 1, ExpiresAt: at(time.Hour)}},
		"negative Limit": {{Key: "conv:bad", Delta: 1, ExpiresAt: at(time.Hour), Limit: -1}},
	}
	for name, counts := range bad {
		v := sampleVerification(3, time.Minute)
		_, err := s.CreateVerificationCounting(ctx(), v, steps(v), verify.Guard{}, counts)
		require.Error(t, err, name)
		_, err = s.GetVerification(ctx(), v.ID)
		requireNotFound(t, err, name+": the verification is not stored")
	}
	v := create(t, s, sampleVerification(3, time.Minute), nil)
	for name, counts := range bad {
		_, _, err := s.AttemptCounting(ctx(), v.ID, rightCode, at(time.Second), counts)
		require.Error(t, err, name)
	}
	// An attempt's counts have no Limit: a code that verifies is never
	// refused by what it counts.
	limited := []verify.Count{{Key: "conv:bad", Delta: 1, ExpiresAt: at(time.Hour), Limit: 5}}
	_, _, err := s.AttemptCounting(ctx(), v.ID, rightCode, at(time.Second), limited)
	require.Error(t, err, "AttemptCounting with a Limit")
	if g, ok := s.(verify.GuardedStore); ok {
		_, _, _, err := g.AttemptRight(ctx(), v.ID, rightCode, at(time.Second), verify.Guard{}, limited)
		require.Error(t, err, "AttemptRight with a Limit")
	}
	got := getVerification(t, s, v.ID)
	assert.Equal(t, 0, got.Attempts, "refused attempts were not counted")
	assert.Equal(t, verify.StatusPending, got.Status)
	assert.Zero(t, counter(t, s, "conv:bad", base).Value, "nothing was counted")
}

// AttemptCounting applies its counts when, and only when, the attempt it
// counts verifies the code.
func testAttemptCountsWhenVerified(t *testing.T, s countingStore) {
	count := []verify.Count{{Key: "conv:ok:x", Delta: 1, ExpiresAt: at(time.Hour)}}
	_, _, err := s.AttemptCounting(ctx(), newID(), rightCode, base, count)
	requireNotFound(t, err, "an unknown ID")

	v := create(t, s, sampleVerification(2, time.Minute), nil)
	got, counted, err := s.AttemptCounting(ctx(), v.ID, wrongCode, at(time.Second), count)
	require.NoError(t, err)
	assert.True(t, counted)
	assert.Equal(t, verify.StatusPending, got.Status)
	assert.Zero(t, counter(t, s, "conv:ok:x", base).Value, "a wrong code counts nothing")

	got, counted, err = s.AttemptCounting(ctx(), v.ID, rightCode, at(2*time.Second), count)
	require.NoError(t, err)
	assert.True(t, counted)
	assert.Equal(t, verify.StatusVerified, got.Status)
	assertChecks(t, got.Checks, "a wrong, a right", checkAt(time.Second, false), checkAt(2*time.Second, true))
	c := counter(t, s, "conv:ok:x", base)
	assert.Equal(t, int64(1), c.Value, "the verifying attempt counts")
	sameTime(t, at(2*time.Second), c.UpdatedAt, "counted at the attempt's time")

	_, counted, err = s.AttemptCounting(ctx(), v.ID, rightCode, at(3*time.Second), count)
	require.NoError(t, err)
	assert.False(t, counted, "the verification has ended")
	assert.Equal(t, int64(1), counter(t, s, "conv:ok:x", base).Value, "an attempt not counted counts nothing")

	// The last attempt, wrong, ends it without counting.
	w := create(t, s, sampleVerification(1, time.Minute), nil)
	got, _, err = s.AttemptCounting(ctx(), w.ID, wrongCode, at(time.Second), count)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusMaxAttempts, got.Status)
	// An expired one is not counted.
	e := create(t, s, sampleVerification(3, time.Minute), nil)
	_, counted, err = s.AttemptCounting(ctx(), e.ID, rightCode, at(time.Minute), count)
	require.NoError(t, err)
	assert.False(t, counted)
	assert.Equal(t, int64(1), counter(t, s, "conv:ok:x", base).Value)
}

// Racing creations that count the same counters count every one, and each
// gets the values a serial run in some order gives: distinct, from 1 to n.
func testCreateCountsConcurrent(t *testing.T, s countingStore) {
	const n = 64
	values := make([][]int64, 2)
	var mu sync.Mutex
	released(n, func(i int) {
		v := sampleVerification(3, time.Minute)
		v.CreatedAt = at(time.Duration(i) * time.Millisecond)
		// Half count two counters, in either order.
		counts := []verify.Count{{Key: "conv:sent:race", Delta: 1, ExpiresAt: at(time.Hour)}}
		if i%2 == 1 {
			counts = append([]verify.Count{{Key: "conv:sent:race2", Delta: 1, ExpiresAt: at(time.Hour)}}, counts...)
		}
		got, err := s.CreateVerificationCounting(ctx(), v, steps(v), verify.Guard{}, counts)
		if !assert.NoError(t, err) || !assert.Len(t, got, len(counts)) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for j, c := range counts {
			k := 0
			if c.Key == "conv:sent:race2" {
				k = 1
			}
			values[k] = append(values[k], got[j].Value)
		}
	})
	for k, want := range []int{n, n / 2} {
		slices.Sort(values[k])
		var serial []int64
		for i := 1; i <= want; i++ {
			serial = append(serial, int64(i))
		}
		assert.Equal(t, serial, values[k], "counter %d: each caller gets its own value", k)
		assert.Equal(t, int64(want), counter(t, s, []string{"conv:sent:race", "conv:sent:race2"}[k], base).Value)
	}
}

// Racing attempts that verify count exactly once each; those that do not,
// never.
func testAttemptCountsConcurrent(t *testing.T, s countingStore) {
	const n = 64
	ids := make([]string, n)
	for i := range ids {
		ids[i] = create(t, s, sampleVerification(3, time.Minute), nil).ID
	}
	released(2*n, func(i int) {
		// Two attempts on each verification: one right, one wrong.
		code := rightCode
		if i >= n {
			code = wrongCode
		}
		count := []verify.Count{{Key: "conv:ok:race", Delta: 1, ExpiresAt: at(time.Hour)}}
		_, _, err := s.AttemptCounting(ctx(), ids[i%n], code, at(time.Second), count)
		assert.NoError(t, err, fmt.Sprint(i))
	})
	assert.Equal(t, int64(n), counter(t, s, "conv:ok:race", base).Value, "one count per verified verification")
	for _, id := range ids {
		assert.Equal(t, verify.StatusVerified, getVerification(t, s, id).Status)
	}
}

// While the guard's counter refuses (at Max, or before its NotBefore, at
// the verification's CreatedAt), CreateVerificationCounting stores nothing,
// counts nothing and returns a *verify.RefusedError with the counter; an
// expired counter, or one below Max, lets it through.
func testCreateGuarded(t *testing.T, s countingStore) {
	block := verify.Guard{Key: "block:+4712", Max: 1}
	count := []verify.Count{{Key: "conv:sent:g", Delta: 1, ExpiresAt: at(time.Hour)}}
	_, err := s.Take(ctx(), base, []verify.Take{{Key: block.Key, Delta: 1, Max: verify.NoLimit, ExpiresAt: at(time.Hour)}})
	require.NoError(t, err)
	v := sampleVerification(3, time.Minute)
	got, err := s.CreateVerificationCounting(ctx(), v, steps(v), block, count)
	var refused *verify.RefusedError
	require.ErrorAs(t, err, &refused)
	assert.Nil(t, got)
	assert.Equal(t, block, refused.Guard)
	assert.Equal(t, int64(1), refused.Counter.Value)
	sameTime(t, at(time.Hour), refused.Counter.ExpiresAt, "the guard's ExpiresAt")
	_, err = s.GetVerification(ctx(), v.ID)
	requireNotFound(t, err, "nothing is stored")
	assert.Empty(t, claimAll(t, s, at(time.Hour)), "no steps either")
	assert.Zero(t, counter(t, s, "conv:sent:g", base).Value, "nothing is counted")

	// Once the counter has expired, the guard lets it through.
	later := sampleVerification(3, time.Minute)
	later.CreatedAt, later.ExpiresAt = at(time.Hour), at(time.Hour+time.Minute)
	got, err = s.CreateVerificationCounting(ctx(), later, nil, block, count)
	require.NoError(t, err)
	assert.Equal(t, int64(1), got[0].Value)
	assertRecord(t, later, getVerification(t, s, later.ID))

	// Below Max, and past NotBefore, it lets it through; before NotBefore
	// it refuses.
	waits := verify.Guard{Key: "fail:+4712", Max: 3}
	_, err = s.Take(ctx(), base, []verify.Take{{Key: waits.Key, Delta: 1, Max: verify.NoLimit, ExpiresAt: at(time.Hour), Backoff: verify.Backoff{Base: time.Minute}}})
	require.NoError(t, err)
	early := sampleVerification(3, time.Minute)
	early.CreatedAt = at(30 * time.Second)
	_, err = s.CreateVerificationCounting(ctx(), early, nil, waits, nil)
	require.ErrorAs(t, err, &refused, "before NotBefore")
	sameTime(t, at(time.Minute), refused.Counter.NotBefore, "NotBefore")
	onTime := sampleVerification(3, 2*time.Minute)
	onTime.CreatedAt = at(time.Minute)
	_, err = s.CreateVerificationCounting(ctx(), onTime, nil, waits, nil)
	require.NoError(t, err, "below Max, at NotBefore")
	getVerification(t, s, onTime.ID)
}

// Racing creations behind one guard: while it refuses, none is stored;
// once it is lifted, all are.
func testCreateGuardedConcurrent(t *testing.T, s countingStore) {
	block := verify.Guard{Key: "block:+4713", Max: 1}
	_, err := s.Take(ctx(), base, []verify.Take{{Key: block.Key, Delta: 1, Max: verify.NoLimit, ExpiresAt: at(time.Hour)}})
	require.NoError(t, err)
	count := []verify.Count{{Key: "conv:sent:h", Delta: 1, ExpiresAt: at(time.Hour)}}
	var stored, refused atomic.Int64
	race := func() {
		released(32, func(int) {
			v := sampleVerification(3, time.Minute)
			_, err := s.CreateVerificationCounting(ctx(), v, steps(v), block, count)
			var r *verify.RefusedError
			switch {
			case err == nil:
				stored.Add(1)
			case errors.As(err, &r):
				refused.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	race()
	assert.Equal(t, int64(32), refused.Load())
	assert.Zero(t, stored.Load())
	assert.Zero(t, counter(t, s, "conv:sent:h", base).Value)
	require.NoError(t, s.DeleteCounter(ctx(), block.Key))
	race()
	assert.Equal(t, int64(32), stored.Load())
	assert.Equal(t, int64(32), counter(t, s, "conv:sent:h", base).Value)
}

// A count with a Limit refuses the write that would take its counter past
// it: nothing is stored and nothing counted (the other counts of the call
// neither), and the *verify.RefusedError names the count, its counter as
// read and the time until the counter expires. The guard is decided
// first. A counter that has expired starts again; a count at the Limit
// fits; a count never waits out a NotBefore.
func testCreateLimited(t *testing.T, s countingStore) {
	expires := at(time.Hour)
	limit := verify.Count{Key: "rate:lim", Delta: 1, ExpiresAt: expires, Limit: 2}
	conv := verify.Count{Key: "conv:sent:lim", Delta: 1, ExpiresAt: expires}
	create := func(createdAt time.Time, guard verify.Guard, counts ...verify.Count) (verify.VerificationRecord, []verify.Counter, error) {
		v := sampleVerification(3, time.Minute)
		v.CreatedAt, v.ExpiresAt = createdAt, createdAt.Add(time.Minute)
		got, err := s.CreateVerificationCounting(ctx(), v, steps(v), guard, counts)
		return v, got, err
	}
	for want := int64(1); want <= 2; want++ {
		_, got, err := create(base, verify.Guard{}, conv, limit)
		require.NoError(t, err, "count %d of a Limit of 2", want)
		assert.Equal(t, []int64{want, want}, []int64{got[0].Value, got[1].Value})
	}
	v, got, err := create(at(time.Minute), verify.Guard{}, conv, limit)
	var refused *verify.RefusedError
	require.ErrorAs(t, err, &refused, "a third count past the Limit")
	assert.Nil(t, got)
	assert.Equal(t, 1, refused.Refused, "the count's index")
	assert.Equal(t, int64(2), refused.Counter.Value, "its counter as read")
	sameTime(t, expires, refused.Counter.ExpiresAt, "its counter's ExpiresAt")
	assert.Equal(t, 59*time.Minute, refused.RetryAfter, "until the counter expires")
	_, err = s.GetVerification(ctx(), v.ID)
	requireNotFound(t, err, "nothing is stored")
	assert.Equal(t, int64(2), counter(t, s, limit.Key, base).Value, "the limited counter is as it was")
	assert.Equal(t, int64(2), counter(t, s, conv.Key, base).Value, "the call's other count is not applied")

	// A Delta that would pass the Limit refuses, where one that reaches it
	// does not.
	big := verify.Count{Key: "rate:big", Delta: 3, ExpiresAt: expires, Limit: 4}
	_, _, err = create(base, verify.Guard{}, big)
	require.NoError(t, err)
	_, _, err = create(base, verify.Guard{}, big)
	require.ErrorAs(t, err, &refused, "3 + 3 > 4")
	big.Delta = 1
	_, got, err = create(base, verify.Guard{}, big)
	require.NoError(t, err, "3 + 1 = 4")
	assert.Equal(t, int64(4), got[0].Value)

	// The guard first: a call that both refuse is the guard's refusal.
	block := verify.Guard{Key: "block:+4714", Max: 1}
	_, err = s.Take(ctx(), base, []verify.Take{{Key: block.Key, Delta: 1, Max: verify.NoLimit, ExpiresAt: expires}})
	require.NoError(t, err)
	_, _, err = create(base, block, limit)
	require.ErrorAs(t, err, &refused)
	assert.Equal(t, -1, refused.Refused, "the guard refused")
	assert.Equal(t, block, refused.Guard)

	// Once the counter has expired, it starts again.
	_, got, err = create(expires, verify.Guard{}, limit)
	require.NoError(t, err, "an expired counter starts from zero")
	assert.Equal(t, int64(1), got[0].Value)

	// A Limit does not wait out a NotBefore a Take's Backoff set.
	_, err = s.Take(ctx(), base, []verify.Take{{Key: "rate:wait", Delta: 1, Max: verify.NoLimit, ExpiresAt: expires,
		Backoff: verify.Backoff{Base: time.Hour}}})
	require.NoError(t, err)
	_, got, err = create(base, verify.Guard{}, verify.Count{Key: "rate:wait", Delta: 1, ExpiresAt: expires, Limit: 5})
	require.NoError(t, err, "below its Limit, before NotBefore")
	assert.Equal(t, int64(2), got[0].Value)
}

// Racing creations under one Limit store exactly as many verifications as
// the Limit allows, and count exactly those, while calls that are not
// stored for another reason (an idempotency key already taken) leave
// their place under the Limit to the others.
func testCreateLimitedConcurrent(t *testing.T, s countingStore) {
	const n, max = 32, 10
	// First a race that no Limit refuses: every call is stored, and sees
	// its own place.
	roomy := verify.Count{Key: "rate:race-roomy", Delta: 1, ExpiresAt: at(time.Hour), Limit: 2 * n}
	places := make([]int64, n)
	released(n, func(i int) {
		v := sampleVerification(3, time.Minute)
		got, err := s.CreateVerificationCounting(ctx(), v, steps(v), verify.Guard{}, []verify.Count{roomy})
		if assert.NoError(t, err) {
			places[i] = got[0].Value
		}
	})
	slices.Sort(places)
	for i, p := range places {
		assert.Equal(t, int64(i+1), p, "each call sees its own place")
	}
	assert.Equal(t, int64(n), counter(t, s, roomy.Key, base).Value)

	taken := sampleVerification(3, time.Minute)
	taken.IdempotencyKey = "limited-" + newID()
	create(t, s, taken, nil)
	limit := verify.Count{Key: "rate:race", Delta: 1, ExpiresAt: at(time.Hour), Limit: max}
	other := verify.Count{Key: "rate:race-other", Delta: 1, ExpiresAt: at(time.Hour), Limit: n}
	conv := verify.Count{Key: "conv:sent:race-lim", Delta: 1, ExpiresAt: at(time.Hour)}
	var stored, refused, clashed atomic.Int64
	values := make([]int64, n)
	released(n, func(i int) {
		v := sampleVerification(3, time.Minute)
		counts := []verify.Count{conv, limit}
		if i%2 == 0 {
			counts = []verify.Count{other, limit, conv}
		}
		if i%4 == 1 { // a quarter clash with the stored key
			v.IdempotencyKey = taken.IdempotencyKey
		}
		got, err := s.CreateVerificationCounting(ctx(), v, steps(v), verify.Guard{}, counts)
		var r *verify.RefusedError
		switch {
		case err == nil:
			stored.Add(1)
			values[i] = got[slices.IndexFunc(counts, func(c verify.Count) bool { return c.Key == limit.Key })].Value
		case errors.As(err, &r):
			refused.Add(1)
			assert.Equal(t, limit.Key, counts[r.Refused].Key, "only the Limit of %d refuses", max)
		case errors.Is(err, verify.ErrDuplicate):
			clashed.Add(1)
		default:
			t.Error(err)
		}
	})
	// A clash decided after the Limit was reached is the Limit's refusal.
	assert.LessOrEqual(t, clashed.Load(), int64(n/4))
	assert.Equal(t, int64(max), stored.Load(), "as many as the Limit allows")
	assert.Equal(t, int64(n)-clashed.Load()-max, refused.Load())
	assert.Equal(t, int64(max), counter(t, s, limit.Key, base).Value)
	assert.Equal(t, int64(max), counter(t, s, conv.Key, base).Value, "the other counts of the stored calls only")
	var seen []int64
	for _, v := range values {
		if v > 0 {
			seen = append(seen, v)
		}
	}
	slices.Sort(seen)
	want := make([]int64, max)
	for i := range want {
		want[i] = int64(i + 1)
	}
	assert.Equal(t, want, seen, "each stored call sees its own place under the Limit")
}
