package storetest

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// guardedStore is what the Guarded part tests: a Store that judges a right
// code with the read of the recipient's failures.
type guardedStore interface {
	verificationStore
	verify.Counters
	verify.GuardedStore
}

var guardedTests = []test[guardedStore]{
	{"RightCodeVerifies", testRightCodeVerifies},
	{"GuardRefuses", testGuardRefuses},
	{"WrongCodeChangesNothing", testWrongCodeChangesNothing},
	{"MatchNotCounted", testMatchNotCounted},
	{"RightCodesConcurrent", testRightCodesConcurrent},
	{"GuardRefusesConcurrent", testGuardRefusesConcurrent},
}

var failGuard = verify.Guard{Key: "fail:+4712345678", Max: 3}

// setFailures makes the guard's counter n with NotBefore notBefore.
func setFailures(t *testing.T, s verify.Counters, n int64, notBefore time.Duration) {
	t.Helper()
	require.NoError(t, s.DeleteCounter(ctx(), failGuard.Key))
	if n == 0 {
		return
	}
	var b verify.Backoff
	if notBefore > 0 {
		b = verify.Backoff{Base: notBefore}
	}
	_, err := s.Take(ctx(), base, []verify.Take{{Key: failGuard.Key, Delta: n, Max: verify.NoLimit, ExpiresAt: at(time.Hour), Backoff: b}})
	require.NoError(t, err)
}

// A right code verifies, as Attempt counts it, applies the counts and
// returns the failures it read.
func testRightCodeVerifies(t *testing.T, s guardedStore) {
	setFailures(t, s, 2, 0)
	v := create(t, s, sampleVerification(3, time.Minute), steps(sampleVerification(3, time.Minute)))
	count := []verify.Count{{Key: "conv:ok:g", Delta: 1, ExpiresAt: at(time.Hour)}}
	got, verified, failures, err := s.AttemptRight(ctx(), v.ID, rightCode, at(time.Second), failGuard, count)
	require.NoError(t, err)
	assert.True(t, verified)
	assert.Equal(t, int64(2), failures.Value, "the failures read")
	sameTime(t, at(time.Hour), failures.ExpiresAt, "the failures' ExpiresAt")
	assert.Equal(t, verify.StatusVerified, got.Status)
	assert.Equal(t, 1, got.Attempts)
	sameTime(t, at(time.Second), got.VerifiedAt, "VerifiedAt")
	sameTime(t, at(time.Second), got.EndedAt, "EndedAt")
	assert.Empty(t, got.SealedCode, "the sealed code is erased when it ends")
	assertChecks(t, got.Checks, "one right", checkAt(time.Second, true))
	assert.NotContains(t, claimAll(t, s, at(time.Hour)), v.ID+"/0", "its steps are deleted")
	assert.Equal(t, int64(1), counter(t, s, "conv:ok:g", base).Value, "the counts are applied")
	assertRecord(t, got, getVerification(t, s, v.ID))

	// Without failures, and without counts.
	w := create(t, s, sampleVerification(3, time.Minute), nil)
	setFailures(t, s, 0, 0)
	got, verified, failures, err = s.AttemptRight(ctx(), w.ID, rightCode, at(time.Second), failGuard, nil)
	require.NoError(t, err)
	assert.True(t, verified)
	assert.Zero(t, failures)
	assert.Equal(t, verify.StatusVerified, got.Status)
}

// While the failures are at Max, or their NotBefore has not passed, a
// code is not judged: nothing changes, whatever the code, and the record
// returned is the zero one. An expired counter is the zero Counter.
func testGuardRefuses(t *testing.T, s guardedStore) {
	v := create(t, s, sampleVerification(3, 5*time.Minute), nil)
	count := []verify.Count{{Key: "conv:ok:g", Delta: 1, ExpiresAt: at(time.Hour)}}
	check := func(what string, hashes [][]byte, now time.Time) verify.Counter {
		t.Helper()
		got, verified, failures, err := s.AttemptRight(ctx(), v.ID, hashes, now, failGuard, count)
		require.NoError(t, err, what)
		assert.False(t, verified, what)
		assert.Zero(t, got, "%s: the zero record", what)
		return failures
	}
	setFailures(t, s, 3, 0)
	f := check("locked out, right code", rightCode, at(time.Second))
	assert.Equal(t, int64(3), f.Value)
	check("locked out, wrong code", wrongCode, at(time.Second))
	_, _, _, err := s.AttemptRight(ctx(), newID(), rightCode, at(time.Second), failGuard, count)
	assert.NoError(t, err, "refused before the verification is looked for")

	setFailures(t, s, 1, time.Minute) // NotBefore one minute after base
	f = check("waiting, right code", rightCode, at(30*time.Second))
	sameTime(t, at(time.Minute), f.NotBefore, "NotBefore")
	got := getVerification(t, s, v.ID)
	assert.Zero(t, got.Attempts, "refused checks count no attempt")
	assert.Equal(t, verify.StatusPending, got.Status)
	assert.Zero(t, counter(t, s, "conv:ok:g", base).Value, "nor anything else")

	// Once NotBefore has passed, it is judged.
	_, verified, f, err := s.AttemptRight(ctx(), v.ID, rightCode, at(time.Minute), failGuard, count)
	require.NoError(t, err)
	assert.True(t, verified)
	assert.Equal(t, int64(1), f.Value)

	// A counter that has expired is the zero Counter.
	w := create(t, s, sampleVerification(3, 3*time.Hour), nil)
	setFailures(t, s, 3, 0) // expires at base + 1h
	_, verified, f, err = s.AttemptRight(ctx(), w.ID, rightCode, at(time.Hour), failGuard, nil)
	require.NoError(t, err)
	assert.True(t, verified, "the lockout has expired")
	assert.Zero(t, f)
}

