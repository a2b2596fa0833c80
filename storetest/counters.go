package storetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// The Counters part: Take's decisions, all or nothing, checks, refunds,
// backoff and expiry, GetCounter, DeleteCounter and PurgeCounters, and
// Take under races the way they happen in production (many calls
// released at once).

// take is a take of delta on key, up to max, expiring at exp, without
// backoff.
func take(key string, delta, max int64, exp time.Time) verify.Take {
	return verify.Take{Key: key, Delta: delta, Max: max, ExpiresAt: exp}
}

// mustTake calls Take and checks the shape of its answer: one counter per
// take, and Refused -1 when OK, a take's index otherwise.
func mustTake(t *testing.T, s verify.Counters, now time.Time, takes ...verify.Take) verify.Taken {
	t.Helper()
	got, err := s.Take(ctx(), now, takes)
	require.NoError(t, err)
	require.Len(t, got.Counters, len(takes), "Taken.Counters holds one counter per take")
	if got.OK {
		require.Equal(t, -1, got.Refused, "Taken.Refused is -1 when OK")
	} else {
		require.True(t, got.Refused >= 0 && got.Refused < len(takes), "Taken.Refused is a take's index when refused, got %d", got.Refused)
	}
	return got
}

// requireOK and requireRefused check Take's decision.
func requireOK(t *testing.T, got verify.Taken, what string) {
	t.Helper()
	require.True(t, got.OK, "%s: want OK, got refused take %d (RetryAfter %v)", what, got.Refused, got.RetryAfter)
}

func requireRefused(t *testing.T, got verify.Taken, refused int, retryAfter time.Duration, what string) {
	t.Helper()
	require.False(t, got.OK, "%s: want refused, got OK with %+v", what, got.Counters)
	assert.Equal(t, refused, got.Refused, "%s: Refused is the first refused take", what)
	assert.Equal(t, retryAfter, got.RetryAfter, "%s: RetryAfter", what)
}

// assertCounter compares two counters, times to the microsecond. A zero
// want.NotBefore means no wait: got's may be zero or any time not after its
// UpdatedAt (now + a zero delay).
func assertCounter(t *testing.T, want, got verify.Counter, what string) {
	t.Helper()
	assert.Equal(t, want.Value, got.Value, "%s: Value", what)
	sameTime(t, want.UpdatedAt, got.UpdatedAt, what+": UpdatedAt")
	sameTime(t, want.ExpiresAt, got.ExpiresAt, what+": ExpiresAt")
	if want.NotBefore.IsZero() && !got.NotBefore.IsZero() {
		assert.False(t, got.NotBefore.After(got.UpdatedAt), "%s: NotBefore: want none, got %v", what, got.NotBefore)
		return
	}
	sameTime(t, want.NotBefore, got.NotBefore, what+": NotBefore")
}

// assertStored asserts that GetCounter(key, now) returns want.
func assertStored(t *testing.T, s verify.Counters, key string, now time.Time, want verify.Counter, what string) {
	t.Helper()
	got, err := s.GetCounter(ctx(), key, now)
	require.NoError(t, err)
	assertCounter(t, want, got, what)
}

func testTake(t *testing.T, s verify.Counters) {
	// A missing counter counts as zero: a take counts while Value + Delta
	// is at most Max.
	got := mustTake(t, s, base, take("k", 1, 3, at(time.Minute)))
	requireOK(t, got, "a take on a missing counter within Max")
	want := verify.Counter{Value: 1, UpdatedAt: base, ExpiresAt: at(time.Minute)}
	assertCounter(t, want, got.Counters[0], "Taken.Counters after a take")
	assertStored(t, s, "k", base, want, "GetCounter after a take")

	got = mustTake(t, s, at(time.Second), take("k", 2, 3, at(2*time.Minute)))
	requireOK(t, got, "Value + Delta = Max")
	want = verify.Counter{Value: 3, UpdatedAt: at(time.Second), ExpiresAt: at(2 * time.Minute)}
	assertCounter(t, want, got.Counters[0], "a take adds Delta, sets UpdatedAt and replaces ExpiresAt")
	assertStored(t, s, "k", at(time.Second), want, "GetCounter after a second take")

	// Beyond Max: refused until the counter expires, and nothing changes.
	now := at(10 * time.Second)
	for _, tk := range []verify.Take{take("k", 1, 3, at(time.Hour)), take("k", 2, 4, at(time.Hour)), take("k", 1, 0, at(time.Hour))} {
		got = mustTake(t, s, now, tk)
		what := fmt.Sprintf("Value 3 + Delta %d > Max %d", tk.Delta, tk.Max)
		requireRefused(t, got, 0, at(2*time.Minute).Sub(now), what)
		assertCounter(t, want, got.Counters[0], what+": Taken.Counters holds the counter as it is")
		assertStored(t, s, "k", now, want, what+": the counter is unchanged")
	}

	got = mustTake(t, s, now, take("k", 1, 4, at(3*time.Minute)))
	requireOK(t, got, "a higher Max allows more")
	want = verify.Counter{Value: 4, UpdatedAt: now, ExpiresAt: at(3 * time.Minute)}
	assertCounter(t, want, got.Counters[0], "after a take under a higher Max")
	got = mustTake(t, s, now, take("k", 1000, verify.NoLimit, at(3*time.Minute)))
	requireOK(t, got, "NoLimit")
	assert.Equal(t, int64(1004), got.Counters[0].Value)

	// A take larger than Max on a missing counter: refused, nothing stored.
	got = mustTake(t, s, now, take("m", 2, 1, at(time.Minute)))
	require.False(t, got.OK, "Delta > Max on a missing counter")
	assert.Equal(t, 0, got.Refused)
	assert.Equal(t, verify.Counter{}, got.Counters[0], "a missing counter is returned as the zero Counter")
	assertStored(t, s, "m", now, verify.Counter{}, "a refused take stores nothing")
}

