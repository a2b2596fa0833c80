package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// assertRecord compares two records, times to the microsecond, ignoring
// Deliveries.
func assertRecord(t *testing.T, want, got verify.VerificationRecord) {
	t.Helper()
	sameTime(t, want.CreatedAt, got.CreatedAt, "CreatedAt")
	sameTime(t, want.ExpiresAt, got.ExpiresAt, "ExpiresAt")
	sameTime(t, want.VerifiedAt, got.VerifiedAt, "VerifiedAt")
	sameTime(t, want.EndedAt, got.EndedAt, "EndedAt")
	sameTime(t, want.LastSentAt, got.LastSentAt, "LastSentAt")
	for _, r := range []*verify.VerificationRecord{&want, &got} {
		r.CreatedAt, r.ExpiresAt, r.VerifiedAt, r.EndedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		r.LastSentAt = time.Time{}
		r.Deliveries = nil
		if len(r.SealedCode) == 0 {
			r.SealedCode = nil
		}
		if len(r.CodeHash) == 0 {
			r.CodeHash = nil
		}
		if len(r.RequestHash) == 0 {
			r.RequestHash = nil
		}
	}
	assert.Equal(t, want, got)
}

func testVerificationRoundTrip(t *testing.T, s verificationStore) {
	_, err := s.GetVerification(ctx(), newID())
	requireNotFound(t, err, "GetVerification of an unknown ID")

	v := sampleVerification(5, 5*time.Minute)
	checked := v
	checked.Checks = []verify.CheckAttempt{{At: base, Right: true}}
	create(t, s, checked, steps(v))
	got, err := s.GetVerification(ctx(), v.ID)
	require.NoError(t, err)
	assertRecord(t, v, got)
	assert.Empty(t, got.Deliveries)
	assert.Empty(t, got.Checks, "CreateVerification ignores Checks")
	assert.True(t, got.EndedAt.IsZero(), "EndedAt is zero while open")

	// Both steps were stored with the verification.
	claimed := claimAll(t, s, at(time.Hour))
	assert.Contains(t, claimed, v.ID+"/0")
	assert.Contains(t, claimed, v.ID+"/1")

	// Another store call with the same ID fails, and changes nothing.
	dup := v
	dup.ForeignID = "other"
	require.Error(t, s.CreateVerification(ctx(), dup, nil), "CreateVerification with an existing ID")
	got, err = s.GetVerification(ctx(), v.ID)
	require.NoError(t, err)
	assert.Equal(t, "order-42", got.ForeignID)

	// An open verification has no EndedAt, whatever the record said.
	odd := sampleVerification(5, 5*time.Minute)
	odd.EndedAt = at(time.Second)
	create(t, s, odd, nil)
	got, err = s.GetVerification(ctx(), odd.ID)
	require.NoError(t, err)
	assert.True(t, got.EndedAt.IsZero(), "an open verification is stored without EndedAt")
}

// cloneVerification returns a copy of v that shares no slice with it.
func cloneVerification(v verify.VerificationRecord) verify.VerificationRecord {
	v.CodeHash = append([]byte(nil), v.CodeHash...)
	v.SealedCode = append([]byte(nil), v.SealedCode...)
	v.RequestHash = append([]byte(nil), v.RequestHash...)
	v.Steps = append([]verify.Step(nil), v.Steps...)
	v.AllowedIPs = append([]string(nil), v.AllowedIPs...)
	v.Deliveries = append([]verify.DeliveryRecord(nil), v.Deliveries...)
	return v
}

// testHandedSlicesNotKept: a store copies what it keeps of the slices it is
// handed (a record's byte slices, Steps and AllowedIPs, the pending steps
// of CreateVerification and Reschedule), so a caller that reuses them
// afterwards changes nothing stored.
func testHandedSlicesNotKept(t *testing.T, s verificationStore) {
	v := sampleVerification(5, 5*time.Minute)
	v.CodeHash = []byte("hash-hash-hash-hash-hash-hash-32")
	v.IdempotencyKey, v.RequestHash = "key-"+v.ID, []byte("request-hash")
	ps := steps(v)
	want, wantSteps := cloneVerification(v), append([]verify.PendingStep(nil), ps...)
	create(t, s, v, ps)

	for _, b := range [][]byte{v.CodeHash, v.SealedCode, v.RequestHash} {
		for i := range b {
			b[i] = 'X'
		}
	}
	for i := range v.Steps {
		v.Steps[i] = verify.Step{Channel: "changed", From: "changed", After: time.Hour}
	}
	for i := range v.AllowedIPs {
		v.AllowedIPs[i] = "changed"
	}
	for i := range ps {
		ps[i] = verify.PendingStep{VerificationID: "changed", Step: 7 + i, DueAt: at(100 * time.Hour)}
	}

	got, err := s.GetVerification(ctx(), want.ID)
	require.NoError(t, err)
	assertRecord(t, want, got)
	byID, err := s.FindByIdempotencyKey(ctx(), want.IdempotencyKey)
	require.NoError(t, err)
	assertRecord(t, want, byID)
	next, ok, err := s.NextDue(ctx())
	require.NoError(t, err)
	require.True(t, ok, "the pending steps are stored")
	sameTime(t, wantSteps[0].DueAt, next, "NextDue after the caller reused the pending steps it handed in")
	claimed := claimAll(t, s, at(time.Minute))
	require.ElementsMatch(t, []string{want.ID + "/0", want.ID + "/1"}, keys(claimed),
		"the stored pending steps are the ones handed in, whatever the caller did to its slice afterwards")
	for _, p := range wantSteps {
		sameTime(t, p.DueAt, claimed[fmt.Sprintf("%s/%d", p.VerificationID, p.Step)].DueAt, "DueAt")
	}

	// Reschedule's steps: step 0 is moved later (and its lease, from the
	// claim above, is replaced because it ran out at now).
	now := at(2 * time.Minute)
	re := []verify.PendingStep{{VerificationID: want.ID, Step: 0, DueAt: at(10 * time.Minute)}}
	updated, err := s.Reschedule(ctx(), now, re)
	require.NoError(t, err)
	require.Len(t, updated, 1)
	re[0] = verify.PendingStep{VerificationID: want.ID, Step: 0, DueAt: now}
	claimed = claimAll(t, s, at(5*time.Minute))
	assert.Equal(t, []string{want.ID + "/1"}, keys(claimed),
		"a step stays as Reschedule set it, whatever the caller did to its slice afterwards")
	next, _, err = s.NextDue(ctx())
	require.NoError(t, err)
	sameTime(t, at(6*time.Minute), next, "NextDue: step 1 under its new lease, step 0 due later")
}

// wrongCode and rightCode are Attempt's hashes for a code that does not
// and one that does match sampleVerification's CodeHash (the second of two
// secrets, as after a rotation).
var (
	wrongCode = [][]byte{[]byte("fedcba9876543210fedcba9876543210")}
	rightCode = [][]byte{[]byte("fedcba9876543210fedcba9876543210"), []byte("0123456789abcdef0123456789abcdef")}
)