// A code that matches no hash changes nothing, returns the zero record and
// applies no count; an unknown ID is ErrNotFound.
func testWrongCodeChangesNothing(t *testing.T, s guardedStore) {
	setFailures(t, s, 1, 0)
	v := create(t, s, sampleVerification(3, time.Minute), steps(sampleVerification(3, time.Minute)))
	count := []verify.Count{{Key: "conv:ok:g", Delta: 1, ExpiresAt: at(time.Hour)}}
	got, verified, failures, err := s.AttemptRight(ctx(), v.ID, wrongCode, at(time.Second), failGuard, count)
	require.NoError(t, err)
	assert.False(t, verified)
	assert.Zero(t, got)
	assert.Equal(t, int64(1), failures.Value)
	rec := getVerification(t, s, v.ID)
	assert.Zero(t, rec.Attempts, "a wrong code is not counted here")
	assert.Empty(t, rec.Checks)
	assert.Equal(t, verify.StatusPending, rec.Status)
	assert.Zero(t, counter(t, s, "conv:ok:g", base).Value)
	assert.Contains(t, claimAll(t, s, at(time.Hour)), v.ID+"/0", "its steps stay")

	_, _, _, err = s.AttemptRight(ctx(), newID(), rightCode, at(time.Second), failGuard, count)
	requireNotFound(t, err, "an unknown ID")
}

// A matching code that cannot be counted (the verification has ended,
// expired or used its attempts) changes nothing and returns the record as
// it is.
func testMatchNotCounted(t *testing.T, s guardedStore) {
	count := []verify.Count{{Key: "conv:ok:g", Delta: 1, ExpiresAt: at(time.Hour)}}
	verified := create(t, s, sampleVerification(3, time.Minute), nil)
	_, ok, _, err := s.AttemptRight(ctx(), verified.ID, rightCode, at(time.Second), failGuard, count)
	require.NoError(t, err)
	require.True(t, ok)
	expired := create(t, s, sampleVerification(3, time.Minute), nil)
	spent := create(t, s, sampleVerification(1, time.Minute), nil)
	_, _, err = s.Attempt(ctx(), spent.ID, wrongCode, at(time.Second))
	require.NoError(t, err)
	for name, c := range map[string]struct {
		id     string
		now    time.Time
		status verify.Status
	}{
		"already verified": {verified.ID, at(2 * time.Second), verify.StatusVerified},
		"expired":          {expired.ID, at(time.Minute), verify.StatusPending},
		"out of attempts":  {spent.ID, at(2 * time.Second), verify.StatusMaxAttempts},
	} {
		got, ok, _, err := s.AttemptRight(ctx(), c.id, rightCode, c.now, failGuard, count)
		require.NoError(t, err, name)
		assert.False(t, ok, name)
		assert.Equal(t, c.id, got.ID, "%s: the record as it is", name)
		assert.Equal(t, c.status, got.Status, name)
		assertRecord(t, getVerification(t, s, c.id), got)
	}
	assert.Equal(t, int64(1), counter(t, s, "conv:ok:g", base).Value, "only the one that verified counted")
}

// Right codes racing on one verification verify it once; the counts are
// applied once.
func testRightCodesConcurrent(t *testing.T, s guardedStore) {
	const n = 64
	ids := []string{create(t, s, sampleVerification(5, time.Minute), nil).ID, create(t, s, sampleVerification(5, time.Minute), nil).ID}
	var verified atomic.Int64
	released(n, func(i int) {
		count := []verify.Count{{Key: "conv:ok:race", Delta: 1, ExpiresAt: at(time.Hour)}}
		_, ok, _, err := s.AttemptRight(ctx(), ids[i%2], rightCode, at(time.Second), failGuard, count)
		assert.NoError(t, err)
		if ok {
			verified.Add(1)
		}
	})
	assert.Equal(t, int64(2), verified.Load(), "each verification verified once")
	assert.Equal(t, int64(2), counter(t, s, "conv:ok:race", base).Value)
	for _, id := range ids {
		got := getVerification(t, s, id)
		assert.Equal(t, 1, got.Attempts)
		assert.Equal(t, verify.StatusVerified, got.Status)
	}
}

// With the failures at Max, every one of many racing right codes is
// refused, and none is counted.
func testGuardRefusesConcurrent(t *testing.T, s guardedStore) {
	setFailures(t, s, 3, 0)
	v := create(t, s, sampleVerification(5, time.Minute), nil)
	released(64, func(int) {
		_, ok, f, err := s.AttemptRight(ctx(), v.ID, rightCode, at(time.Second), failGuard, nil)
		assert.NoError(t, err)
		assert.False(t, ok)
		assert.Equal(t, int64(3), f.Value)
	})
	got := getVerification(t, s, v.ID)
	assert.Zero(t, got.Attempts)
	assert.Equal(t, verify.StatusPending, got.Status)
}
