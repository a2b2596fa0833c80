// Package storetest is the conformance suite for verify.Store
// implementations. Every sentence of the Store contract in package verify is
// checked here; run it from your store's tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) verify.Store { return mystore.New(...) })
//	}
//
// The suite has a part for each capability of a Store, and its subtests are
// named after them: Catalog (flows and templates), Verifications
// (verifications and their deliveries), StepQueue (the pending fallback
// steps), Counters and, for a store that implements the optional
// verify.AuditStore, Audit, and for those that implement the optional
// verify.CountingStore and verify.GuardedStore, Counting and Guarded. Run runs every part, and the Engine part, which runs
// engines on the store the way they race in production. A Counters backend
// built on its own (on Redis, say, for verify.WithCounters) runs only its
// part:
//
//	func TestCounters(t *testing.T) {
//		storetest.RunCounters(t, func(t *testing.T) verify.Counters { return mycounters.New(...) })
//	}
//
// newStore (newCounters) is called once per subtest and must return an
// empty store (a fresh schema or database for SQL stores). Subtests run in
// parallel.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/testutil"
)

// Run runs the conformance suite, every part of it, against the stores
// newStore returns.
func Run(t *testing.T, newStore func(t *testing.T) verify.Store) {
	t.Helper()
	runPart(t, "Catalog", catalogTests, func(t *testing.T) verify.Catalog { return newStore(t) })
	runPart(t, "Verifications", verificationTests, func(t *testing.T) verificationStore { return newStore(t) })
	runPart(t, "StepQueue", stepQueueTests, func(t *testing.T) verificationStore { return newStore(t) })
	runPart(t, "Counters", counterTests, func(t *testing.T) verify.Counters { return newStore(t) })
	runPart(t, "Audit", auditTests, func(t *testing.T) verify.AuditStore {
		as, ok := newStore(t).(verify.AuditStore)
		if !ok {
			t.Skip("the store does not implement verify.AuditStore (optional)")
		}
		return as
	})
	runPart(t, "Counting", countingTests, func(t *testing.T) countingStore {
		cs, ok := newStore(t).(countingStore)
		if !ok {
			t.Skip("the store does not implement verify.CountingStore (optional)")
		}
		return cs
	})
	runPart(t, "Guarded", guardedTests, func(t *testing.T) guardedStore {
		gs, ok := newStore(t).(guardedStore)
		if !ok {
			t.Skip("the store does not implement verify.GuardedStore (optional)")
		}
		return gs
	})
	runEngine(t, newStore)
}

// RunCounters runs the Counters part of the suite against the backends
// newCounters returns: for a Counters backend built on its own, apart from
// a Store.
func RunCounters(t *testing.T, newCounters func(t *testing.T) verify.Counters) {
	t.Helper()
	runPart(t, "Counters", counterTests, newCounters)
}

// verificationStore is what the Verifications and StepQueue parts test: the
// steps of a verification live with it, so the two are one backend.
type verificationStore interface {
	verify.Verifications
	verify.StepQueue
}

// test is one subtest of a part, run on a fresh S.
type test[S any] struct {
	name string
	fn   func(t *testing.T, s S)
}

var catalogTests = []test[verify.Catalog]{
	{"FlowCRUD", testFlowCRUD},
	{"DefaultFlow", testDefaultFlow},
	{"Templates", testTemplates},
	{"HandedSlicesNotKept", testFlowSlicesNotKept},
}