func testAttempt(t *testing.T, s verificationStore) {
	_, _, err := s.Attempt(ctx(), newID(), wrongCode, base)
	requireNotFound(t, err, "Attempt on an unknown ID")

	// Wrong codes count until the last attempt, which ends it.
	v := create(t, s, sampleVerification(3, time.Minute), steps(sampleVerification(3, time.Minute)))
	for i := 1; i <= 2; i++ {
		got, counted, err := s.Attempt(ctx(), v.ID, wrongCode, at(time.Second))
		require.NoError(t, err)
		assert.True(t, counted, "attempt %d of 3 is counted", i)
		assert.Equal(t, i, got.Attempts, "Attempt returns the updated record")
		assert.Equal(t, verify.StatusPending, got.Status, "a wrong code before the last attempt leaves it open")
		assert.Equal(t, v.CodeHash, got.CodeHash)
		assert.Equal(t, v.SealedCode, got.SealedCode)
		assert.True(t, got.EndedAt.IsZero())
	}
	got, counted, err := s.Attempt(ctx(), v.ID, wrongCode, at(2*time.Second))
	require.NoError(t, err)
	assert.True(t, counted, "the last attempt is counted")
	assert.Equal(t, 3, got.Attempts)
	assert.Equal(t, verify.StatusMaxAttempts, got.Status, "a wrong last attempt ends it as max_attempts")
	sameTime(t, at(2*time.Second), got.EndedAt, "EndedAt")
	assert.True(t, got.VerifiedAt.IsZero())
	assert.Empty(t, got.SealedCode, "the sealed code is erased when it ends")
	claimed := claimAll(t, s, at(time.Hour))
	assert.NotContains(t, claimed, v.ID+"/0", "the last attempt deletes the pending steps")
	assert.NotContains(t, claimed, v.ID+"/1", "the last attempt deletes the pending steps")
	assertChecks(t, got.Checks, "three wrong", checkAt(time.Second, false), checkAt(time.Second, false), checkAt(2*time.Second, false))
	got, counted, err = s.Attempt(ctx(), v.ID, rightCode, at(3*time.Second))
	require.NoError(t, err)
	assert.False(t, counted, "an attempt beyond MaxAttempts is not counted")
	assert.Equal(t, 3, got.Attempts, "Attempts never exceeds MaxAttempts")
	assert.Equal(t, verify.StatusMaxAttempts, got.Status, "not even the right code verifies it then")
	assertChecks(t, got.Checks, "an attempt not counted is not kept", checkAt(time.Second, false), checkAt(time.Second, false), checkAt(2*time.Second, false))

	// The right code, matched by any of the hashes, verifies it.
	r := sampleVerification(3, time.Minute)
	r = create(t, s, r, steps(r))
	_, _, err = s.Attempt(ctx(), r.ID, wrongCode, at(time.Second))
	require.NoError(t, err)
	got, counted, err = s.Attempt(ctx(), r.ID, rightCode, at(2*time.Second))
	require.NoError(t, err)
	assert.True(t, counted)
	assert.Equal(t, 2, got.Attempts, "the right code counts as an attempt")
	assert.Equal(t, verify.StatusVerified, got.Status)
	sameTime(t, at(2*time.Second), got.VerifiedAt, "VerifiedAt")
	sameTime(t, at(2*time.Second), got.EndedAt, "EndedAt")
	assert.Empty(t, got.SealedCode, "the sealed code is erased when it ends")
	assert.Equal(t, r.CodeHash, got.CodeHash, "the code's HMAC is kept")
	claimed = claimAll(t, s, at(time.Hour))
	assert.NotContains(t, claimed, r.ID+"/0", "verifying deletes the pending steps")
	assert.NotContains(t, claimed, r.ID+"/1", "verifying deletes the pending steps")
	assertChecks(t, got.Checks, "a wrong and the right code", checkAt(time.Second, false), checkAt(2*time.Second, true))
	stored, err := s.GetVerification(ctx(), r.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusVerified, stored.Status, "the ending is stored")
	assertChecks(t, stored.Checks, "the checks are stored", checkAt(time.Second, false), checkAt(2*time.Second, true))
	_, counted, err = s.Attempt(ctx(), r.ID, rightCode, at(3*time.Second))
	require.NoError(t, err)
	assert.False(t, counted, "a verified verification takes no more attempts")

	// The right code on the last attempt verifies.
	l := create(t, s, sampleVerification(1, time.Minute), nil)
	got, counted, err = s.Attempt(ctx(), l.ID, rightCode, at(time.Second))
	require.NoError(t, err)
	assert.True(t, counted)
	assert.Equal(t, verify.StatusVerified, got.Status, "the right code on the last attempt verifies")

	// No hashes match nothing.
	n := create(t, s, sampleVerification(3, time.Minute), nil)
	got, counted, err = s.Attempt(ctx(), n.ID, nil, at(time.Second))
	require.NoError(t, err)
	assert.True(t, counted)
	assert.Equal(t, verify.StatusPending, got.Status, "no hashes is a wrong code")

	// Expired: at ExpiresAt exactly, nothing is counted.
	e := create(t, s, sampleVerification(3, time.Minute), nil)
	got, counted, err = s.Attempt(ctx(), e.ID, rightCode, e.ExpiresAt)
	require.NoError(t, err)
	assert.False(t, counted, "no attempt is counted at or after ExpiresAt")
	assert.Equal(t, 0, got.Attempts)
	assert.Empty(t, got.Checks, "nor kept")
	assert.Equal(t, verify.StatusPending, got.Status, "Attempt does not expire it")

	// Ended: nothing is counted.
	f := create(t, s, sampleVerification(3, time.Minute), nil)
	_, ended, err := s.Finish(ctx(), f.ID, verify.StatusCanceled, at(time.Second))
	require.NoError(t, err)
	require.True(t, ended)
	got, counted, err = s.Attempt(ctx(), f.ID, rightCode, at(2*time.Second))
	require.NoError(t, err)
	assert.False(t, counted, "no attempt is counted on an ended verification")
	assert.Equal(t, verify.StatusCanceled, got.Status)
	assert.Equal(t, 0, got.Attempts)

	// Every open status takes attempts.
	for _, st := range []verify.Status{verify.StatusSent, verify.StatusDelivered} {
		o := sampleVerification(3, time.Minute)
		o.Status = st
		create(t, s, o, nil)
		got, counted, err := s.Attempt(ctx(), o.ID, wrongCode, at(time.Second))
		require.NoError(t, err)
		assert.True(t, counted, "an attempt on a %s verification is counted", st)
		assert.Equal(t, st, got.Status, "a wrong code leaves the status")
		got, _, err = s.Attempt(ctx(), o.ID, rightCode, at(time.Second))
		require.NoError(t, err)
		assert.Equal(t, verify.StatusVerified, got.Status, "a %s verification can be verified", st)
	}
}

func testAttemptConcurrent(t *testing.T, s verificationStore) {
	const goroutines, max = 200, 5
	wrong := create(t, s, sampleVerification(max, time.Minute), nil)
	right := create(t, s, sampleVerification(max, time.Minute), nil)
	var counted, verified atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 2*goroutines)
	for range goroutines {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, ok, err := s.Attempt(ctx(), wrong.ID, wrongCode, at(time.Second))
			if err != nil {
				errs <- err
				return
			}
			if ok {
				counted.Add(1)
			}
		}()
		go func() {
			defer wg.Done()
			got, ok, err := s.Attempt(ctx(), right.ID, rightCode, at(time.Second))
			if err != nil {
				errs <- err
				return
			}
			if ok && got.Status == verify.StatusVerified {
				verified.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int32(max), counted.Load(), "exactly MaxAttempts of %d racing wrong attempts are counted", goroutines)
	got, err := s.GetVerification(ctx(), wrong.ID)
	require.NoError(t, err)
	assert.Equal(t, max, got.Attempts)
	assert.Equal(t, verify.StatusMaxAttempts, got.Status)
	assert.Equal(t, int32(1), verified.Load(), "exactly one of %d racing right codes verifies", goroutines)
	got, err = s.GetVerification(ctx(), right.ID)
	require.NoError(t, err)
	assert.Equal(t, 1, got.Attempts, "the attempts after the verifying one are not counted")
	assertChecks(t, got.Checks, "one check of the racing right codes is kept", checkAt(time.Second, true))
	got, err = s.GetVerification(ctx(), wrong.ID)
	require.NoError(t, err)
	assert.Len(t, got.Checks, max, "one check per counted attempt")
}