func testTakeAllOrNothing(t *testing.T, s verify.Counters) {
	exp := at(time.Hour)
	got := mustTake(t, s, base, take("a", 2, verify.NoLimit, exp), take("b", 3, verify.NoLimit, exp), take("e", 1, verify.NoLimit, at(10*time.Minute)))
	requireOK(t, got, "three takes on missing counters")
	wantA := verify.Counter{Value: 2, UpdatedAt: base, ExpiresAt: exp}
	wantB := verify.Counter{Value: 3, UpdatedAt: base, ExpiresAt: exp}
	wantE := verify.Counter{Value: 1, UpdatedAt: base, ExpiresAt: at(10 * time.Minute)}
	assertCounter(t, wantA, got.Counters[0], "a")
	assertCounter(t, wantB, got.Counters[1], "b")
	assertCounter(t, wantE, got.Counters[2], "e")
	unchanged := func(what string) {
		t.Helper()
		now := at(time.Second)
		assertStored(t, s, "a", now, wantA, what+": a")
		assertStored(t, s, "b", now, wantB, what+": b")
		assertStored(t, s, "e", now, wantE, what+": e")
		assertStored(t, s, "c", now, verify.Counter{}, what+": c")
		assertStored(t, s, "d", now, verify.Counter{}, what+": d")
	}

	// One refused take (b is at its Max) refuses the call: the allowed
	// takes before and after it change nothing either, nor does a refund.
	now := at(time.Second)
	got = mustTake(t, s, now,
		take("a", 1, 10, at(2*time.Hour)),
		take("c", 1, 10, at(2*time.Hour)),
		take("b", 1, 3, at(2*time.Hour)),
		take("d", 5, 4, at(2*time.Hour)),
		take("e", -1, 0, at(2*time.Hour)))
	requireRefused(t, got, 2, exp.Sub(now), "b full")
	assertCounter(t, wantA, got.Counters[0], "a in a refused call")
	assertCounter(t, verify.Counter{}, got.Counters[1], "c in a refused call")
	assertCounter(t, wantB, got.Counters[2], "b in a refused call")
	assertCounter(t, verify.Counter{}, got.Counters[3], "d in a refused call")
	assertCounter(t, wantE, got.Counters[4], "e in a refused call")
	unchanged("after a refused call")

	// Refused and RetryAfter name the first refused take.
	got = mustTake(t, s, now, take("e", 1, 1, exp), take("b", 1, 3, exp))
	requireRefused(t, got, 0, at(10*time.Minute).Sub(now), "e and b full, e first")
	got = mustTake(t, s, now, take("b", 1, 3, exp), take("e", 1, 1, exp))
	requireRefused(t, got, 0, exp.Sub(now), "b and e full, b first")
	got = mustTake(t, s, now, take("c", 1, 1, exp), take("e", 1, 1, exp), take("b", 1, 3, exp))
	requireRefused(t, got, 1, at(10*time.Minute).Sub(now), "e and b full, e first after an allowed take")
	unchanged("after refused calls")

	// When every take is allowed, every counter changes.
	now = at(2 * time.Second)
	got = mustTake(t, s, now,
		take("a", 1, verify.NoLimit, at(2*time.Hour)),
		take("b", -1, 0, at(2*time.Hour)),
		take("c", 1, 1, at(2*time.Hour)))
	requireOK(t, got, "every take allowed")
	for i, c := range []struct {
		key  string
		want verify.Counter
	}{
		{"a", verify.Counter{Value: 3, UpdatedAt: now, ExpiresAt: at(2 * time.Hour)}},
		{"b", verify.Counter{Value: 2, UpdatedAt: now, ExpiresAt: exp}},
		{"c", verify.Counter{Value: 1, UpdatedAt: now, ExpiresAt: at(2 * time.Hour)}},
	} {
		assertCounter(t, c.want, got.Counters[i], c.key+" after an allowed call")
		assertStored(t, s, c.key, now, c.want, c.key+" stored after an allowed call")
	}
}

