package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// withSteps creates a verification with n pending steps, step i due at
// base + i seconds.
func withSteps(t *testing.T, s verificationStore, n int) verify.VerificationRecord {
	t.Helper()
	v := sampleVerification(5, time.Hour)
	v.Steps = make([]verify.Step, n)
	ps := make([]verify.PendingStep, n)
	for i := range n {
		v.Steps[i] = verify.Step{Channel: "sms", After: time.Second}
		ps[i] = verify.PendingStep{VerificationID: v.ID, Step: i, DueAt: at(time.Duration(i) * time.Second)}
	}
	return create(t, s, v, ps)
}

func testClaimDue(t *testing.T, s verificationStore) {
	none, err := s.ClaimDue(ctx(), base, at(time.Minute), 10)
	require.NoError(t, err)
	assert.Empty(t, none, "nothing to claim in an empty store")

	v := withSteps(t, s, 5) // steps due at +0s..+4s
	now := at(2 * time.Second)
	lease := at(time.Minute)

	got, err := s.ClaimDue(ctx(), now, lease, 2)
	require.NoError(t, err)
	require.Len(t, got, 2, "ClaimDue respects limit")
	assert.Equal(t, []int{0, 1}, []int{got[0].Step, got[1].Step}, "earliest first")
	for _, p := range got {
		assert.Equal(t, v.ID, p.VerificationID)
		sameTime(t, lease, p.LeaseUntil, "LeaseUntil of a claimed step")
		sameTime(t, at(time.Duration(p.Step)*time.Second), p.DueAt, "DueAt of a claimed step")
	}

	got, err = s.ClaimDue(ctx(), now, lease, 10)
	require.NoError(t, err)
	require.Len(t, got, 1, "steps not yet due and steps under lease are not claimed")
	assert.Equal(t, 2, got[0].Step, "a step due exactly at now is claimable")

	got, err = s.ClaimDue(ctx(), at(10*time.Second), at(2*time.Minute), 10)
	require.NoError(t, err)
	require.Len(t, got, 2, "leased steps stay leased until LeaseUntil")
	assert.ElementsMatch(t, []int{3, 4}, []int{got[0].Step, got[1].Step})

	// Once the first lease runs out, its steps are claimable again.
	got, err = s.ClaimDue(ctx(), lease, at(3*time.Minute), 10)
	require.NoError(t, err)
	assert.ElementsMatch(t, []int{0, 1, 2}, stepsOf(got), "a step whose lease ran out (LeaseUntil <= now) is claimed again")
}

// testClaimDueOncePerCall: ClaimDue hands out each step at most once per
// call, also when leaseUntil is not after now, so that the steps it claims
// stay claimable (a store that claims one step at a time, re-reading what is
// claimable, would hand out the same step again).
func testClaimDueOncePerCall(t *testing.T, s verificationStore) {
	v := withSteps(t, s, 3) // steps due at +0s..+2s
	now := at(10 * time.Second)
	got, err := s.ClaimDue(ctx(), now, now, 10)
	require.NoError(t, err)
	assert.Equal(t, []int{0, 1, 2}, stepsOf(got), "each due step once, earliest first, with leaseUntil = now")
	for _, p := range got {
		assert.Equal(t, v.ID, p.VerificationID)
	}

	// Leased until now or earlier, the steps are still free: every call
	// hands them out again, once each.
	for _, lease := range []time.Time{now, at(5 * time.Second), {}} {
		got, err := s.ClaimDue(ctx(), now, lease, 10)
		require.NoError(t, err)
		assert.ElementsMatch(t, []int{0, 1, 2}, stepsOf(got), "each due step once, with leaseUntil %v", lease)
	}
	got, err = s.ClaimDue(ctx(), now, now, 2)
	require.NoError(t, err)
	require.Len(t, got, 2, "ClaimDue respects limit")
	assert.NotEqual(t, got[0].Step, got[1].Step, "each step at most once per call")

	// A lease after now holds.
	got, err = s.ClaimDue(ctx(), now, at(time.Minute), 10)
	require.NoError(t, err)
	assert.ElementsMatch(t, []int{0, 1, 2}, stepsOf(got))
	got, err = s.ClaimDue(ctx(), now, at(time.Minute), 10)
	require.NoError(t, err)
	assert.Empty(t, got, "steps leased after now are not claimed again before the lease runs out")
}

func stepsOf(ps []verify.PendingStep) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = p.Step
	}
	return out
}