// checkAt is the check of a code at base+d.
func checkAt(d time.Duration, right bool) verify.CheckAttempt {
	return verify.CheckAttempt{At: at(d), Right: right}
}

// assertChecks asserts that got are the checks want, in order, with their
// times to the microsecond.
func assertChecks(t *testing.T, got []verify.CheckAttempt, what string, want ...verify.CheckAttempt) {
	t.Helper()
	if !assert.Len(t, got, len(want), "%s: Checks", what) {
		return
	}
	for i := range want {
		assert.Equal(t, want[i].Right, got[i].Right, "%s: check %d's Right", what, i)
		sameTime(t, want[i].At, got[i].At, fmt.Sprintf("%s: check %d's At", what, i))
	}
}

// getVerification returns the stored record of id.
func getVerification(t *testing.T, s verificationStore, id string) verify.VerificationRecord {
	t.Helper()
	got, err := s.GetVerification(ctx(), id)
	require.NoError(t, err)
	return got
}

func testCountSend(t *testing.T, s verificationStore) {
	_, _, err := s.CountSend(ctx(), newID(), 5, 0, base)
	requireNotFound(t, err, "CountSend on an unknown ID")

	// No cooldown: counted until Sends reaches max.
	v := create(t, s, sampleVerification(5, time.Minute), nil) // Sends = 1, LastSentAt = base
	for i := 2; i <= 3; i++ {
		now := at(time.Duration(i) * time.Second)
		got, counted, err := s.CountSend(ctx(), v.ID, 3, 0, now)
		require.NoError(t, err)
		assert.True(t, counted, "send %d of 3 is counted", i)
		assert.Equal(t, i, got.Sends, "CountSend returns the updated record")
		sameTime(t, now, got.LastSentAt, "CountSend sets LastSentAt to now")
		assert.NotEmpty(t, got.SealedCode, "an open verification keeps its sealed code")
		stored := getVerification(t, s, v.ID)
		assert.Equal(t, i, stored.Sends, "the count is stored")
		sameTime(t, now, stored.LastSentAt, "stored LastSentAt")
	}
	got, counted, err := s.CountSend(ctx(), v.ID, 3, 0, at(10*time.Second))
	require.NoError(t, err)
	assert.False(t, counted, "no send is counted at max")
	assert.Equal(t, 3, got.Sends, "a refused CountSend returns the current record")
	sameTime(t, at(3*time.Second), got.LastSentAt, "a refused CountSend returns the current record")
	stored := getVerification(t, s, v.ID)
	assert.Equal(t, 3, stored.Sends, "a refused CountSend changes nothing")
	sameTime(t, at(3*time.Second), stored.LastSentAt, "a refused CountSend changes nothing")

	// A larger max allows more.
	got, counted, err = s.CountSend(ctx(), v.ID, 4, 0, at(10*time.Second))
	require.NoError(t, err)
	assert.True(t, counted, "a larger max allows another send")
	assert.Equal(t, 4, got.Sends)

	// A cooldown <= 0 is none, even when now is before LastSentAt (the
	// clock of another engine may lag).
	n := create(t, s, sampleVerification(5, time.Minute), nil) // LastSentAt = base
	for i, c := range []struct {
		cooldown time.Duration
		now      time.Time
	}{{0, at(-5 * time.Second)}, {-time.Second, at(-10 * time.Second)}, {0, at(-10 * time.Second)}} {
		got, counted, err := s.CountSend(ctx(), n.ID, 5, c.cooldown, c.now)
		require.NoError(t, err)
		assert.True(t, counted, "a cooldown of %v is none: a send at %v, before LastSentAt, is counted", c.cooldown, c.now)
		assert.Equal(t, i+2, got.Sends)
		sameTime(t, c.now, got.LastSentAt, "LastSentAt")
	}

	// Expired: at ExpiresAt exactly, nothing is counted.
	e := create(t, s, sampleVerification(5, time.Minute), nil)
	got, counted, err = s.CountSend(ctx(), e.ID, 5, 0, e.ExpiresAt)
	require.NoError(t, err)
	assert.False(t, counted, "no send is counted at or after ExpiresAt")
	assertRecord(t, e, got)
	assertRecord(t, e, getVerification(t, s, e.ID))

	// Ended: nothing is counted.
	f := create(t, s, sampleVerification(5, time.Minute), nil)
	ended, _, err := s.Finish(ctx(), f.ID, verify.StatusVerified, at(time.Second))
	require.NoError(t, err)
	got, counted, err = s.CountSend(ctx(), f.ID, 5, 0, at(2*time.Second))
	require.NoError(t, err)
	assert.False(t, counted, "no send is counted on an ended verification")
	assertRecord(t, ended, got)
	assertRecord(t, ended, getVerification(t, s, f.ID))

	// Every open status takes sends.
	for _, st := range []verify.Status{verify.StatusSent, verify.StatusDelivered} {
		o := sampleVerification(5, time.Minute)
		o.Status = st
		create(t, s, o, nil)
		got, counted, err := s.CountSend(ctx(), o.ID, 5, time.Second, at(time.Second))
		require.NoError(t, err)
		assert.True(t, counted, "a send on a %s verification is counted", st)
		assert.Equal(t, 2, got.Sends)
		assert.Equal(t, st, got.Status, "CountSend leaves the status")
	}
}

// testCountSendCooldown: with cooldown > 0 a send is counted only when
// LastSentAt is zero or at least cooldown before now.
func testCountSendCooldown(t *testing.T, s verificationStore) {
	const cooldown = 30 * time.Second
	v := create(t, s, sampleVerification(5, time.Hour), nil) // Sends = 1, LastSentAt = base
	for _, now := range []time.Time{base, at(time.Second), at(cooldown - time.Microsecond)} {
		got, counted, err := s.CountSend(ctx(), v.ID, 5, cooldown, now)
		require.NoError(t, err)
		assert.False(t, counted, "no send is counted %v after LastSentAt, within the cooldown of %v", now.Sub(base), cooldown)
		assertRecord(t, v, got)
		assertRecord(t, v, getVerification(t, s, v.ID))
	}

	got, counted, err := s.CountSend(ctx(), v.ID, 5, cooldown, at(cooldown))
	require.NoError(t, err)
	assert.True(t, counted, "a send exactly cooldown after LastSentAt is counted")
	assert.Equal(t, 2, got.Sends)
	sameTime(t, at(cooldown), got.LastSentAt, "LastSentAt is the counted send's now")

	// The cooldown counts from the new LastSentAt.
	got, counted, err = s.CountSend(ctx(), v.ID, 5, cooldown, at(2*cooldown-time.Second))
	require.NoError(t, err)
	assert.False(t, counted, "the cooldown counts from the last counted send")
	assert.Equal(t, 2, got.Sends)
	sameTime(t, at(cooldown), got.LastSentAt, "a refused send leaves LastSentAt")
	got, counted, err = s.CountSend(ctx(), v.ID, 5, cooldown, at(3*cooldown))
	require.NoError(t, err)
	assert.True(t, counted)
	assert.Equal(t, 3, got.Sends)
	sameTime(t, at(3*cooldown), got.LastSentAt, "LastSentAt")

	// A shorter cooldown (or none) is judged by itself.
	got, counted, err = s.CountSend(ctx(), v.ID, 5, time.Second, at(3*cooldown+time.Second))
	require.NoError(t, err)
	assert.True(t, counted, "a send one shorter cooldown later is counted")
	assert.Equal(t, 4, got.Sends)

	// Sends at max: refused even after the cooldown.
	got, counted, err = s.CountSend(ctx(), v.ID, 4, cooldown, at(time.Hour-time.Second))
	require.NoError(t, err)
	assert.False(t, counted, "no send is counted at max, however long after the last")
	assert.Equal(t, 4, got.Sends)
	sameTime(t, at(3*cooldown+time.Second), got.LastSentAt, "a refused send leaves LastSentAt")

	// A zero LastSentAt (a record stored without one) has no cooldown to
	// wait for.
	z := sampleVerification(5, time.Hour)
	z.LastSentAt = time.Time{}
	create(t, s, z, nil)
	stored := getVerification(t, s, z.ID)
	assert.True(t, stored.LastSentAt.IsZero(), "a zero LastSentAt is stored as zero")
	got, counted, err = s.CountSend(ctx(), z.ID, 5, time.Hour, base)
	require.NoError(t, err)
	assert.True(t, counted, "with a zero LastSentAt a send is counted, whatever the cooldown")
	assert.Equal(t, 2, got.Sends)
	sameTime(t, base, got.LastSentAt, "LastSentAt")
}