// testTakeCheck: a take with Delta 0 only checks, as a counting take is
// checked, and writes nothing: it is refused while the counter's value is
// above Max (so Max 0 refuses while it is above zero) and before its
// NotBefore, until the earlier of NotBefore and ExpiresAt (when the
// counter starts again); so is a positive take.
func testTakeCheck(t *testing.T, s verify.Counters) {
	got := mustTake(t, s, base, take("blk", 0, 0, at(time.Hour)))
	requireOK(t, got, "Delta 0, Max 0 on a missing counter")
	assert.Equal(t, verify.Counter{}, got.Counters[0])
	assertStored(t, s, "blk", base, verify.Counter{}, "a check on a missing counter writes nothing")

	// A counter at 2 whose NotBefore (base + 2h) is before its ExpiresAt
	// (base + 3h).
	b := verify.Backoff{Free: 1, Base: time.Hour, Max: 4 * time.Hour}
	exp := at(3 * time.Hour)
	nb := base.Add(b.Delay(2))
	got = mustTake(t, s, base, verify.Take{Key: "w", Delta: 2, Max: verify.NoLimit, ExpiresAt: exp, Backoff: b})
	requireOK(t, got, "the set-up take")
	want := verify.Counter{Value: 2, UpdatedAt: base, ExpiresAt: exp, NotBefore: nb}
	assertCounter(t, want, got.Counters[0], "the set-up take")

	now := at(time.Second)
	for _, max := range []int64{0, 1} {
		got = mustTake(t, s, now, verify.Take{Key: "w", Max: max, ExpiresAt: at(5 * time.Hour), Backoff: b})
		what := fmt.Sprintf("Delta 0, Max %d on a counter at 2", max)
		requireRefused(t, got, 0, exp.Sub(now), what+" (until ExpiresAt)")
		assertCounter(t, want, got.Counters[0], what)
		assertStored(t, s, "w", now, want, what+": nothing is written")
	}
	for _, max := range []int64{2, verify.NoLimit} {
		got = mustTake(t, s, now, verify.Take{Key: "w", Max: max, ExpiresAt: at(5 * time.Hour), Backoff: b})
		what := fmt.Sprintf("Delta 0, Max %d on a counter at 2, before its NotBefore", max)
		requireRefused(t, got, 0, nb.Sub(now), what+" (until NotBefore)")
		assertCounter(t, want, got.Counters[0], what+": Taken.Counters")
		assertStored(t, s, "w", now, want, what+": nothing is written (UpdatedAt, ExpiresAt, NotBefore)")

		got = mustTake(t, s, nb, verify.Take{Key: "w", Max: max, ExpiresAt: at(5 * time.Hour), Backoff: b})
		what = fmt.Sprintf("Delta 0, Max %d on a counter at 2, from its NotBefore on", max)
		requireOK(t, got, what)
		assertCounter(t, want, got.Counters[0], what+": Taken.Counters")
		assertStored(t, s, "w", nb, want, what+": nothing is written")
	}

	// Beside a counted take, a check still writes nothing.
	got = mustTake(t, s, nb, take("w", 0, 2, at(5*time.Hour)), take("other", 1, verify.NoLimit, at(5*time.Hour)))
	requireOK(t, got, "a check and a take")
	assertCounter(t, want, got.Counters[0], "the checked counter")
	assertStored(t, s, "w", nb, want, "a check beside a take writes nothing")
	assertStored(t, s, "other", nb, verify.Counter{Value: 1, UpdatedAt: nb, ExpiresAt: at(5 * time.Hour)}, "the counted take")
	// A check that refuses refuses the take beside it.
	got = mustTake(t, s, now.Add(time.Second), take("w", 0, verify.NoLimit, at(5*time.Hour)), take("other2", 1, verify.NoLimit, at(5*time.Hour)))
	requireRefused(t, got, 0, nb.Sub(now.Add(time.Second)), "a check before NotBefore, beside a take")
	assertStored(t, s, "other2", now.Add(time.Second), verify.Counter{}, "the take beside a refused check is not counted")

	// A counter at 2 whose NotBefore (base + 2h) is after its ExpiresAt
	// (base + 1h): its wait ends when it starts again, for a check and a
	// count alike.
	short := at(time.Hour)
	got = mustTake(t, s, base, verify.Take{Key: "k", Delta: 2, Max: verify.NoLimit, ExpiresAt: short, Backoff: b})
	requireOK(t, got, "the set-up take")
	for _, delta := range []int64{0, 1} {
		got = mustTake(t, s, now, verify.Take{Key: "k", Delta: delta, Max: verify.NoLimit, ExpiresAt: at(5 * time.Hour), Backoff: b})
		requireRefused(t, got, 0, short.Sub(now), fmt.Sprintf("Delta %d before a NotBefore past ExpiresAt: until ExpiresAt", delta))
	}

	// A block: refused while above zero, allowed once it expired.
	got = mustTake(t, s, short, take("k", 0, 0, at(3*time.Hour)))
	requireOK(t, got, "Delta 0, Max 0 once the counter expired")
	assert.Equal(t, verify.Counter{}, got.Counters[0], "an expired counter counts as the zero Counter")
}