var verificationTests = []test[verificationStore]{
	{"VerificationRoundTrip", testVerificationRoundTrip},
	{"HandedSlicesNotKept", testHandedSlicesNotKept},
	{"Attempt", testAttempt},
	{"AttemptConcurrent", testAttemptConcurrent},
	{"CountSend", testCountSend},
	{"CountSendCooldown", testCountSendCooldown},
	{"CountSendConcurrent", testCountSendConcurrent},
	{"Finish", testFinish},
	{"FinishRefusesOpenStatus", testFinishRefusesOpenStatus},
	{"FinishConcurrent", testFinishConcurrent},
	{"RecordDelivery", testRecordDelivery},
	{"RecordDeliveryCompletesStep", testRecordDeliveryCompletesStep},
	{"RecordDeliveryWhileEnding", testRecordDeliveryWhileEnding},
	{"RecordDeliveryMovesForward", testRecordDeliveryMovesForward},
	{"RecordDeliveryVerificationStatus", testRecordDeliveryVerificationStatus},
	{"RecordDeliveryCompletesStepEitherWay", testRecordDeliveryCompletesStepEitherWay},
	{"RecordDeliveryRace", testRecordDeliveryRace},
	{"ExpireDue", testExpireDue},
	{"Purge", testPurge},
	{"CanceledContext", testCanceledContext},
	{"IdempotencyKey", testIdempotencyKey},
	{"FindOpen", testFindOpen},
	{"Exclusive", testExclusive},
	{"Reports", testReports},
	{"Trends", testTrends},
}

var stepQueueTests = []test[verificationStore]{
	{"ClaimDue", testClaimDue},
	{"ClaimDueOncePerCall", testClaimDueOncePerCall},
	{"ClaimDueConcurrent", testClaimDueConcurrent},
	{"Reschedule", testReschedule},
	{"CompleteStepAndNextDue", testCompleteStepAndNextDue},
	{"ClaimDueCountsTries", testClaimDueCountsTries},
	{"RescheduleCountsClaims", testRescheduleCountsClaims},
	{"RescheduleRelease", testRescheduleRelease},
	{"ClaimDueTriesRace", testClaimDueTriesRace},
	{"ReleaseStep", testReleaseStep},
	{"ReleaseStepRace", testReleaseStepRace},
	{"ClaimDueTriesAdd", testClaimDueTriesAdd},
}

var counterTests = []test[verify.Counters]{
	{"Take", testTake},
	{"TakeAllOrNothing", testTakeAllOrNothing},
	{"TakeCheck", testTakeCheck},
	{"TakeRefund", testTakeRefund},
	{"TakeBackoff", testTakeBackoff},
	{"Expiry", testCounterExpiry},
	{"GetAndDelete", testGetAndDeleteCounter},
	{"PurgeCounters", testPurgeCounters},
	{"CanceledContext", testCountersCanceledContext},
	{"TakeConcurrentMax", testTakeConcurrentMax},
	{"TakeConcurrentBackoff", testTakeConcurrentBackoff},
	{"TakeConcurrentKeys", testTakeConcurrentKeys},
	{"TakeConcurrentRefunds", testTakeConcurrentRefunds},
	{"ListCounters", testListCounters},
}

// runPart runs tests as parallel subtests of a parallel subtest named part,
// each on a fresh S from newS.
func runPart[S any](t *testing.T, part string, tests []test[S], newS func(t *testing.T) S) {
	t.Helper()
	t.Run(part, func(t *testing.T) {
		t.Parallel()
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.fn(t, newS(t))
			})
		}
	})
}

// base is the suite's reference time: UTC, with microseconds, as SQL stores
// keep them.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

func at(d time.Duration) time.Time { return base.Add(d) }

func ctx() context.Context { return context.Background() }

// sameTime asserts that two times are the same instant to the microsecond.
func sameTime(t *testing.T, want, got time.Time, field string) {
	t.Helper()
	if want.IsZero() {
		assert.True(t, got.IsZero(), "%s: want zero time, got %v", field, got)
		return
	}
	assert.True(t, want.Truncate(time.Microsecond).Equal(got.Truncate(time.Microsecond)),
		"%s: want %v, got %v", field, want, got)
}

func requireNotFound(t *testing.T, err error, what string) {
	t.Helper()
	require.Error(t, err, what)
	require.True(t, errors.Is(err, verify.ErrNotFound), "%s: want an error matching verify.ErrNotFound, got %v", what, err)
}

