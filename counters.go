package verify

import (
	"context"
	"math"
	"time"
)

// Counter is a named number with an expiry, kept by a Counters backend for
// abuse protection.
type Counter struct {
	Value int64
	// UpdatedAt is when a take last changed the value.
	UpdatedAt time.Time
	// ExpiresAt is when the counter starts again from zero.
	ExpiresAt time.Time
	// NotBefore is the earliest time the next take that counts or checks
	// (Delta ≥ 0) is allowed: the growing delay after repeated wrong codes.
	// Zero means at once.
	NotBefore time.Time
}

// NoLimit is the Take.Max of a take that only counts.
const NoLimit int64 = math.MaxInt64

// Take is one counter's part in a Counters.Take call: add Delta to the
// counter named Key if that keeps its value at most Max and the counter's
// NotBefore has passed.
type Take struct {
	Key string
	// Delta is what to add. A positive Delta counts an event; zero only
	// checks, as a positive one would be checked, and writes nothing (a
	// block: Max 0 refuses while the counter is above zero; a lockout's
	// read: refused at Max and before NotBefore); a negative Delta gives
	// back what an earlier take counted, and is never refused.
	Delta int64
	// Max is the highest value the counter may reach by this take; NoLimit
	// for none.
	Max int64
	// ExpiresAt becomes the counter's ExpiresAt when a positive Delta is
	// counted.
	ExpiresAt time.Time
	// Backoff sets the counter's NotBefore when a positive Delta is
	// counted: the next take must wait Backoff.Delay(new value). A refund
	// clears NotBefore when Backoff.Delay(new value) is zero: the value it
	// gives back to no longer owes a wait.
	Backoff Backoff
}

// Apply returns c after this take is counted at now: Value + Delta (never
// below zero) and UpdatedAt now; for a positive Delta also ExpiresAt from
// the take and NotBefore = now + Backoff.Delay(Value). A zero Delta leaves
// c as it is. A negative one leaves ExpiresAt, and leaves NotBefore unless
// Backoff.Delay(Value) is zero, when it clears it. c must already be the
// zero Counter if it had expired at now.
func (t Take) Apply(c Counter, now time.Time) Counter {
	if t.Delta == 0 {
		return c
	}
	c.Value = max(c.Value+t.Delta, 0)
	c.UpdatedAt = now
	d := t.Backoff.Delay(c.Value)
	switch {
	case t.Delta > 0:
		c.ExpiresAt = t.ExpiresAt
		c.NotBefore = time.Time{}
		if d > 0 {
			c.NotBefore = now.Add(d)
		}
	case d == 0:
		c.NotBefore = time.Time{}
	}
	return c
}

// allows reports whether the take may be counted on c at now, and if not,
// how long until it may: until NotBefore for a wait, until ExpiresAt (when
// the counter starts again) for a full one, and never past ExpiresAt.
func (t Take) allows(c Counter, now time.Time) (bool, time.Duration) {
	if t.Delta < 0 {
		return true, 0
	}
	var wait time.Duration
	if c.Value > t.Max-t.Delta {
		wait = max(c.ExpiresAt.Sub(now), time.Microsecond)
	}
	if now.Before(c.NotBefore) {
		wait = max(wait, c.waitEnds().Sub(now))
	}
	return wait <= 0, wait
}

// waitEnds is when the wait NotBefore sets ends: at NotBefore, or at
// ExpiresAt if the counter starts again first.
func (c Counter) waitEnds() time.Time {
	if c.ExpiresAt.Before(c.NotBefore) {
		return c.ExpiresAt
	}
	return c.NotBefore
}

// Backoff is a delay that grows with a counter's value: none below Free,
// then Base, doubling with every further count, up to Max. The zero
// Backoff never delays.
type Backoff struct {
	Free      int64
	Base, Max time.Duration
}

// Delay is the wait after a take left a counter at value n: zero when n <
// Free or Base <= 0, else min(Base × 2^(n−Free), Max) (Base when Max <=
// 0).
func (b Backoff) Delay(n int64) time.Duration {
	if b.Base <= 0 || n < b.Free {
		return 0
	}
	limit := b.Max
	if limit < b.Base {
		limit = b.Base
	}
	d := b.Base
	for i := n - b.Free; i > 0 && d < limit; i-- {
		d <<= 1
		if d <= 0 { // overflowed
			return limit
		}
	}
	return min(d, limit)
}

// Taken is what a Counters.Take decided.
type Taken struct {
	// OK is true when every take was counted.
	OK bool
	// Refused is the index of the first refused take; -1 when OK.
	Refused int
	// RetryAfter is how long until the refused take could be allowed.
	RetryAfter time.Duration
	// Counters holds, for each take in order, its counter after the call:
	// changed when OK, as it was otherwise (the zero Counter for one that
	// does not exist or has expired).
	Counters []Counter
}

// ApplyTakes decides a Counters.Take call for a Store written in Go:
// current holds each take's counter as read under the Store's lock (the
// zero Counter for a missing one; expired ones may be passed as read). It
// returns the decision, whose Counters are what the Store must write back
// when OK is true. The decision's Counters is current itself, updated in
// place, so a Store that needs current afterwards passes a copy. Keys must
// be distinct.
func ApplyTakes(current []Counter, takes []Take, now time.Time) Taken {
	out := Taken{Refused: -1, Counters: current}
	for i, t := range takes {
		c := &current[i]
		if !now.Before(c.ExpiresAt) {
			*c = Counter{}
		}
		if ok, wait := t.allows(*c, now); !ok && out.Refused < 0 {
			out.Refused, out.RetryAfter = i, wait
		}
	}
	if out.Refused >= 0 {
		return out
	}
	out.OK = true
	for i, t := range takes {
		current[i] = t.Apply(current[i], now)
	}
	return out
}

// NamedCounter is a counter with its key, as ListCounters returns it.
type NamedCounter struct {
	Key string
	Counter
}

// CounterLister is the optional Counters ability behind the console's
// protection page (Engine.Lockouts and Engine.Blocks): listing counters by
// key prefix. memstore, sqlstore and rediscounters have it. It is meant for
// operators' screens, not for the path of a request: a store may scan
// every counter to answer it.
type CounterLister interface {
	// ListCounters returns up to limit counters whose key starts with
	// prefix and that have not expired at now, in the store's order of
	// keys (the same for every call), strictly after the key after when
	// after is not empty.
	ListCounters(ctx context.Context, prefix string, now time.Time, after string, limit int) ([]NamedCounter, error)
}