// testTakeRefund: a negative Delta is always allowed (whatever Max and
// NotBefore), never takes the value below zero, leaves ExpiresAt, and
// leaves NotBefore only while the new value still owes a wait.
func testTakeRefund(t *testing.T, s verify.Counters) {
	exp := at(time.Hour)
	b := verify.Backoff{Free: 1, Base: time.Minute, Max: time.Hour}
	got := mustTake(t, s, base, verify.Take{Key: "k", Delta: 3, Max: verify.NoLimit, ExpiresAt: exp, Backoff: b})
	requireOK(t, got, "the set-up take")
	nb := base.Add(b.Delay(3))
	assertCounter(t, verify.Counter{Value: 3, UpdatedAt: base, ExpiresAt: exp, NotBefore: nb}, got.Counters[0], "the set-up take")

	now := at(time.Second) // before NotBefore
	got = mustTake(t, s, now, verify.Take{Key: "k", Delta: -1, Max: 0, ExpiresAt: at(2 * time.Hour), Backoff: b})
	requireOK(t, got, "a refund, under Max 0 and before NotBefore")
	want := verify.Counter{Value: 2, UpdatedAt: now, ExpiresAt: exp, NotBefore: nb}
	assertCounter(t, want, got.Counters[0], "a refund leaves ExpiresAt, and NotBefore while Backoff.Delay(2) > 0")
	assertStored(t, s, "k", now, want, "after a refund")

	now = at(2 * time.Second)
	got = mustTake(t, s, now, verify.Take{Key: "k", Delta: -1, Max: verify.NoLimit, Backoff: verify.Backoff{Free: 2, Base: time.Hour}})
	requireOK(t, got, "a refund to a value that owes no wait")
	want = verify.Counter{Value: 1, UpdatedAt: now, ExpiresAt: exp}
	assertCounter(t, want, got.Counters[0], "a refund clears NotBefore when Backoff.Delay of the new value is zero")
	assertStored(t, s, "k", now, want, "after a refund that lifts the wait")

	now = at(3 * time.Second)
	got = mustTake(t, s, now, take("k", -5, verify.NoLimit, at(2*time.Hour)))
	requireOK(t, got, "a refund larger than the value")
	want = verify.Counter{Value: 0, UpdatedAt: now, ExpiresAt: exp}
	assertCounter(t, want, got.Counters[0], "a refund never takes the value below zero")
	assertStored(t, s, "k", now, want, "after a refund larger than the value")

	// A refund keeps a wait the value still owes: it holds a positive take.
	now = at(4 * time.Second)
	got = mustTake(t, s, now, verify.Take{Key: "w", Delta: 2, Max: verify.NoLimit, ExpiresAt: exp, Backoff: b})
	requireOK(t, got, "the set-up take")
	nb = now.Add(b.Delay(2))
	got = mustTake(t, s, now, verify.Take{Key: "w", Delta: -1, Max: verify.NoLimit, Backoff: b})
	requireOK(t, got, "a refund to a value past Free")
	got = mustTake(t, s, now, take("w", 1, verify.NoLimit, at(2*time.Hour)))
	requireRefused(t, got, 0, nb.Sub(now), "a take before the NotBefore a refund left")
	got = mustTake(t, s, nb, take("w", 1, 2, at(2*time.Hour)))
	requireOK(t, got, "after NotBefore")
	assert.Equal(t, int64(2), got.Counters[0].Value, "counting goes on from the refunded value")

	// A refund on a missing counter is allowed and leaves it at zero.
	got = mustTake(t, s, now, take("missing", -1, 0, exp))
	requireOK(t, got, "a refund on a missing counter")
	assert.Equal(t, int64(0), got.Counters[0].Value, "a refund on a missing counter leaves it at zero")
	assertStored(t, s, "missing", now, verify.Counter{}, "a refund on a missing counter gives it no expiry")
}