// record records a delivery that must succeed and reports whether it
// changed anything.
func record(t *testing.T, s verify.Verifications, d verify.DeliveryRecord) bool {
	t.Helper()
	changed, err := s.RecordDelivery(ctx(), d)
	require.NoError(t, err, "RecordDelivery %s %s", d.ID, d.Status)
	return changed
}

// recordErr records a delivery and returns only the error.
func recordErr(s verify.Verifications, d verify.DeliveryRecord) error {
	_, err := s.RecordDelivery(ctx(), d)
	return err
}

func newID() string { return uuid.NewString() }

func sampleFlow(name string) verify.Flow {
	return verify.Flow{
		ID:          newID(),
		Name:        name,
		Description: "desc " + name,
		Brand:       "Acme",
		CodeLength:  8,
		Charset:     verify.Alphanumeric,
		TTL:         7 * time.Minute,
		MaxAttempts: 4,
		Steps: []verify.Step{
			{Channel: "sms", From: "ACME", Template: "t1"},
			{Channel: "voice", After: 0, Language: "en-US"},
			{Channel: "email", From: "otp@acme.test", After: 90 * time.Second},
		},
		AllowedIPs:        []string{"203.0.113.0/24", "2001:db8::/32"},
		AllowedCountries:  []string{"NO", "SE"},
		DeniedCountries:   []string{"KP"},
		DeniedNumberTypes: []verify.NumberType{verify.NumberPremiumRate, verify.NumberSharedCost},
		CreatedAt:         base,
	}
}

func sampleVerification(maxAttempts int, ttl time.Duration) verify.VerificationRecord {
	id := newID()
	return verify.VerificationRecord{
		ID:               id,
		FlowID:           newID(),
		ForeignID:        "order-42",
		Status:           verify.StatusPending,
		To:               verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"},
		IPAddress:        "2001:db8::1",
		Brand:            "Acme",
		Language:         "pt-BR",
		FallbackLanguage: "en",
		CodeHash:         []byte("0123456789abcdef0123456789abcdef"),
		SealedCode:       []byte("sealed-bytes-not-a-code"),
		Charset:          verify.Numeric,
		CodeLength:       6,
		MaxAttempts:      maxAttempts,
		Sends:            1,
		LastSentAt:       base,
		Steps: []verify.Step{
			{Channel: "sms", From: "ACME"},
			// An ad-hoc flow's step: its own text and language.
			{Channel: "email", After: 30 * time.Second, Text: "Código {code} — válido {minutes} min", Language: "es"},
		},
		AllowedIPs: []string{"2001:db8::/32", "198.51.100.7"},
		CreatedAt:  base,
		ExpiresAt:  base.Add(ttl),
	}
}

// steps returns pending steps for v: step 0 due at base, step 1 due 30s later.
func steps(v verify.VerificationRecord) []verify.PendingStep {
	return []verify.PendingStep{
		{VerificationID: v.ID, Step: 0, DueAt: base},
		{VerificationID: v.ID, Step: 1, DueAt: at(30 * time.Second)},
	}
}

func create(t *testing.T, s verificationStore, v verify.VerificationRecord, ps []verify.PendingStep) verify.VerificationRecord {
	t.Helper()
	require.NoError(t, s.CreateVerification(ctx(), v, ps))
	return v
}

// claimAll claims every step claimable at now and returns them keyed by
// "id/step".
func claimAll(t *testing.T, s verificationStore, now time.Time) map[string]verify.PendingStep {
	t.Helper()
	got, err := s.ClaimDue(ctx(), now, now.Add(time.Minute), 1000)
	require.NoError(t, err)
	out := make(map[string]verify.PendingStep, len(got))
	for _, p := range got {
		out[fmt.Sprintf("%s/%d", p.VerificationID, p.Step)] = p
	}
	return out
}

// released starts n goroutines that each run fn(i) as soon as all have
// started, so that their calls race, and waits for them.
func released(n int, fn func(i int)) { testutil.AtOnce(n, fn) }