// countRacingSends races n CountSend calls on id and returns how many were
// counted.
func countRacingSends(t *testing.T, s verificationStore, n int, id string, max int, cooldown time.Duration, now time.Time) int {
	t.Helper()
	var counted atomic.Int32
	errs := make(chan error, n)
	released(n, func(int) {
		_, ok, err := s.CountSend(ctx(), id, max, cooldown, now)
		if err != nil {
			errs <- err
			return
		}
		if ok {
			counted.Add(1)
		}
	})
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	return int(counted.Load())
}

func testCountSendConcurrent(t *testing.T, s verificationStore) {
	const goroutines, cooldown = 200, 30 * time.Second

	// After the cooldown, of many racing sends exactly one is counted.
	v := create(t, s, sampleVerification(5, time.Hour), nil) // Sends = 1
	now := at(time.Minute)
	assert.Equal(t, 1, countRacingSends(t, s, goroutines, v.ID, 100, cooldown, now),
		"exactly one of %d racing CountSend calls after the cooldown is counted", goroutines)
	got := getVerification(t, s, v.ID)
	assert.Equal(t, 2, got.Sends)
	sameTime(t, now, got.LastSentAt, "LastSentAt")

	// Without a cooldown, racing sends stop exactly at max.
	const max = 7
	w := create(t, s, sampleVerification(5, time.Hour), nil) // Sends = 1
	assert.Equal(t, max-1, countRacingSends(t, s, goroutines, w.ID, max, 0, at(time.Second)),
		"of %d racing CountSend calls without a cooldown exactly max - Sends are counted", goroutines)
	assert.Equal(t, max, getVerification(t, s, w.ID).Sends)
}

func testFinish(t *testing.T, s verificationStore) {
	_, _, err := s.Finish(ctx(), newID(), verify.StatusCanceled, base)
	requireNotFound(t, err, "Finish on an unknown ID")

	for _, st := range []verify.Status{verify.StatusVerified, verify.StatusExpired, verify.StatusCanceled,
		verify.StatusMaxAttempts, verify.StatusFailed} {
		t.Run(string(st), func(t *testing.T) {
			v := sampleVerification(5, time.Minute)
			create(t, s, v, steps(v))
			other := sampleVerification(5, time.Minute)
			create(t, s, other, steps(other))
			now := at(10 * time.Second)
			got, ended, err := s.Finish(ctx(), v.ID, st, now)
			require.NoError(t, err)
			assert.True(t, ended)
			assert.Equal(t, st, got.Status)
			sameTime(t, now, got.EndedAt, "EndedAt")
			if st == verify.StatusVerified {
				sameTime(t, now, got.VerifiedAt, "VerifiedAt")
			} else {
				assert.True(t, got.VerifiedAt.IsZero(), "VerifiedAt stays zero unless verified")
			}
			assert.Empty(t, got.SealedCode, "Finish erases the sealed code")

			again, ended, err := s.Finish(ctx(), v.ID, verify.StatusCanceled, at(20*time.Second))
			require.NoError(t, err)
			assert.False(t, ended, "Finish on an ended verification does not end it again")
			assert.Equal(t, st, again.Status, "and does not change its status")
			sameTime(t, now, again.EndedAt, "EndedAt after a second Finish")

			stored, err := s.GetVerification(ctx(), v.ID)
			require.NoError(t, err)
			assert.Equal(t, st, stored.Status)
			assert.Empty(t, stored.SealedCode)

			claimed := claimAll(t, s, at(time.Hour))
			assert.NotContains(t, claimed, v.ID+"/0", "Finish deletes the pending steps")
			assert.NotContains(t, claimed, v.ID+"/1", "Finish deletes the pending steps")
			assert.Contains(t, claimed, other.ID+"/0", "Finish leaves other verifications' steps alone")
			assert.Contains(t, claimed, other.ID+"/1", "Finish leaves other verifications' steps alone")
		})
	}
}

// testFinishRefusesOpenStatus: Finish with a status that is not an ended
// one is an error and changes nothing, on an open verification (of each
// open status) and on an ended one.
func testFinishRefusesOpenStatus(t *testing.T, s verificationStore) {
	bad := []verify.Status{verify.StatusPending, verify.StatusSent, verify.StatusDelivered, verify.Status("bogus"), ""}
	for _, open := range []verify.Status{verify.StatusPending, verify.StatusSent, verify.StatusDelivered} {
		v := sampleVerification(5, time.Minute)
		v.Status = open
		create(t, s, v, steps(v))
		for _, st := range bad {
			_, ended, err := s.Finish(ctx(), v.ID, st, at(time.Second))
			require.Error(t, err, "Finish(%q) of a %s verification", st, open)
			assert.NotErrorIs(t, err, verify.ErrNotFound, "Finish(%q): the verification exists", st)
			assert.False(t, ended, "Finish(%q) does not end it", st)
			got := getVerification(t, s, v.ID)
			assertRecord(t, v, got)
			assert.Empty(t, got.Deliveries)
		}
		claimed := claimAll(t, s, at(time.Hour))
		assert.Contains(t, claimed, v.ID+"/0", "a refused Finish keeps the pending steps")
		assert.Contains(t, claimed, v.ID+"/1", "a refused Finish keeps the pending steps")
		_, ended, err := s.Finish(ctx(), v.ID, verify.StatusCanceled, at(2*time.Second))
		require.NoError(t, err)
		assert.True(t, ended, "after refused calls, a valid Finish still ends it")
	}

	// On an ended verification, too.
	e := create(t, s, sampleVerification(5, time.Minute), nil)
	want, ended, err := s.Finish(ctx(), e.ID, verify.StatusFailed, at(time.Second))
	require.NoError(t, err)
	require.True(t, ended)
	for _, st := range bad {
		_, ended, err := s.Finish(ctx(), e.ID, st, at(2*time.Second))
		require.Error(t, err, "Finish(%q) of an ended verification", st)
		assert.False(t, ended)
		assertRecord(t, want, getVerification(t, s, e.ID))
	}
}

func testFinishConcurrent(t *testing.T, s verificationStore) {
	v := create(t, s, sampleVerification(100, time.Minute), nil)
	var ended atomic.Int32
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, ok, err := s.Finish(ctx(), v.ID, verify.StatusVerified, at(time.Second)); err == nil && ok {
				ended.Add(1)
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int32(1), ended.Load(), "of 100 racing Finish calls exactly one ends the verification")
}

func delivery(v verify.VerificationRecord, id string, step int, st verify.DeliveryStatus, when time.Time) verify.DeliveryRecord {
	return verify.DeliveryRecord{
		ID: id, VerificationID: v.ID, Step: step, Channel: "sms", From: "ACME", Status: st,
		ProviderID: "SM" + id, CreatedAt: when, UpdatedAt: when,
	}
}

