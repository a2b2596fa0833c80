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
	// CreateVerificationCounting is CreateVerification that also applies
	// counts at v.CreatedAt when, and only when, it stores the
	// verification, in the same atomic step. It returns the counters
	// after the counts, in the order of counts.
	CreateVerificationCounting(ctx context.Context, v VerificationRecord, steps []PendingStep, counts []Count) ([]Counter, error)
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