// testTakeBackoff: after a take leaves the value at n, NotBefore is now +
// Backoff.Delay(n); a positive take before NotBefore is refused with
// RetryAfter = NotBefore - now, and allowed from NotBefore on.
func testTakeBackoff(t *testing.T, s verify.Counters) {
	exp := at(time.Hour)
	b := verify.Backoff{Free: 2, Base: 10 * time.Second, Max: time.Minute}
	tk := func(now time.Time) verify.Taken {
		t.Helper()
		return mustTake(t, s, now, verify.Take{Key: "k", Delta: 1, Max: verify.NoLimit, ExpiresAt: exp, Backoff: b})
	}

	got := tk(base)
	requireOK(t, got, "the first take")
	assertCounter(t, verify.Counter{Value: 1, UpdatedAt: base, ExpiresAt: exp}, got.Counters[0], "below Free there is no delay")
	got = tk(base)
	requireOK(t, got, "a second take at the same instant, below Free")
	require.Positive(t, b.Delay(2))
	nb := base.Add(b.Delay(2))
	want := verify.Counter{Value: 2, UpdatedAt: base, ExpiresAt: exp, NotBefore: nb}
	assertCounter(t, want, got.Counters[0], "at Free the delay starts: NotBefore = now + Delay(2)")
	assertStored(t, s, "k", base, want, "NotBefore is stored")

	for _, d := range []time.Duration{0, time.Microsecond, 5 * time.Second, b.Delay(2) - time.Microsecond} {
		now := at(d)
		got = tk(now)
		requireRefused(t, got, 0, nb.Sub(now), fmt.Sprintf("a take %v after the last, before NotBefore", d))
		assertCounter(t, want, got.Counters[0], "a take held by NotBefore returns the counter")
		assertStored(t, s, "k", now, want, "a take held by NotBefore changes nothing")
	}

	// From NotBefore on, allowed; the delay grows with the value, up to Max.
	now := nb
	for n := int64(3); n <= 6; n++ {
		got = tk(now)
		requireOK(t, got, fmt.Sprintf("take %d at NotBefore", n))
		want = verify.Counter{Value: n, UpdatedAt: now, ExpiresAt: exp, NotBefore: now.Add(b.Delay(n))}
		assertCounter(t, want, got.Counters[0], fmt.Sprintf("NotBefore = now + Delay(%d)", n))
		assertStored(t, s, "k", now, want, fmt.Sprintf("after take %d", n))
		now = want.NotBefore
	}

	// A take without Backoff is held by the NotBefore in place too, and
	// once counted it sets no wait.
	got = mustTake(t, s, now.Add(-time.Second), take("k", 1, verify.NoLimit, exp))
	requireRefused(t, got, 0, time.Second, "a take without Backoff is still held by the NotBefore in place")
	got = mustTake(t, s, now, take("k", 1, verify.NoLimit, exp))
	requireOK(t, got, "a take without Backoff at NotBefore")
	assertCounter(t, verify.Counter{Value: 7, UpdatedAt: now, ExpiresAt: exp}, got.Counters[0], "a zero Backoff sets no wait")
	got = mustTake(t, s, now, take("k", 1, verify.NoLimit, exp))
	requireOK(t, got, "the next take at once")

	// A refused take's RetryAfter is the later of the time until NotBefore
	// and, when the value is too high, the time until ExpiresAt; never
	// past ExpiresAt, when the counter starts again.
	got = mustTake(t, s, base, verify.Take{Key: "full", Delta: 1, Max: 1, ExpiresAt: at(10 * time.Minute),
		Backoff: verify.Backoff{Free: 1, Base: time.Minute}})
	requireOK(t, got, "set-up of full")
	got = mustTake(t, s, base, verify.Take{Key: "wait", Delta: 1, Max: 1, ExpiresAt: at(time.Minute),
		Backoff: verify.Backoff{Free: 1, Base: 10 * time.Minute}})
	requireOK(t, got, "set-up of wait")
	now = at(10 * time.Second)
	got = mustTake(t, s, now, take("full", 1, 1, exp))
	requireRefused(t, got, 0, at(10*time.Minute).Sub(now), "full and waiting, ExpiresAt later")
	got = mustTake(t, s, now, take("wait", 1, 1, exp))
	requireRefused(t, got, 0, at(time.Minute).Sub(now), "full and waiting, NotBefore past ExpiresAt")
	got = mustTake(t, s, now, take("wait", 1, 2, exp))
	requireRefused(t, got, 0, at(time.Minute).Sub(now), "waiting only, NotBefore past ExpiresAt")
}