func testRecordDelivery(t *testing.T, s verificationStore) {
	ghost := sampleVerification(5, time.Minute)
	requireNotFound(t, recordErr(s, delivery(ghost, ghost.ID+"-0", 0, verify.DeliverySent, base)),
		"RecordDelivery for an unknown verification")

	v := create(t, s, sampleVerification(5, time.Minute), nil)
	status := func() verify.Status {
		got, err := s.GetVerification(ctx(), v.ID)
		require.NoError(t, err)
		return got.Status
	}

	failed := delivery(v, v.ID+"-0", 0, verify.DeliveryFailed, at(time.Second))
	// Text a store might mangle on its way through SQL or JSON.
	failed.Error = "provider said \"no\" \\ [1,2] null\n\tnäin — 🙂"
	failed.From = "O'Brien"
	record(t, s, failed)
	assert.Equal(t, verify.StatusPending, status(), "a failed delivery does not move the status")

	sent := delivery(v, v.ID+"-1", 1, verify.DeliverySent, at(2*time.Second))
	record(t, s, sent)
	assert.Equal(t, verify.StatusSent, status(), "a sent delivery moves pending to sent")

	resend := delivery(v, v.ID+"-r2", -1, verify.DeliverySent, at(3*time.Second))
	record(t, s, resend)

	got, err := s.GetVerification(ctx(), v.ID)
	require.NoError(t, err)
	require.Len(t, got.Deliveries, 3)
	assert.Equal(t, []string{failed.ID, sent.ID, resend.ID},
		[]string{got.Deliveries[0].ID, got.Deliveries[1].ID, got.Deliveries[2].ID}, "deliveries oldest first")
	d := got.Deliveries[0]
	sameTime(t, failed.CreatedAt, d.CreatedAt, "Delivery.CreatedAt")
	sameTime(t, failed.UpdatedAt, d.UpdatedAt, "Delivery.UpdatedAt")
	d.CreatedAt, d.UpdatedAt = failed.CreatedAt, failed.UpdatedAt
	assert.Equal(t, failed, d)
	assert.Equal(t, -1, got.Deliveries[2].Step, "a resend's step is -1")

	// Moving forward by ID: the receipt for the sent message.
	delivered := sent
	delivered.Status = verify.DeliveryDelivered
	delivered.UpdatedAt = at(5 * time.Second)
	record(t, s, delivered)
	got, err = s.GetVerification(ctx(), v.ID)
	require.NoError(t, err)
	require.Len(t, got.Deliveries, 3, "a delivery with an existing ID is moved in place")
	assert.Equal(t, verify.DeliveryDelivered, got.Deliveries[1].Status)
	sameTime(t, delivered.UpdatedAt, got.Deliveries[1].UpdatedAt, "moved UpdatedAt")
	assert.Equal(t, verify.StatusDelivered, got.Status, "a delivered delivery moves sent to delivered")

	record(t, s, delivery(v, v.ID+"-2", 2, verify.DeliverySent, at(6*time.Second)))
	assert.Equal(t, verify.StatusDelivered, status(), "the status never moves backwards")

	// Every method that returns a record fills Deliveries, as
	// GetVerification does.
	got, err = s.GetVerification(ctx(), v.ID)
	require.NoError(t, err)
	a, _, err := s.Attempt(ctx(), v.ID, wrongCode, at(7*time.Second))
	require.NoError(t, err)
	sameDeliveries(t, got.Deliveries, a.Deliveries, "Attempt fills Deliveries")
	c, _, err := s.CountSend(ctx(), v.ID, 10, 0, at(7*time.Second))
	require.NoError(t, err)
	sameDeliveries(t, got.Deliveries, c.Deliveries, "CountSend fills Deliveries")
	f, _, err := s.Finish(ctx(), v.ID, verify.StatusVerified, at(8*time.Second))
	require.NoError(t, err)
	sameDeliveries(t, got.Deliveries, f.Deliveries, "Finish fills Deliveries")

	// Once ended, deliveries are still recorded but the status stays.
	record(t, s, delivery(v, v.ID+"-3", 3, verify.DeliveryDelivered, at(9*time.Second)))
	got, err = s.GetVerification(ctx(), v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusVerified, got.Status, "a delivery does not reopen an ended verification")
	assert.Len(t, got.Deliveries, 5)
}

// sameDeliveries asserts that got holds want's deliveries, field by field,
// times to the instant.
func sameDeliveries(t *testing.T, want, got []verify.DeliveryRecord, msg string) {
	t.Helper()
	require.Len(t, got, len(want), msg)
	for i := range want {
		w, g := want[i], got[i]
		sameTime(t, w.CreatedAt, g.CreatedAt, msg+": CreatedAt")
		sameTime(t, w.UpdatedAt, g.UpdatedAt, msg+": UpdatedAt")
		g.CreatedAt, g.UpdatedAt = w.CreatedAt, w.UpdatedAt
		assert.Equal(t, w, g, msg)
	}
}

func testExpireDue(t *testing.T, s verificationStore) {
	var vs []verify.VerificationRecord
	for i := 1; i <= 4; i++ {
		v := sampleVerification(5, time.Duration(i)*time.Minute)
		create(t, s, v, steps(v))
		vs = append(vs, v)
	}
	// vs[0] ends before it expires: never reported.
	_, _, err := s.Finish(ctx(), vs[0].ID, verify.StatusVerified, at(time.Second))
	require.NoError(t, err)

	now := at(3 * time.Minute) // vs[1] expired before now, vs[2] exactly at now
	ids, err := s.ExpireDue(ctx(), now, 1)
	require.NoError(t, err)
	require.Len(t, ids, 1, "ExpireDue respects limit")
	more, err := s.ExpireDue(ctx(), now, 10)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{vs[1].ID, vs[2].ID}, append(ids, more...), "expires at-or-before now, open only")
	none, err := s.ExpireDue(ctx(), now, 10)
	require.NoError(t, err)
	assert.Empty(t, none, "nothing is expired twice")

	for _, v := range vs[1:3] {
		got, err := s.GetVerification(ctx(), v.ID)
		require.NoError(t, err)
		assert.Equal(t, verify.StatusExpired, got.Status)
		sameTime(t, now, got.EndedAt, "EndedAt")
		assert.Empty(t, got.SealedCode, "expiry erases the sealed code")
	}
	got, err := s.GetVerification(ctx(), vs[3].ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusPending, got.Status, "not yet expired")
	got, err = s.GetVerification(ctx(), vs[0].ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusVerified, got.Status)

	claimed := claimAll(t, s, at(time.Hour))
	for _, v := range vs[:3] {
		assert.NotContains(t, claimed, v.ID+"/1", "expired and ended verifications have no pending steps")
	}
	assert.Contains(t, claimed, vs[3].ID+"/1")
}

