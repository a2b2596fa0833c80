package verify

import (
	"context"
	"fmt"
	"time"
)

// Count adds Delta to the counter named Key with no limit, as a Take with
// that Key, Delta and ExpiresAt, Max NoLimit and no Backoff does: a counter
// that does not exist, or has expired at the write's time, starts from zero,
// and ExpiresAt becomes the counter's. Delta must be positive.
type Count struct {
	Key       string
	Delta     int64
	ExpiresAt time.Time
}

// Take returns the Take that c is.
func (c Count) Take() Take {
	return Take{Key: c.Key, Delta: c.Delta, Max: NoLimit, ExpiresAt: c.ExpiresAt}
}

// CountingStore is the optional ability of a Store that keeps its own
// Counters to count some of them in the same atomic step as a write of a
// verification: the counts are stored exactly when the write is, so a
// refused write counts nothing and a crash never keeps one without the
// other, and the pair costs one call, one transaction. The engine uses it
// for the conversion monitor's counts (codes sent and verified per number
// prefix) when its Counters are the Store (no WithCounters). memstore and
// sqlstore have it; storetest's Counting part checks it.
type CountingStore interface {
	// CreateVerificationCounting is CreateVerification behind a guard,
	// counting: in one atomic step it reads the counter guard.Key at
	// v.CreatedAt and, if guard refuses it (see Guard.Refuses), stores
	// nothing and returns a *RefusedError with the counter; otherwise it
	// stores the verification as CreateVerification does and, when, and
	// only when, it does, applies counts at v.CreatedAt. It returns the
	// counters after the counts, in the order of counts. A Guard with an
	// empty Key refuses nothing.
	CreateVerificationCounting(ctx context.Context, v VerificationRecord, steps []PendingStep, guard Guard, counts []Count) ([]Counter, error)
	// AttemptCounting is Attempt that also applies onVerified at now
	// when, and only when, the attempt it counts verifies the code, in the
	// same atomic step.
	AttemptCounting(ctx context.Context, id string, hashes [][]byte, now time.Time, onVerified []Count) (VerificationRecord, bool, error)
}

// CheckCounts returns an error, for a CountingStore to refuse its call
// with before changing anything, unless every count names a distinct
// counter and has a positive Delta.
func CheckCounts(counts []Count) error {
	for i, c := range counts {
		if c.Key == "" {
			return fmt.Errorf("count %d names no counter", i)
		}
		if c.Delta <= 0 {
			return fmt.Errorf("count of %q has Delta %d; it must be positive", c.Key, c.Delta)
		}
		for _, d := range counts[:i] {
			if d.Key == c.Key {
				return fmt.Errorf("counter %q is counted twice", c.Key)
			}
		}
	}
	return nil
}

// Guard is a counter that a Store reads in the same atomic step as a
// write, and that refuses the write while it holds Max or more, or while
// its NotBefore has not passed: a recipient's consecutive wrong codes
// before a code is judged (see Protection's MaxFailures, FreeFailures), a
// number prefix's block (Max 1) before a verification is stored.
type Guard struct {
	Key string
	Max int64
}

// Refuses reports whether the counter c, read at now, refuses the write.
// A Guard with an empty Key refuses nothing.
func (g Guard) Refuses(c Counter, now time.Time) bool {
	return g.Key != "" && (c.Value >= g.Max || now.Before(c.NotBefore))
}

// RefusedError is the error of a write its Guard refused: the guard's
// counter as the Store read it. Nothing was written.
type RefusedError struct {
	Guard   Guard
	Counter Counter
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("verify: counter %q refused the write (value %d of %d)", e.Guard.Key, e.Counter.Value, e.Guard.Max)
}

// GuardedStore is the optional ability of a Store that keeps its own
// Counters to judge a code the caller expects to be right in one atomic
// step with the read of the recipient's failures, where it would take two
// calls: the usual Check (a right code) is one call, and a check refused
// by a lockout or a delay is that same one call whatever its code. The
// engine uses it when its Counters are the Store (no WithCounters).
// memstore and sqlstore have it; storetest's Guarded part checks it.
type GuardedStore interface {
	// AttemptRight reads the counter guard.Key at now (the zero Counter if
	// it does not exist or has expired) and returns it as failures. If
	// guard refuses it, AttemptRight changes nothing and returns the zero
	// record. Otherwise, if the verification id is open, unexpired, has
	// attempts left and one of hashes matches its code, it counts the
	// attempt as Attempt does, which verifies it, applies onVerified at
	// now, and returns the record with verified set. If a hash matches
	// but the attempt cannot be counted (the verification has ended,
	// expired or used its attempts), it changes nothing and returns the
	// record as it is. If none matches, it changes nothing and returns the
	// zero record: a wrong code is judged by Attempt, after the caller has
	// reserved a failure slot. It returns ErrNotFound for an unknown id
	// when guard does not refuse.
	AttemptRight(ctx context.Context, id string, hashes [][]byte, now time.Time, guard Guard, onVerified []Count) (rec VerificationRecord, verified bool, failures Counter, err error)
}