// testCounterExpiry: a counter whose ExpiresAt is at or before now counts
// as the zero Counter, its NotBefore too.
func testCounterExpiry(t *testing.T, s verify.Counters) {
	exp := at(time.Minute)
	b := verify.Backoff{Free: 1, Base: time.Hour}
	got := mustTake(t, s, base, verify.Take{Key: "k", Delta: 2, Max: verify.NoLimit, ExpiresAt: exp, Backoff: b})
	requireOK(t, got, "the set-up take")
	want := verify.Counter{Value: 2, UpdatedAt: base, ExpiresAt: exp, NotBefore: base.Add(b.Delay(2))}
	require.True(t, want.NotBefore.After(exp), "the set-up's NotBefore is after its ExpiresAt")
	assertCounter(t, want, got.Counters[0], "the set-up take")

	assertStored(t, s, "k", exp.Add(-time.Microsecond), want, "GetCounter just before ExpiresAt")
	for _, now := range []time.Time{exp, exp.Add(time.Hour)} {
		c, err := s.GetCounter(ctx(), "k", now)
		require.NoError(t, err)
		assert.Equal(t, verify.Counter{}, c, "GetCounter %v after ExpiresAt: the zero Counter", now.Sub(exp))
	}

	// Expired, it counts as zero: checks and refunds see zero, a refused
	// take returns the zero Counter.
	got = mustTake(t, s, exp, take("k", 0, 0, at(time.Hour)))
	requireOK(t, got, "a check on an expired counter")
	assert.Equal(t, verify.Counter{}, got.Counters[0], "an expired counter is returned as the zero Counter")
	got = mustTake(t, s, exp, take("k", 1, 0, at(time.Hour)))
	require.False(t, got.OK, "Delta 1 > Max 0")
	assert.Equal(t, verify.Counter{}, got.Counters[0], "a refused take returns an expired counter as the zero Counter")

	// ... and a positive take starts again from zero, not held by the old
	// NotBefore.
	now := exp
	got = mustTake(t, s, now, take("k", 1, 1, at(2*time.Minute)))
	requireOK(t, got, "a take at ExpiresAt, before the old NotBefore, under Max 1")
	want = verify.Counter{Value: 1, UpdatedAt: now, ExpiresAt: at(2 * time.Minute)}
	assertCounter(t, want, got.Counters[0], "an expired counter starts again from zero")
	assertStored(t, s, "k", now, want, "after the take on an expired counter")

	// A refund on an expired counter stays at zero.
	got = mustTake(t, s, base, take("r", 5, verify.NoLimit, exp))
	requireOK(t, got, "set-up of r")
	got = mustTake(t, s, exp, take("r", -1, 0, at(time.Hour)))
	requireOK(t, got, "a refund on an expired counter")
	assert.Equal(t, int64(0), got.Counters[0].Value, "a refund on an expired counter refunds from zero")
	assertStored(t, s, "r", exp, verify.Counter{}, "after a refund on an expired counter")
}

func testGetAndDeleteCounter(t *testing.T, s verify.Counters) {
	c, err := s.GetCounter(ctx(), "missing", base)
	require.NoError(t, err)
	assert.Equal(t, verify.Counter{}, c, "a missing counter is the zero Counter")
	require.NoError(t, s.DeleteCounter(ctx(), "missing"), "deleting a missing counter is not an error")

	b := verify.Backoff{Free: 1, Base: time.Hour}
	requireOK(t, mustTake(t, s, base, verify.Take{Key: "k", Delta: 3, Max: verify.NoLimit, ExpiresAt: at(time.Hour), Backoff: b}), "set-up")
	requireOK(t, mustTake(t, s, base, take("other", 1, verify.NoLimit, at(time.Hour))), "set-up")
	require.NoError(t, s.DeleteCounter(ctx(), "k"))
	assertStored(t, s, "k", base, verify.Counter{}, "GetCounter after DeleteCounter")
	assertStored(t, s, "other", base, verify.Counter{Value: 1, UpdatedAt: base, ExpiresAt: at(time.Hour)}, "DeleteCounter leaves other counters")
	require.NoError(t, s.DeleteCounter(ctx(), "k"), "deleting a counter twice")

	got := mustTake(t, s, at(time.Second), take("k", 1, 1, at(time.Hour)))
	requireOK(t, got, "a deleted counter starts again from zero, without its NotBefore")
	assert.Equal(t, int64(1), got.Counters[0].Value)
}

func testPurgeCounters(t *testing.T, s verify.Counters) {
	n, err := s.PurgeCounters(ctx(), at(time.Hour), 10)
	require.NoError(t, err)
	assert.Equal(t, 0, n, "nothing to purge in an empty store")

	for _, c := range []struct {
		key string
		exp time.Time
	}{{"old", at(time.Minute)}, {"older", at(30 * time.Second)}, {"edge", at(3 * time.Minute)}, {"live", at(time.Hour)}} {
		requireOK(t, mustTake(t, s, base, take(c.key, 1, verify.NoLimit, c.exp)), "set-up of "+c.key)
	}
	before := at(3 * time.Minute)
	n, err = s.PurgeCounters(ctx(), before, 1)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "PurgeCounters respects limit")
	n, err = s.PurgeCounters(ctx(), before, 100)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "ExpiresAt strictly before `before` only")
	n, err = s.PurgeCounters(ctx(), before, 100)
	require.NoError(t, err)
	assert.Equal(t, 0, n, "nothing is purged twice")

	// Read as of before their expiry: a purged counter is gone, a kept one
	// is not.
	for _, key := range []string{"old", "older"} {
		assertStored(t, s, key, base, verify.Counter{}, "PurgeCounters deleted "+key)
	}
	assertStored(t, s, "edge", base, verify.Counter{Value: 1, UpdatedAt: base, ExpiresAt: at(3 * time.Minute)}, "PurgeCounters keeps a counter expiring at `before`")
	assertStored(t, s, "live", base, verify.Counter{Value: 1, UpdatedAt: base, ExpiresAt: at(time.Hour)}, "PurgeCounters keeps a live counter")
	n, err = s.PurgeCounters(ctx(), at(1000*time.Hour), 100)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
}