func testPurge(t *testing.T, s verificationStore) {
	old := create(t, s, sampleVerification(5, time.Minute), nil)
	edge := create(t, s, sampleVerification(5, time.Minute), nil)
	recent := create(t, s, sampleVerification(5, time.Minute), nil)
	open := create(t, s, sampleVerification(5, time.Minute), nil)
	extra := create(t, s, sampleVerification(5, time.Minute), nil)
	for _, x := range []struct {
		v  verify.VerificationRecord
		at time.Time
	}{{old, at(time.Second)}, {extra, at(2 * time.Second)}, {edge, at(time.Hour)}, {recent, at(2 * time.Hour)}} {
		record(t, s, delivery(x.v, x.v.ID+"-0", 0, verify.DeliverySent, base))
		_, ended, err := s.Finish(ctx(), x.v.ID, verify.StatusVerified, x.at)
		require.NoError(t, err)
		require.True(t, ended)
	}
	before := at(time.Hour)
	n, err := s.Purge(ctx(), before, 1)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "Purge respects limit")
	n2, err := s.Purge(ctx(), before, 100)
	require.NoError(t, err)
	assert.Equal(t, 1, n2, "ended strictly before `before` only")
	n3, err := s.Purge(ctx(), before, 100)
	require.NoError(t, err)
	assert.Equal(t, 0, n3)

	for _, v := range []verify.VerificationRecord{old, extra} {
		_, err := s.GetVerification(ctx(), v.ID)
		requireNotFound(t, err, "GetVerification after Purge")
		requireNotFound(t, recordErr(s, delivery(v, v.ID+"-9", 0, verify.DeliverySent, base)),
			"RecordDelivery after Purge")
	}
	for _, v := range []verify.VerificationRecord{edge, recent, open} {
		_, err := s.GetVerification(ctx(), v.ID)
		require.NoError(t, err, "kept by Purge")
	}
	// Open verifications are never purged, however old.
	n4, err := s.Purge(ctx(), at(1000*time.Hour), 100)
	require.NoError(t, err)
	assert.Equal(t, 2, n4)
	_, err = s.GetVerification(ctx(), open.ID)
	require.NoError(t, err, "open verifications are never purged")
}

func testCanceledContext(t *testing.T, s verificationStore) {
	v := create(t, s, sampleVerification(5, time.Minute), nil)
	c, cancel := context.WithCancel(ctx())
	cancel()
	_, err := s.GetVerification(c, v.ID)
	require.Error(t, err, "a cancelled context is an error")
	assert.NotErrorIs(t, err, verify.ErrNotFound)
	_, _, err = s.Attempt(c, v.ID, wrongCode, at(time.Second))
	require.Error(t, err, "a cancelled context is an error")
	got, err := s.GetVerification(ctx(), v.ID)
	require.NoError(t, err)
	assert.Equal(t, 0, got.Attempts, "an attempt under a cancelled context is not counted")
}

