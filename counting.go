package verify

import (
	"context"
	"fmt"
	"time"
)

// Count adds Delta to the counter named Key, as a Take with that Key,
// Delta and ExpiresAt and no Backoff applies it (Take.Apply): a counter
// that does not exist, or has expired at the write's time, starts from
// zero, ExpiresAt becomes the counter's, and NotBefore is cleared. Delta
// must be positive. A count never waits out a NotBefore. A Count with a
// Limit refuses the write it goes with when it would take its counter
// past Limit: the rate limits of a StoreLimiter on the Store's own
// counters, decided in the step that stores the verification.
type Count struct {
	Key       string
	Delta     int64
	ExpiresAt time.Time
	// Limit, when positive, is the most the counter may hold after the
	// count; zero is no limit.
	Limit int64
}

// Take returns the Take that c is: Max is Limit, or NoLimit without one.
func (c Count) Take() Take {
	m := c.Limit
	if m == 0 {
		m = NoLimit
	}
	return Take{Key: c.Key, Delta: c.Delta, Max: m, ExpiresAt: c.ExpiresAt}
}

// ApplyCounts decides the counts of a CreateVerificationCounting for a
// Store that decides in Go: current holds each count's counter as read
// under the Store's lock (the zero Counter for a missing one; expired ones
// may be passed as read). If every count is within its Limit it returns
// the counters after the counts, which the Store writes with the
// verification; otherwise a *RefusedError naming the first count that
// refused, whose RetryAfter is the time until its counter expires, and the
// Store writes nothing. current is updated in place.
func ApplyCounts(current []Counter, counts []Count, now time.Time) ([]Counter, error) {
	for i, c := range counts {
		cur := &current[i]
		if !now.Before(cur.ExpiresAt) {
			*cur = Counter{}
		}
		if c.Limit > 0 && cur.Value > c.Limit-c.Delta {
			return nil, &RefusedError{Refused: i, Counter: *cur, RetryAfter: max(cur.ExpiresAt.Sub(now), time.Microsecond)}
		}
	}
	for i, c := range counts {
		current[i] = c.Take().Apply(current[i], now)
	}
	return current, nil
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
	// counting, in one atomic step: it reads the counter guard.Key at
	// v.CreatedAt and, if guard refuses it (see Guard.Refuses), stores
	// and counts nothing and returns guard.Refusal of the counter;
	// otherwise it stores the verification as CreateVerification does,
	// failing as it fails (ErrDuplicate, ErrOpenExists, ...); then, if a
	// count with a Limit refuses (see Count), it stores and counts nothing
	// after all and returns the *RefusedError of the first that does (as
	// ApplyCounts decides); otherwise it applies counts at v.CreatedAt
	// with the verification. It returns the counters after the counts, in
	// the order of counts. A Guard with an empty Key refuses nothing.
	CreateVerificationCounting(ctx context.Context, v VerificationRecord, steps []PendingStep, guard Guard, counts []Count) ([]Counter, error)
	// AttemptCounting is Attempt that also applies onVerified at now
	// when, and only when, the attempt it counts verifies the code, in the
	// same atomic step. onVerified has no Limits (see CheckAttemptCounts).
	AttemptCounting(ctx context.Context, id string, hashes [][]byte, now time.Time, onVerified []Count) (VerificationRecord, bool, error)
}

// CheckCounts returns an error, for a CountingStore to refuse its call
// with before changing anything, unless every count names a distinct
// counter and has a positive Delta and no negative Limit.
func CheckCounts(counts []Count) error {
	for i, c := range counts {
		if c.Key == "" {
			return fmt.Errorf("count %d names no counter", i)
		}
		if c.Delta <= 0 {
			return fmt.Errorf("count of %q has Delta %d; it must be positive", c.Key, c.Delta)
		}
		if c.Limit < 0 {
			return fmt.Errorf("count of %q has Limit %d; it must be positive, or zero for none", c.Key, c.Limit)
		}
		for _, d := range counts[:i] {
			if d.Key == c.Key {
				return fmt.Errorf("counter %q is counted twice", c.Key)
			}
		}
	}
	return nil
}

// CheckAttemptCounts is CheckCounts for the counts of an attempt
// (AttemptCounting's and AttemptRight's onVerified), which have no Limit:
// a code that verifies is never refused by what it counts.
func CheckAttemptCounts(counts []Count) error {
	for _, c := range counts {
		if c.Limit != 0 {
			return fmt.Errorf("count of %q has Limit %d; an attempt's counts have none", c.Key, c.Limit)
		}
	}
	return CheckCounts(counts)
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

// Refusal returns the *RefusedError of a write g refused, reading c.
func (g Guard) Refusal(c Counter) *RefusedError {
	return &RefusedError{Guard: g, Refused: -1, Counter: c}
}

// RefusedError is the error of a write that a Guard or a Count with a
// Limit refused. Nothing was written.
type RefusedError struct {
	// Guard is the guard that refused; the zero Guard when a count did.
	Guard Guard
	// Refused is the index of the count that refused, in the call's
	// counts (as Taken's is of a take); -1 when the guard did.
	Refused int
	// Counter is the refusing counter as the Store read it.
	Counter Counter
	// RetryAfter is, for a count's refusal, how long until it could count
	// (until its counter expires); zero for the guard's.
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string {
	if e.Refused >= 0 {
		return fmt.Sprintf("verify: count %d refused the write (its counter holds %d)", e.Refused, e.Counter.Value)
	}
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
	CountingStore
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