func testCountersCanceledContext(t *testing.T, s verify.Counters) {
	c, cancel := context.WithCancel(ctx())
	cancel()
	_, err := s.Take(c, base, []verify.Take{take("k", 1, verify.NoLimit, at(time.Hour))})
	require.Error(t, err, "a cancelled context is an error")
	assert.NotErrorIs(t, err, verify.ErrNotFound)
	assertStored(t, s, "k", base, verify.Counter{}, "a take under a cancelled context is not counted")
}

// raceTakes releases n goroutines at once, the i-th calling Take(now,
// takes(i)) and then check(i, its answer), and returns how many were OK.
func raceTakes(t *testing.T, s verify.Counters, n int, now time.Time, takes func(i int) []verify.Take, check func(i int, got verify.Taken) error) int {
	t.Helper()
	var ok atomic.Int32
	errs := make(chan error, n)
	released(n, func(i int) {
		got, err := s.Take(ctx(), now, takes(i))
		if err == nil && check != nil {
			err = check(i, got)
		}
		if err != nil {
			errs <- err
			return
		}
		if got.OK {
			ok.Add(1)
		}
	})
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return int(ok.Load())
}

func testTakeConcurrentMax(t *testing.T, s verify.Counters) {
	const goroutines, max = 200, 3
	exp := at(time.Hour)
	ok := raceTakes(t, s, goroutines, base, func(int) []verify.Take { return []verify.Take{take("k", 1, max, exp)} },
		func(_ int, got verify.Taken) error {
			if !got.OK && (got.Refused != 0 || got.RetryAfter != exp.Sub(base) || len(got.Counters) != 1 || got.Counters[0].Value != max) {
				return fmt.Errorf("a refused racing take: want Refused 0, RetryAfter %v and the counter at %d, got %+v", exp.Sub(base), max, got)
			}
			return nil
		})
	assert.Equal(t, max, ok, "of %d racing takes under Max %d exactly %d are OK", goroutines, max, max)
	assertStored(t, s, "k", base, verify.Counter{Value: max, UpdatedAt: base, ExpiresAt: exp}, "the counter after the race")
}

func testTakeConcurrentBackoff(t *testing.T, s verify.Counters) {
	const goroutines = 200
	exp := at(2 * time.Hour)
	b := verify.Backoff{Free: 1, Base: time.Hour, Max: time.Hour}
	ok := raceTakes(t, s, goroutines, base,
		func(int) []verify.Take {
			return []verify.Take{{Key: "k", Delta: 1, Max: verify.NoLimit, ExpiresAt: exp, Backoff: b}}
		},
		func(_ int, got verify.Taken) error {
			if !got.OK && (got.Refused != 0 || got.RetryAfter != time.Hour) {
				return fmt.Errorf("a take held by NotBefore: want Refused 0 and RetryAfter 1h, got %+v", got)
			}
			return nil
		})
	assert.Equal(t, 1, ok, "of %d racing takes with a 1h delay from the first, exactly one is OK", goroutines)
	assertStored(t, s, "k", base, verify.Counter{Value: 1, UpdatedAt: base, ExpiresAt: exp, NotBefore: at(time.Hour)}, "the counter after the race")
}

func testTakeConcurrentKeys(t *testing.T, s verify.Counters) {
	const goroutines, maxA, maxB = 200, 5, 8
	exp := at(time.Hour)
	// Half the calls name the keys in the other order, as another
	// protection would, which must not deadlock.
	ok := raceTakes(t, s, goroutines, base, func(i int) []verify.Take {
		a, b := take("a", 1, maxA, exp), take("b", 1, maxB, exp)
		if i%2 == 0 {
			return []verify.Take{a, b}
		}
		return []verify.Take{b, a}
	}, nil)
	assert.Equal(t, maxA, ok, "of %d racing two-key takes, exactly min(Max) are OK", goroutines)
	want := verify.Counter{Value: int64(ok), UpdatedAt: base, ExpiresAt: exp}
	assertStored(t, s, "a", base, want, "a: one count per OK call")
	assertStored(t, s, "b", base, want, "b: one count per OK call, none from the refused calls")
}