// testRecordDeliveryWhileEnding races deliveries of a verification's steps
// (sent ones, which move its status, and failed ones, which do not) against
// the calls that end it and delete its steps (Finish, Attempt, ExpireDue):
// every call succeeds, with no deadlock between them, and each verification
// ends once.
func testRecordDeliveryWhileEnding(t *testing.T, s verificationStore) {
	const verifications = 40
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		ends  = map[string]int{}
		errs  = make(chan error, 6*verifications)
		ended = func(id string) {
			mu.Lock()
			ends[id]++
			mu.Unlock()
		}
	)
	for i := range verifications {
		v := sampleVerification(5, time.Hour)
		create(t, s, v, steps(v))
		end := func() {
			switch i % 3 {
			case 0:
				_, done, err := s.Finish(ctx(), v.ID, verify.StatusCanceled, at(2*time.Hour))
				if done {
					ended(v.ID)
				}
				errs <- err
			case 1:
				got, counted, err := s.Attempt(ctx(), v.ID, rightCode, at(time.Second))
				if counted && got.Status == verify.StatusVerified {
					ended(v.ID)
				}
				errs <- err
			default:
				ids, err := s.ExpireDue(ctx(), at(2*time.Hour), 5)
				for _, id := range ids {
					ended(id)
				}
				errs <- err
			}
		}
		for _, fn := range []func(){
			func() { errs <- recordErr(s, delivery(v, v.ID+"-0", 0, verify.DeliveryFailed, base)) },
			func() { errs <- recordErr(s, delivery(v, v.ID+"-1", 1, verify.DeliverySent, base)) },
			func() { errs <- recordErr(s, delivery(v, v.ID+"-r2", -1, verify.DeliveryFailed, base)) },
			end, end,
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fn()
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	// What ExpireDue left (it takes 5 at a time) ends now.
	rest, err := s.ExpireDue(ctx(), at(2*time.Hour), 10*verifications)
	require.NoError(t, err)
	for _, id := range rest {
		ended(id)
	}
	assert.Len(t, ends, verifications, "every verification ended")
	for id, n := range ends {
		assert.Equal(t, 1, n, "verification %s ended once", id)
	}
}

func testRecordDeliveryCompletesStep(t *testing.T, s verificationStore) {
	v := sampleVerification(5, time.Hour)
	create(t, s, v, steps(v))
	record(t, s, delivery(v, v.ID+"-r2", -1, verify.DeliverySent, base))
	claimed := claimAll(t, s, at(time.Minute))
	assert.Contains(t, claimed, v.ID+"/0", "a resend's delivery completes no step")
	assert.Contains(t, claimed, v.ID+"/1")

	w := sampleVerification(5, time.Hour)
	create(t, s, w, steps(w))
	record(t, s, delivery(w, w.ID+"-0", 0, verify.DeliveryFailed, base))
	claimed = claimAll(t, s, at(time.Minute))
	assert.NotContains(t, claimed, w.ID+"/0", "a step with a recorded delivery, failed or not, is done")
	assert.Contains(t, claimed, w.ID+"/1", "other steps stay pending")
}

// deliveryStatuses are the statuses a delivery can be reported in.
var deliveryStatuses = []verify.DeliveryStatus{verify.DeliverySent, verify.DeliveryDelivered, verify.DeliveryFailed}

// assertDelivery compares two deliveries, times to the microsecond.
func assertDelivery(t *testing.T, want, got verify.DeliveryRecord, msg string, args ...any) {
	t.Helper()
	sameTime(t, want.CreatedAt, got.CreatedAt, fmt.Sprintf(msg+": CreatedAt", args...))
	sameTime(t, want.UpdatedAt, got.UpdatedAt, fmt.Sprintf(msg+": UpdatedAt", args...))
	want.CreatedAt, want.UpdatedAt, got.CreatedAt, got.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	assert.Equal(t, want, got, append([]any{msg}, args...)...)
}

// onlyDelivery returns the one delivery stored for verification id.
func onlyDelivery(t *testing.T, s verificationStore, id string) verify.DeliveryRecord {
	t.Helper()
	got := getVerification(t, s, id)
	require.Len(t, got.Deliveries, 1, "one delivery, moved in place")
	return got.Deliveries[0]
}

// testRecordDeliveryMovesForward: for every (current, reported) pair of
// delivery statuses, RecordDelivery with an existing ID reports changed
// exactly when current.MovesTo(reported). When it does not, the stored
// delivery is exactly as before (Status, Error, ProviderID, UpdatedAt and
// the rest). When it does, Status, Error (even an empty one) and UpdatedAt
// come from the report, ProviderID too unless the report's is empty (then
// the old one stays), and the other fields (Step, Channel, From,
// CreatedAt) stay. A report for an unknown verification is ErrNotFound,
// whatever its status.
func testRecordDeliveryMovesForward(t *testing.T, s verificationStore) {
	ghost := sampleVerification(5, time.Minute)
	for _, st := range deliveryStatuses {
		requireNotFound(t, recordErr(s, delivery(ghost, ghost.ID+"-0", 0, st, base)),
			fmt.Sprintf("RecordDelivery(%s) for an unknown verification", st))
	}

	for _, cur := range deliveryStatuses {
		for _, rep := range deliveryStatuses {
			for _, providerID := range []string{"SM-report", ""} {
				t.Run(fmt.Sprintf("%s_to_%s/provider=%q", cur, rep, providerID), func(t *testing.T) {
					v := create(t, s, sampleVerification(5, time.Hour), nil)
					old := delivery(v, v.ID+"-0", 0, cur, at(time.Second))
					old.Error = "first report"
					require.True(t, record(t, s, old), "a first insert reports changed")

					report := old
					report.Status = rep
					report.ProviderID = providerID
					report.Error = ""
					if providerID != "" {
						report.Error = "second report"
					}
					report.UpdatedAt = at(5 * time.Second)
					report.CreatedAt = at(4 * time.Second)
					report.Channel, report.From = "voice", "OTHER"

					moves := cur.MovesTo(rep)
					assert.Equal(t, moves, record(t, s, report), "RecordDelivery(%s) of a %s delivery reports changed = MovesTo", rep, cur)
					want := old
					if moves {
						want.Status, want.Error, want.UpdatedAt = rep, report.Error, report.UpdatedAt
						if providerID != "" {
							want.ProviderID = providerID
						}
					}
					assertDelivery(t, want, onlyDelivery(t, s, v.ID), "%s reported for a %s delivery (moves: %v)", rep, cur, moves)

					// The same report again never moves it.
					assert.False(t, record(t, s, report), "the same report again changes nothing")
					assertDelivery(t, want, onlyDelivery(t, s, v.ID), "after the same report again")
				})
			}
		}
	}
}

// testRecordDeliveryVerificationStatus: a delivery that is inserted or
// moved moves an open verification's status forward to sent or delivered,
// never backwards, and one that does not move leaves it: a first insert
// reports changed = true, whatever its status; a late sent after failed
// leaves a pending verification pending; delivered after failed moves
// pending to delivered; failed, inserted or moved to, never moves the
// verification; an ended verification never changes status, though its
// deliveries still move.
func testRecordDeliveryVerificationStatus(t *testing.T, s verificationStore) {
	status := func(id string) verify.Status { return getVerification(t, s, id).Status }

	// A late sent after failed, then delivered after failed.
	v := create(t, s, sampleVerification(5, time.Hour), nil)
	failed := delivery(v, v.ID+"-0", 0, verify.DeliveryFailed, at(time.Second))
	failed.Error = "no route"
	assert.True(t, record(t, s, failed), "a first insert of a failed delivery reports changed")
	assert.Equal(t, verify.StatusPending, status(v.ID), "a failed delivery does not move the status")
	late := failed
	late.Status, late.Error, late.UpdatedAt = verify.DeliverySent, "", at(2*time.Second)
	assert.False(t, record(t, s, late), "a late sent after failed changes nothing")
	assert.Equal(t, verify.StatusPending, status(v.ID), "a late sent after failed leaves a pending verification pending")
	assert.Equal(t, verify.DeliveryFailed, onlyDelivery(t, s, v.ID).Status)
	arrived := failed
	arrived.Status, arrived.Error, arrived.UpdatedAt = verify.DeliveryDelivered, "", at(3*time.Second)
	assert.True(t, record(t, s, arrived), "delivered after failed moves the delivery")
	assert.Equal(t, verify.StatusDelivered, status(v.ID), "delivered after failed moves pending to delivered")

	// Failed never moves the verification, inserted or moved to.
	w := create(t, s, sampleVerification(5, time.Hour), nil)
	assert.True(t, record(t, s, delivery(w, w.ID+"-0", 0, verify.DeliveryFailed, at(time.Second))))
	assert.Equal(t, verify.StatusPending, status(w.ID), "an inserted failed delivery leaves pending")
	sent := delivery(w, w.ID+"-1", 1, verify.DeliverySent, at(2*time.Second))
	assert.True(t, record(t, s, sent), "a first insert of a sent delivery reports changed")
	assert.Equal(t, verify.StatusSent, status(w.ID), "a sent delivery moves pending to sent")
	sentFailed := sent
	sentFailed.Status, sentFailed.Error, sentFailed.UpdatedAt = verify.DeliveryFailed, "bounced", at(3*time.Second)
	assert.True(t, record(t, s, sentFailed), "sent moves to failed")
	assert.Equal(t, verify.StatusSent, status(w.ID), "a delivery moving to failed leaves sent")
	sentAgain := sent
	sentAgain.UpdatedAt = at(4 * time.Second)
	assert.False(t, record(t, s, sentAgain), "a late sent after failed changes nothing")
	assert.Equal(t, verify.StatusSent, status(w.ID))
	delivered := sent
	delivered.Status, delivered.UpdatedAt = verify.DeliveryDelivered, at(5*time.Second)
	assert.True(t, record(t, s, delivered), "failed moves to delivered")
	assert.Equal(t, verify.StatusDelivered, status(w.ID), "delivered after failed moves sent to delivered")
	assert.True(t, record(t, s, delivery(w, w.ID+"-2", 2, verify.DeliveryFailed, at(6*time.Second))))
	assert.Equal(t, verify.StatusDelivered, status(w.ID), "an inserted failed delivery leaves delivered")
	assert.True(t, record(t, s, delivery(w, w.ID+"-r1", -1, verify.DeliverySent, at(7*time.Second))))
	assert.Equal(t, verify.StatusDelivered, status(w.ID), "an inserted sent delivery never moves delivered back")

	// An inserted delivered delivery moves pending straight to delivered.
	x := create(t, s, sampleVerification(5, time.Hour), nil)
	assert.True(t, record(t, s, delivery(x, x.ID+"-0", 0, verify.DeliveryDelivered, at(time.Second))),
		"a first insert of a delivered delivery reports changed")
	assert.Equal(t, verify.StatusDelivered, status(x.ID), "a delivered delivery moves pending to delivered")

	// An ended verification never changes status; its deliveries still move.
	for _, end := range []verify.Status{verify.StatusCanceled, verify.StatusExpired} {
		e := create(t, s, sampleVerification(5, time.Hour), nil)
		first := delivery(e, e.ID+"-0", 0, verify.DeliverySent, at(time.Second))
		other := delivery(e, e.ID+"-1", 1, verify.DeliveryFailed, at(time.Second))
		if end == verify.StatusExpired { // ended while pending
			first.Status = verify.DeliveryFailed
		}
		record(t, s, first)
		record(t, s, other)
		_, ended, err := s.Finish(ctx(), e.ID, end, at(2*time.Second))
		require.NoError(t, err)
		require.True(t, ended)
		first.Status, first.UpdatedAt = verify.DeliveryDelivered, at(3*time.Second)
		assert.True(t, record(t, s, first), "a delivery of an ended verification still moves")
		assert.Equal(t, end, status(e.ID), "delivered does not reopen an ended verification")
		assert.True(t, record(t, s, delivery(e, e.ID+"-2", 2, verify.DeliverySent, at(4*time.Second))),
			"a first insert reports changed, also on an ended verification")
		assert.True(t, record(t, s, delivery(e, e.ID+"-3", 3, verify.DeliveryDelivered, at(4*time.Second))))
		other.Status, other.UpdatedAt = verify.DeliveryDelivered, at(5*time.Second)
		assert.True(t, record(t, s, other))
		got := getVerification(t, s, e.ID)
		assert.Equal(t, end, got.Status, "an ended verification never changes status")
		assert.Len(t, got.Deliveries, 4)
	}
}

// pendingOf returns the steps of verification id that are still pending,
// without holding them (a ClaimDue whose lease ends at now).
func pendingOf(t *testing.T, s verificationStore, id string) []int {
	t.Helper()
	now := at(1000 * time.Hour)
	got, err := s.ClaimDue(ctx(), now, now, 1000)
	require.NoError(t, err)
	var out []int
	for _, p := range got {
		if p.VerificationID == id {
			out = append(out, p.Step)
		}
	}
	slices.Sort(out)
	return out
}

// testRecordDeliveryCompletesStepEitherWay: when d.Step >= 0, RecordDelivery
// deletes the pending step (VerificationID, d.Step) whether the delivery is
// inserted, moved, or not moved at all; a resend's delivery (Step -1) never
// touches a step, moved or not.
func testRecordDeliveryCompletesStepEitherWay(t *testing.T, s verificationStore) {
	v := sampleVerification(5, time.Hour)
	v.Steps = make([]verify.Step, 4)
	ps := make([]verify.PendingStep, 4)
	for i := range ps {
		v.Steps[i] = verify.Step{Channel: "sms"}
		ps[i] = verify.PendingStep{VerificationID: v.ID, Step: i, DueAt: base}
	}
	create(t, s, v, ps)
	other := sampleVerification(5, time.Hour)
	create(t, s, other, steps(other))
	require.Equal(t, []int{0, 1, 2, 3}, pendingOf(t, s, v.ID))

	// A resend touches no step: inserted, moved, or not moved.
	resend := delivery(v, v.ID+"-r1", -1, verify.DeliverySent, at(time.Second))
	assert.True(t, record(t, s, resend))
	resend.Status, resend.UpdatedAt = verify.DeliveryFailed, at(2*time.Second)
	assert.True(t, record(t, s, resend))
	resend.Status, resend.UpdatedAt = verify.DeliverySent, at(3*time.Second)
	assert.False(t, record(t, s, resend))
	assert.Equal(t, []int{0, 1, 2, 3}, pendingOf(t, s, v.ID), "a resend's delivery (Step -1) completes no step")

	d := delivery(v, v.ID+"-0", 0, verify.DeliverySent, at(time.Second))
	assert.True(t, record(t, s, d))
	assert.Equal(t, []int{1, 2, 3}, pendingOf(t, s, v.ID), "an inserted delivery completes its step")

	// The report names the step it completes; the stored delivery's own
	// Step stays as it was.
	d.Step, d.Status, d.UpdatedAt = 1, verify.DeliveryDelivered, at(2*time.Second)
	assert.True(t, record(t, s, d))
	assert.Equal(t, []int{2, 3}, pendingOf(t, s, v.ID), "a delivery that moves completes the step d.Step")
	d.Step, d.Status, d.UpdatedAt = 2, verify.DeliverySent, at(3*time.Second)
	assert.False(t, record(t, s, d), "sent after delivered does not move")
	assert.Equal(t, []int{3}, pendingOf(t, s, v.ID), "a delivery that does not move still completes the step d.Step")
	d.Step, d.Status, d.UpdatedAt = 3, verify.DeliveryDelivered, at(4*time.Second)
	assert.False(t, record(t, s, d), "delivered after delivered does not move")
	assert.Empty(t, pendingOf(t, s, v.ID), "the same status again still completes the step d.Step")
	assert.Equal(t, 0, onlyDeliveryWithID(t, s, v.ID, d.ID).Step, "a move keeps the stored delivery's Step")

	assert.Equal(t, []int{0, 1}, pendingOf(t, s, other.ID), "another verification's steps stay pending")
}

// onlyDeliveryWithID returns verification id's delivery with the given ID.
func onlyDeliveryWithID(t *testing.T, s verificationStore, id, deliveryID string) verify.DeliveryRecord {
	t.Helper()
	for _, d := range getVerification(t, s, id).Deliveries {
		if d.ID == deliveryID {
			return d
		}
	}
	t.Fatalf("verification %s has no delivery %s", id, deliveryID)
	return verify.DeliveryRecord{}
}

// deliveryRank orders delivery statuses along the only forward path:
// sent, failed, delivered.
var deliveryRank = map[verify.DeliveryStatus]int{verify.DeliverySent: 0, verify.DeliveryFailed: 1, verify.DeliveryDelivered: 2}

// testRecordDeliveryRace: for one delivery recorded as sent, 32 reports
// released at once, in a random mix of sent, delivered and failed (at
// least one delivered and one failed), are decided one at a time: at most
// two report changed, those replayed in order form a forward path from
// sent (failed, then delivered), the stored delivery is the last of them
// (delivered, with that report's Error, ProviderID and UpdatedAt), and the
// verification is delivered. Without a delivered report, exactly one
// failed report changes it, and the verification stays sent. A few rounds
// of each.
func testRecordDeliveryRace(t *testing.T, s verificationStore) {
	const goroutines, rounds = 32, 3
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	for round := range rounds {
		for _, withDelivered := range []bool{true, false} {
			v := sampleVerification(5, time.Hour)
			create(t, s, v, steps(v))
			first := delivery(v, v.ID+"-0", 0, verify.DeliverySent, base)
			require.True(t, record(t, s, first))

			mix := deliveryStatuses
			if !withDelivered {
				mix = []verify.DeliveryStatus{verify.DeliverySent, verify.DeliveryFailed}
			}
			reports := make([]verify.DeliveryRecord, goroutines)
			for i := range reports {
				r := first
				r.Status = mix[rng.IntN(len(mix))]
				switch {
				case i == 0:
					r.Status = verify.DeliveryFailed
				case i == 1 && withDelivered:
					r.Status = verify.DeliveryDelivered
				case i == 1:
					r.Status = verify.DeliverySent
				}
				r.ProviderID = fmt.Sprintf("SM-%02d", i)
				r.Error = fmt.Sprintf("report %02d", i)
				r.UpdatedAt = at(time.Duration(i+1) * time.Second)
				reports[i] = r
			}
			rng.Shuffle(len(reports), func(i, j int) { reports[i], reports[j] = reports[j], reports[i] })

			changed := make([]bool, goroutines)
			errs := make(chan error, goroutines)
			released(goroutines, func(i int) {
				c, err := s.RecordDelivery(ctx(), reports[i])
				if err != nil {
					errs <- err
					return
				}
				changed[i] = c
			})
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}

			var moves []verify.DeliveryRecord
			for i, c := range changed {
				if c {
					moves = append(moves, reports[i])
				}
			}
			what := fmt.Sprintf("round %d, with delivered %v, seed %d", round, withDelivered, seed)
			got := getVerification(t, s, v.ID)
			require.Len(t, got.Deliveries, 1, what)
			stored := got.Deliveries[0]
			if withDelivered {
				assert.LessOrEqual(t, len(moves), 2, "%s: at most two of %d racing reports change the delivery", what, goroutines)
				assert.Equal(t, verify.DeliveryDelivered, stored.Status, what)
				assert.Equal(t, verify.StatusDelivered, got.Status, what)
			} else {
				assert.Len(t, moves, 1, "%s: exactly one of %d racing reports changes the delivery", what, goroutines)
				assert.Equal(t, verify.DeliveryFailed, stored.Status, what)
				assert.Equal(t, verify.StatusSent, got.Status, "%s: failed does not move the verification", what)
			}

			// Replayed in order (the only order a forward path allows), the
			// changing reports move the delivery step by step from sent to
			// what is stored, and the last of them is what is stored.
			slices.SortStableFunc(moves, func(a, b verify.DeliveryRecord) int {
				return deliveryRank[a.Status] - deliveryRank[b.Status]
			})
			path := []verify.DeliveryStatus{first.Status}
			for _, m := range moves {
				path = append(path, m.Status)
			}
			want := first
			for _, m := range moves {
				if !assert.True(t, want.Status.MovesTo(m.Status), "%s: the changing reports form no forward path: %v", what, path) {
					break
				}
				want.Status, want.Error, want.ProviderID, want.UpdatedAt = m.Status, m.Error, m.ProviderID, m.UpdatedAt
			}
			assertDelivery(t, want, stored, "%s: the stored delivery is the one the last changing report left", what)
			assert.Equal(t, []int{1}, pendingOf(t, s, v.ID), "%s: the reports completed step 0 only", what)
		}
	}
}