func testClaimDueConcurrent(t *testing.T, s verificationStore) {
	const verifications, perVerification, workers = 40, 5, 8
	for range verifications {
		withSteps(t, s, perVerification)
	}
	var mu sync.Mutex
	seen := make(map[string]int)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				got, err := s.ClaimDue(ctx(), at(time.Hour), at(2*time.Hour), 7)
				if err != nil {
					errs <- err
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, p := range got {
					seen[fmt.Sprintf("%s/%d", p.VerificationID, p.Step)]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Len(t, seen, verifications*perVerification, "every due step is claimed")
	for k, n := range seen {
		if n != 1 {
			t.Errorf("step %s was handed to %d callers under one lease", k, n)
		}
	}
}

func testReschedule(t *testing.T, s verificationStore) {
	v := withSteps(t, s, 4)
	// Lease step 0 (due at +0s).
	got, err := s.ClaimDue(ctx(), base, at(time.Minute), 1)
	require.NoError(t, err)
	require.Len(t, got, 1)

	now := at(time.Second)
	updated, err := s.Reschedule(ctx(), now, []verify.PendingStep{
		{VerificationID: v.ID, Step: 0, DueAt: now, LeaseUntil: at(2 * time.Minute)},    // leased: left alone
		{VerificationID: v.ID, Step: 2, DueAt: now, LeaseUntil: at(2 * time.Minute)},    // claimed by this call
		{VerificationID: v.ID, Step: 3, DueAt: at(10 * time.Minute)},                    // moved later, unleased
		{VerificationID: v.ID, Step: 9, DueAt: now},                                     // does not exist
		{VerificationID: newID(), Step: 0, DueAt: now, LeaseUntil: at(2 * time.Minute)}, // does not exist
	})
	require.NoError(t, err)
	assert.ElementsMatch(t, []int{2, 3}, stepsOf(updated), "only existing, unleased steps are updated")
	for _, p := range updated {
		assert.Equal(t, v.ID, p.VerificationID)
		if p.Step == 2 {
			sameTime(t, now, p.DueAt, "rescheduled DueAt")
			sameTime(t, at(2*time.Minute), p.LeaseUntil, "rescheduled LeaseUntil")
		}
	}

	// Step 1 (due +1s) is claimable; 0 and 2 are leased; 3 is not due.
	claimed := claimAll(t, s, at(30*time.Second))
	assert.Equal(t, []string{v.ID + "/1"}, keys(claimed))
	require.NoError(t, s.CompleteStep(ctx(), v.ID, 1))

	// After the leases, 0 and 2 come back; 3 only after its new DueAt.
	claimed = claimAll(t, s, at(9*time.Minute))
	assert.ElementsMatch(t, []string{v.ID + "/0", v.ID + "/2"}, keys(claimed))
	claimed = claimAll(t, s, at(20*time.Minute))
	assert.ElementsMatch(t, []string{v.ID + "/0", v.ID + "/2", v.ID + "/3"}, keys(claimed))
}

func keys(m map[string]verify.PendingStep) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func testCompleteStepAndNextDue(t *testing.T, s verificationStore) {
	_, ok, err := s.NextDue(ctx())
	require.NoError(t, err)
	assert.False(t, ok, "NextDue with no pending steps")

	v := withSteps(t, s, 3) // due +0s, +1s, +2s
	next, ok, err := s.NextDue(ctx())
	require.NoError(t, err)
	require.True(t, ok)
	sameTime(t, base, next, "NextDue is the earliest DueAt")

	require.NoError(t, s.CompleteStep(ctx(), v.ID, 0))
	require.NoError(t, s.CompleteStep(ctx(), v.ID, 0), "completing a step twice is not an error")
	require.NoError(t, s.CompleteStep(ctx(), newID(), 0), "completing an unknown step is not an error")
	next, _, err = s.NextDue(ctx())
	require.NoError(t, err)
	sameTime(t, at(time.Second), next, "NextDue after CompleteStep")

	// A leased step counts from its LeaseUntil.
	got, err := s.ClaimDue(ctx(), at(time.Second), at(time.Minute), 1)
	require.NoError(t, err)
	require.Len(t, got, 1)
	next, _, err = s.NextDue(ctx())
	require.NoError(t, err)
	sameTime(t, at(2*time.Second), next, "NextDue skips to the next unleased step")
	require.NoError(t, s.CompleteStep(ctx(), v.ID, 2))
	next, _, err = s.NextDue(ctx())
	require.NoError(t, err)
	sameTime(t, at(time.Minute), next, "NextDue of a leased step is its LeaseUntil")

	require.NoError(t, s.CompleteStep(ctx(), v.ID, 1))
	_, ok, err = s.NextDue(ctx())
	require.NoError(t, err)
	assert.False(t, ok, "no pending steps left")
	claimed := claimAll(t, s, at(time.Hour))
	assert.Empty(t, claimed, "completed steps are never claimed")
}