func testTakeConcurrentRefunds(t *testing.T, s verify.Counters) {
	const goroutines = 200
	exp := at(time.Hour)

	// Counts and refunds racing: every one is applied once.
	requireOK(t, mustTake(t, s, base, take("k", 100, verify.NoLimit, exp)), "set-up")
	ok := raceTakes(t, s, goroutines, base, func(i int) []verify.Take {
		if i%2 == 0 {
			return []verify.Take{take("k", 1, verify.NoLimit, exp)}
		}
		return []verify.Take{take("k", -1, 0, exp)}
	}, nil)
	assert.Equal(t, goroutines, ok, "counts under NoLimit and refunds are all allowed")
	c, err := s.GetCounter(ctx(), "k", base)
	require.NoError(t, err)
	assert.Equal(t, int64(100), c.Value, "100 + %d counts - %d refunds", goroutines/2, goroutines/2)

	// Each caller takes under a Max and gives back what it took: the
	// counter never passes Max and ends at zero.
	const max = 10
	var refunds atomic.Int32
	errs := make(chan error, goroutines)
	released(goroutines, func(int) {
		got, err := s.Take(ctx(), base, []verify.Take{take("m", 1, max, exp)})
		switch {
		case err != nil:
			errs <- err
		case len(got.Counters) != 1:
			errs <- fmt.Errorf("Taken.Counters: want one counter, got %+v", got)
		case !got.OK && got.Counters[0].Value != max:
			errs <- fmt.Errorf("a take under Max %d was refused with the counter at %d", max, got.Counters[0].Value)
		case got.OK && (got.Counters[0].Value < 1 || got.Counters[0].Value > max):
			errs <- fmt.Errorf("a take under Max %d left the counter at %d", max, got.Counters[0].Value)
		case got.OK:
			got, err := s.Take(ctx(), base, []verify.Take{take("m", -1, 0, exp)})
			if err == nil && !got.OK {
				err = fmt.Errorf("a refund was refused: %+v", got)
			}
			if err != nil {
				errs <- err
				return
			}
			refunds.Add(1)
		}
	})
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.GreaterOrEqual(t, int(refunds.Load()), max, "at least the first Max takes are allowed")
	c, err = s.GetCounter(ctx(), "m", base)
	require.NoError(t, err)
	assert.Equal(t, int64(0), c.Value, "every take was refunded: the counter is back at zero")
}

// testListCounters checks verify.CounterLister, for the backends that
// have it.
func testListCounters(t *testing.T, s verify.Counters) {
	l, ok := s.(verify.CounterLister)
	if !ok {
		t.Skip("the backend does not implement verify.CounterLister (optional)")
	}
	list := func(prefix string, now time.Time, after string, limit int) []string {
		t.Helper()
		got, err := l.ListCounters(ctx(), prefix, now, after, limit)
		require.NoError(t, err)
		out := make([]string, 0, len(got))
		for _, c := range got {
			out = append(out, fmt.Sprintf("%s=%d", c.Key, c.Value))
		}
		return out
	}
	assert.Empty(t, list("fail:", base, "", 10))
	exp := at(time.Hour)
	for _, tk := range []verify.Take{
		take("fail:+4791234567", 3, verify.NoLimit, exp),
		take("fail:ana@example.com", 5, verify.NoLimit, exp),
		take("fail:+4790000000", 1, verify.NoLimit, at(time.Minute)),
		take("block:prefix:+4790", 1, verify.NoLimit, exp),
		take("fail", 1, verify.NoLimit, exp),      // the prefix, not under it
		take("xfail:+47", 1, verify.NoLimit, exp), // the prefix inside, not at the start
		take("fail:*?[", 2, verify.NoLimit, exp),  // glob characters are plain text
	} {
		requireOK(t, mustTake(t, s, base, tk), tk.Key)
	}
	// A counter at zero that has not expired is listed: a refund brought it
	// there.
	requireOK(t, mustTake(t, s, base, take("fail:zero@example.com", 1, verify.NoLimit, exp)), "zero")
	requireOK(t, mustTake(t, s, base, take("fail:zero@example.com", -1, verify.NoLimit, exp)), "zero")

	all := []string{"fail:*?[=2", "fail:+4790000000=1", "fail:+4791234567=3", "fail:ana@example.com=5", "fail:zero@example.com=0"}
	assert.Equal(t, all, list("fail:", base, "", 10), "keys under the prefix, in byte order")
	assert.Equal(t, []string{"block:prefix:+4790=1"}, list("block:prefix:", base, "", 10))
	assert.Equal(t, all[:2], list("fail:", base, "", 2), "at most limit")
	assert.Equal(t, all[2:4], list("fail:", base, "fail:+4790000000", 2), "strictly after after")
	assert.Equal(t, []string{"fail:*?[=2", "fail:+4791234567=3", "fail:ana@example.com=5", "fail:zero@example.com=0"},
		list("fail:", at(time.Minute), "", 10), "not the counters expired at now")
	assert.Equal(t, []string{"fail:*?[=2"}, list("fail:*", base, "", 10), "a prefix with glob characters")
	assert.Len(t, list("", base, "", 100), 8, "every live counter under the empty prefix")
	requireOK(t, mustTake(t, s, base, take("fail:élise@example.com", 1, verify.NoLimit, exp)), "élise")
	requireOK(t, mustTake(t, s, base, take("fail:éa", 1, verify.NoLimit, exp)), "éa")
	assert.Equal(t, []string{"fail:éa=1", "fail:élise@example.com=1"}, list("fail:é", base, "", 10), "a prefix of several bytes a character")
	assert.Equal(t, []string{"fail:élise@example.com=1"}, list("fail:él", base, "", 10))
	assert.Empty(t, list("fail:", base, "", 0), "limit 0")
}
