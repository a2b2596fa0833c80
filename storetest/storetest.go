// Package storetest is the conformance suite for verify.Store
// implementations. Every sentence of the Store contract in package verify is
// checked here; run it from your store's tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) verify.Store { return mystore.New(...) })
//	}
//
// newStore is called once per subtest and must return an empty store (a
// fresh schema or database for SQL stores). Subtests run in parallel.
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
)

// Run runs the conformance suite against the stores newStore returns.
func Run(t *testing.T, newStore func(t *testing.T) verify.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s verify.Store)
	}{
		{"FlowCRUD", testFlowCRUD},
		{"DefaultFlow", testDefaultFlow},
		{"Templates", testTemplates},
		{"VerificationRoundTrip", testVerificationRoundTrip},
		{"HandedSlicesNotKept", testHandedSlicesNotKept},
		{"Attempt", testAttempt},
		{"AttemptConcurrent", testAttemptConcurrent},
		{"CountSend", testCountSend},
		{"Finish", testFinish},
		{"FinishConcurrent", testFinishConcurrent},
		{"RecordDelivery", testRecordDelivery},
		{"RecordDeliveryCompletesStep", testRecordDeliveryCompletesStep},
		{"RecordDeliveryWhileEnding", testRecordDeliveryWhileEnding},
		{"ExpireDue", testExpireDue},
		{"Purge", testPurge},
		{"ClaimDue", testClaimDue},
		{"ClaimDueConcurrent", testClaimDueConcurrent},
		{"Reschedule", testReschedule},
		{"CompleteStepAndNextDue", testCompleteStepAndNextDue},
		{"CanceledContext", testCanceledContext},
		{"IdempotencyKey", testIdempotencyKey},
		{"FindOpen", testFindOpen},
		{"Exclusive", testExclusive},
		{"Counters", testCounters},
		{"Reports", testReports},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
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
			{Channel: "voice", After: 0},
			{Channel: "email", From: "otp@acme.test", After: 90 * time.Second},
		},
		CreatedAt: base,
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
		Steps: []verify.Step{
			{Channel: "sms", From: "ACME"},
			{Channel: "email", After: 30 * time.Second},
		},
		CreatedAt: base,
		ExpiresAt: base.Add(ttl),
	}
}

// steps returns pending steps for v: step 0 due at base, step 1 due 30s later.
func steps(v verify.VerificationRecord) []verify.PendingStep {
	return []verify.PendingStep{
		{VerificationID: v.ID, Step: 0, DueAt: base},
		{VerificationID: v.ID, Step: 1, DueAt: at(30 * time.Second)},
	}
}

func create(t *testing.T, s verify.Store, v verify.VerificationRecord, ps []verify.PendingStep) verify.VerificationRecord {
	t.Helper()
	require.NoError(t, s.CreateVerification(ctx(), v, ps))
	return v
}

// claimAll claims every step claimable at now and returns them keyed by
// "id/step".
func claimAll(t *testing.T, s verify.Store, now time.Time) map[string]verify.PendingStep {
	t.Helper()
	got, err := s.ClaimDue(ctx(), now, now.Add(time.Minute), 1000)
	require.NoError(t, err)
	out := make(map[string]verify.PendingStep, len(got))
	for _, p := range got {
		out[fmt.Sprintf("%s/%d", p.VerificationID, p.Step)] = p
	}
	return out
}
