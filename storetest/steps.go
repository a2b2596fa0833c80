package storetest

import (
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

// triesOf returns the Tries of ps keyed by step.
func triesOf(ps []verify.PendingStep) map[int]int {
	out := make(map[int]int, len(ps))
	for _, p := range ps {
		out[p.Step] = p.Tries
	}
	return out
}

// oneVerification creates a verification with one flow step per pending
// step in ps (whose VerificationID it sets) and returns it.
func oneVerification(t *testing.T, s verificationStore, ps ...verify.PendingStep) verify.VerificationRecord {
	t.Helper()
	v := sampleVerification(5, 10*time.Hour)
	v.Steps = make([]verify.Step, len(ps))
	for i := range ps {
		v.Steps[i] = verify.Step{Channel: "sms", After: time.Second}
		ps[i].VerificationID = v.ID
	}
	return create(t, s, v, ps)
}

// testClaimDueCountsTries: CreateVerification stores each PendingStep's
// Tries as given (1 for the step leased to its channel at creation, 0 for a
// later one, or any other count), and ClaimDue adds one to the Tries of
// each step it claims and returns the updated count: claim, let the lease
// run out, claim again counts 2, 3, ... for every claimed step, and nothing
// for the steps it did not claim. A claim whose leaseUntil is not after
// now is a claim too, and counts.
func testClaimDueCountsTries(t *testing.T, s verificationStore) {
	v := oneVerification(t, s,
		verify.PendingStep{Step: 0, DueAt: base, LeaseUntil: at(time.Minute), Tries: 1}, // handed to its channel at creation
		verify.PendingStep{Step: 1, DueAt: at(30 * time.Second)},                        // a later step
		verify.PendingStep{Step: 2, DueAt: at(time.Hour), Tries: 7},                     // any count is kept as given
	)

	// A Reschedule that does not claim reads the stored counts as they are.
	got, err := s.Reschedule(ctx(), at(30*time.Second), []verify.PendingStep{
		{VerificationID: v.ID, Step: 1, DueAt: at(30 * time.Second)},
		{VerificationID: v.ID, Step: 2, DueAt: at(time.Hour)},
	})
	require.NoError(t, err)
	assert.Equal(t, map[int]int{1: 0, 2: 7}, triesOf(got), "CreateVerification stores Tries as given")

	got, err = s.ClaimDue(ctx(), at(30*time.Second), at(90*time.Second), 10)
	require.NoError(t, err)
	assert.Equal(t, map[int]int{1: 1}, triesOf(got), "the first claim of a step created with Tries 0 counts 1 (step 0 is leased)")
	got, err = s.ClaimDue(ctx(), at(time.Minute), at(2*time.Minute), 10)
	require.NoError(t, err)
	assert.Equal(t, map[int]int{0: 2}, triesOf(got), "a step created with Tries 1 is claimed, once its lease runs out, with Tries 2")

	// Claim, let the lease run out, claim again: one more try per claim.
	for round := 1; round <= 3; round++ {
		now := at(time.Duration(round) * 10 * time.Minute)
		got, err := s.ClaimDue(ctx(), now, now.Add(5*time.Minute), 10)
		require.NoError(t, err)
		assert.Equal(t, map[int]int{0: 2 + round, 1: 1 + round}, triesOf(got), "round %d: each claimed step counts one more try", round)
		got, err = s.ClaimDue(ctx(), now, now.Add(5*time.Minute), 10)
		require.NoError(t, err)
		assert.Empty(t, got, "round %d: a leased step is not claimed, and not counted", round)
	}

	// Step 2 was never claimed: its count is still the one it was created with.
	got, err = s.ClaimDue(ctx(), at(time.Hour), at(61*time.Minute), 10)
	require.NoError(t, err)
	assert.Equal(t, map[int]int{0: 6, 1: 5, 2: 8}, triesOf(got), "only claims count: step 2 goes from 7 to 8")

	// A claim whose leaseUntil is not after now still counts.
	for i, lease := range []time.Time{at(2 * time.Hour), {}} {
		got, err = s.ClaimDue(ctx(), at(2*time.Hour), lease, 10)
		require.NoError(t, err)
		assert.Equal(t, map[int]int{0: 7 + i, 1: 6 + i, 2: 9 + i}, triesOf(got),
			"ClaimDue with leaseUntil %v (not after now) counts a try for each step", lease)
	}
}

// testRescheduleCountsClaims: a Reschedule that claims a step (LeaseUntil
// after now) adds one to its Tries and returns the stored count, ignoring
// the Tries it is given; a Reschedule that does not claim (LeaseUntil zero,
// at now or before now) keeps the count and returns it; and a step that
// Reschedule leaves alone (leased by another caller) counts nothing.
func testRescheduleCountsClaims(t *testing.T, s verificationStore) {
	v := oneVerification(t, s,
		verify.PendingStep{Step: 0, DueAt: base, Tries: 3},
		verify.PendingStep{Step: 1, DueAt: base},
		verify.PendingStep{Step: 2, DueAt: base, LeaseUntil: at(time.Hour), Tries: 1},
	)
	now := at(time.Minute)
	got, err := s.Reschedule(ctx(), now, []verify.PendingStep{
		{VerificationID: v.ID, Step: 0, DueAt: now, LeaseUntil: at(2 * time.Minute), Tries: 42}, // a claim
		{VerificationID: v.ID, Step: 1, DueAt: at(2 * time.Minute), Tries: 42},                  // not a claim
		{VerificationID: v.ID, Step: 2, DueAt: now, LeaseUntil: at(2 * time.Minute), Tries: 42}, // leased: left alone
	})
	require.NoError(t, err)
	assert.Equal(t, map[int]int{0: 4, 1: 0}, triesOf(got),
		"a claim returns the stored count plus one, a Reschedule that does not claim the stored count; the given Tries are ignored")

	// Not claims: LeaseUntil at now, before now, or zero.
	now = at(3 * time.Minute) // step 0's lease has run out
	for _, c := range []struct {
		lease time.Time
		tries int
	}{{now, 0}, {at(2 * time.Minute), 9}, {time.Time{}, -5}} {
		got, err := s.Reschedule(ctx(), now, []verify.PendingStep{
			{VerificationID: v.ID, Step: 0, DueAt: now, LeaseUntil: c.lease, Tries: c.tries},
			{VerificationID: v.ID, Step: 1, DueAt: now, LeaseUntil: c.lease, Tries: c.tries},
		})
		require.NoError(t, err)
		assert.Equal(t, map[int]int{0: 4, 1: 0}, triesOf(got),
			"a Reschedule with LeaseUntil %v (not after now) keeps the count and returns it", c.lease)
	}

	// Claims again: one more each; a second claim under the lease is refused and counts nothing.
	claim := []verify.PendingStep{
		{VerificationID: v.ID, Step: 0, DueAt: now, LeaseUntil: at(4 * time.Minute)},
		{VerificationID: v.ID, Step: 1, DueAt: now, LeaseUntil: at(4 * time.Minute), Tries: 100},
	}
	got, err = s.Reschedule(ctx(), now, claim)
	require.NoError(t, err)
	assert.Equal(t, map[int]int{0: 5, 1: 1}, triesOf(got), "each claim adds one")
	got, err = s.Reschedule(ctx(), now, claim)
	require.NoError(t, err)
	assert.Empty(t, got, "steps leased after now are left alone")

	// ClaimDue counts on from the stored counts; step 2, never claimed
	// since its creation, still has the count it was created with.
	got, err = s.ClaimDue(ctx(), at(4*time.Minute), at(5*time.Minute), 10)
	require.NoError(t, err)
	assert.Equal(t, map[int]int{0: 6, 1: 2}, triesOf(got), "the refused claims counted nothing")
	got, err = s.ClaimDue(ctx(), at(time.Hour), at(61*time.Minute), 10)
	require.NoError(t, err)
	assert.Equal(t, map[int]int{0: 7, 1: 3, 2: 2}, triesOf(got), "a Reschedule that left a leased step alone counted nothing")
}

// testRescheduleRelease: the release idiom. The holder of a claim whose
// LeaseUntil is L releases it with Reschedule(L, [{step, DueAt: later}]):
// the step is updated (not leased, due later, its Tries unchanged). The
// same call with a now before L, or from the holder of an earlier claim
// whose lease ended before L, leaves the step alone. After the release,
// ClaimDue before the new DueAt hands out nothing, and at it hands out the
// step with one more try.
func testRescheduleRelease(t *testing.T, s verificationStore) {
	v := oneVerification(t, s, verify.PendingStep{Step: 0, DueAt: base})
	first := at(time.Minute)
	got, err := s.ClaimDue(ctx(), base, first, 10)
	require.NoError(t, err)
	require.Equal(t, map[int]int{0: 1}, triesOf(got))
	// The first claim's lease runs out, and another caller claims the step.
	lease := at(2 * time.Minute)
	got, err = s.ClaimDue(ctx(), first, lease, 10)
	require.NoError(t, err)
	require.Equal(t, map[int]int{0: 2}, triesOf(got))

	later := at(10 * time.Minute)
	release := []verify.PendingStep{{VerificationID: v.ID, Step: 0, DueAt: later}}
	got, err = s.Reschedule(ctx(), first, release)
	require.NoError(t, err)
	assert.Empty(t, got, "the holder of the earlier claim, whose lease ended before L, cannot release the current claim")
	got, err = s.Reschedule(ctx(), at(90*time.Second), release)
	require.NoError(t, err)
	assert.Empty(t, got, "a now before L does not release the claim")
	got, err = s.ClaimDue(ctx(), at(90*time.Second), at(3*time.Minute), 10)
	require.NoError(t, err)
	assert.Empty(t, got, "the claim stands after the refused releases")

	got, err = s.Reschedule(ctx(), lease, release)
	require.NoError(t, err)
	require.Len(t, got, 1, "the holder releases its claim by passing its LeaseUntil as now")
	assert.Equal(t, v.ID, got[0].VerificationID)
	assert.Equal(t, 0, got[0].Step)
	sameTime(t, later, got[0].DueAt, "DueAt of the released step")
	assert.True(t, got[0].LeaseUntil.IsZero(), "a released step is not leased, got LeaseUntil %v", got[0].LeaseUntil)
	assert.Equal(t, 2, got[0].Tries, "a release keeps the count")

	next, ok, err := s.NextDue(ctx())
	require.NoError(t, err)
	require.True(t, ok)
	sameTime(t, later, next, "NextDue of the released step")
	got, err = s.ClaimDue(ctx(), later.Add(-time.Second), later.Add(time.Minute), 10)
	require.NoError(t, err)
	assert.Empty(t, got, "a released step is not claimed before its new DueAt")
	got, err = s.ClaimDue(ctx(), later, later.Add(time.Minute), 10)
	require.NoError(t, err)
	require.Len(t, got, 1, "a released step is claimed at its new DueAt")
	sameTime(t, later, got[0].DueAt, "DueAt")
	assert.Equal(t, 3, got[0].Tries, "the claim after the release counts one more try")
}

// testClaimDueTriesRace: of 16 ClaimDue calls released at once on one due
// step, exactly one gets it, and its Tries is exactly the previous count
// plus one; round after round (the lease runs out in between), no try is
// lost and none is counted twice.
func testClaimDueTriesRace(t *testing.T, s verificationStore) {
	const goroutines, rounds = 16, 4
	oneVerification(t, s, verify.PendingStep{Step: 0, DueAt: base, Tries: 2})
	want := 2
	for round := range rounds {
		now := at(time.Duration(round) * time.Minute)
		var (
			mu  sync.Mutex
			won []verify.PendingStep
		)
		errs := make(chan error, goroutines)
		released(goroutines, func(int) {
			got, err := s.ClaimDue(ctx(), now, now.Add(30*time.Second), 10)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			won = append(won, got...)
			mu.Unlock()
		})
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Len(t, won, 1, "round %d: of %d racing ClaimDue calls exactly one gets the due step", round, goroutines)
		want++
		assert.Equal(t, want, won[0].Tries, "round %d: the claim counts exactly one try more than the last", round)
	}
}

// testClaimDueTriesAdd: 16 ClaimDue calls released at once over a set of
// due steps, with a lease that does not hold (leaseUntil = now), so that
// every call may claim every step: each claim adds exactly one try. For
// each step the returned counts are exactly given+1 ... given+claims, each
// once, and the stored count afterwards is given+claims, so the increments
// add up to the number of claims.
func testClaimDueTriesAdd(t *testing.T, s verificationStore) {
	const goroutines, n = 16, 6
	ps := make([]verify.PendingStep, n)
	for i := range ps {
		ps[i] = verify.PendingStep{Step: i, DueAt: at(time.Duration(i) * time.Second), Tries: 3 * i}
	}
	v := oneVerification(t, s, ps...)
	now := at(time.Minute)
	var (
		mu      sync.Mutex
		claimed = make(map[int][]int) // step -> returned Tries
	)
	errs := make(chan error, goroutines)
	released(goroutines, func(int) {
		got, err := s.ClaimDue(ctx(), now, now, 100)
		if err != nil {
			errs <- err
			return
		}
		mu.Lock()
		for _, p := range got {
			claimed[p.Step] = append(claimed[p.Step], p.Tries)
		}
		mu.Unlock()
	})
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	// A Reschedule that does not claim reads the stored counts.
	probe := make([]verify.PendingStep, n)
	for i := range probe {
		probe[i] = verify.PendingStep{VerificationID: v.ID, Step: i, DueAt: ps[i].DueAt}
	}
	got, err := s.Reschedule(ctx(), now, probe)
	require.NoError(t, err)
	stored := triesOf(got)
	require.Len(t, stored, n, "every step is still pending")

	claims, added := 0, 0
	for i := range n {
		given := 3 * i
		tries := claimed[i]
		require.NotEmpty(t, tries, "step %d was claimed by at least one of the racing calls", i)
		slices.Sort(tries)
		want := make([]int, len(tries))
		for k := range want {
			want[k] = given + 1 + k
		}
		assert.Equal(t, want, tries, "step %d: %d racing claims return the counts %d..%d, each once", i, len(tries), given+1, given+len(tries))
		assert.Equal(t, given+len(tries), stored[i], "step %d: the stored count is the given one plus the claims", i)
		claims += len(tries)
		added += stored[i] - given
	}
	assert.Equal(t, claims, added, "the tries added up over all steps equal the number of claims")
}

// testReleaseStep: ReleaseStep changes a step only for the holder of its
// current claim (the exact LeaseUntil); a zero until frees it at once, a
// later one keeps it from every claim until then; DueAt stays; sent false
// takes back the claim's try, never below zero; sent true keeps it.
func testReleaseStep(t *testing.T, s verificationStore) {
	v := oneVerification(t, s, verify.PendingStep{Step: 0, DueAt: base}, verify.PendingStep{Step: 1, DueAt: base})
	lease := at(time.Minute)
	got, err := s.ClaimDue(ctx(), base, lease, 10)
	require.NoError(t, err)
	require.Equal(t, map[int]int{0: 1, 1: 1}, triesOf(got))
	p0 := verify.PendingStep{VerificationID: v.ID, Step: 0, DueAt: base, LeaseUntil: lease}
	p1 := verify.PendingStep{VerificationID: v.ID, Step: 1, DueAt: base, LeaseUntil: lease}

	other := p0
	other.LeaseUntil = at(50 * time.Second)
	ok, err := s.ReleaseStep(ctx(), other, time.Time{}, false)
	require.NoError(t, err)
	assert.False(t, ok, "only the holder of the current claim (its exact LeaseUntil) releases it")
	ok, err = s.ReleaseStep(ctx(), verify.PendingStep{VerificationID: v.ID, Step: 7, LeaseUntil: lease}, time.Time{}, false)
	require.NoError(t, err)
	assert.False(t, ok, "a step that does not exist")

	ok, err = s.ReleaseStep(ctx(), p0, time.Time{}, false)
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = s.ReleaseStep(ctx(), p0, time.Time{}, false)
	require.NoError(t, err)
	assert.False(t, ok, "released once: the claim is gone")
	until := at(5 * time.Minute)
	ok, err = s.ReleaseStep(ctx(), p1, until, true)
	require.NoError(t, err)
	assert.True(t, ok)

	next, ok, err := s.NextDue(ctx())
	require.NoError(t, err)
	require.True(t, ok)
	sameTime(t, base, next, "the step freed at once is due at its DueAt")
	got, err = s.ClaimDue(ctx(), at(time.Second), at(2*time.Minute), 10)
	require.NoError(t, err)
	assert.Equal(t, map[int]int{0: 1}, triesOf(got), "the freed step is claimable at once, its try given back (1 again, not 2)")
	got, err = s.ClaimDue(ctx(), until.Add(-time.Second), until.Add(time.Minute), 10)
	require.NoError(t, err)
	assert.NotContains(t, triesOf(got), 1, "a step kept until later is claimed by no one before then")
	got, err = s.ClaimDue(ctx(), until, until.Add(time.Minute), 10)
	require.NoError(t, err)
	require.Equal(t, map[int]int{1: 2}, triesOf(got), "sent: the try stays, and the next claim counts another")
	sameTime(t, base, got[0].DueAt, "ReleaseStep leaves DueAt")

	// Tries never goes below zero.
	w := oneVerification(t, s, verify.PendingStep{Step: 0, DueAt: base, LeaseUntil: lease})
	ok, err = s.ReleaseStep(ctx(), verify.PendingStep{VerificationID: w.ID, Step: 0, LeaseUntil: lease}, time.Time{}, false)
	require.NoError(t, err)
	assert.True(t, ok)
	got, err = s.Reschedule(ctx(), at(time.Second), []verify.PendingStep{{VerificationID: w.ID, Step: 0, DueAt: base}})
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, 0, got[0].Tries, "Tries never goes below zero")
}

// testReleaseStepRace: of many holders racing to release one claim, one
// changes it, and the try is given back once.
func testReleaseStepRace(t *testing.T, s verificationStore) {
	const goroutines = 16
	v := oneVerification(t, s, verify.PendingStep{Step: 0, DueAt: base, Tries: 3})
	lease := at(time.Minute)
	got, err := s.ClaimDue(ctx(), base, lease, 10)
	require.NoError(t, err)
	require.Equal(t, map[int]int{0: 4}, triesOf(got))
	var changed atomic.Int32
	errs := make(chan error, goroutines)
	released(goroutines, func(int) {
		ok, err := s.ReleaseStep(ctx(), verify.PendingStep{VerificationID: v.ID, Step: 0, LeaseUntil: lease}, time.Time{}, false)
		if err != nil {
			errs <- err
		}
		if ok {
			changed.Add(1)
		}
	})
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int32(1), changed.Load(), "exactly one racing release changes the step")
	got, err = s.ClaimDue(ctx(), at(time.Second), at(2*time.Minute), 10)
	require.NoError(t, err)
	assert.Equal(t, map[int]int{0: 4}, triesOf(got), "the try was given back once (3), and this claim counts one (4)")
}
