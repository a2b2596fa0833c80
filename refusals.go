package verify

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Refusals: the engine counts the requests it refuses to protect users (a
// rate limit, a lockout, a blocked prefix), per hour and reason, for the
// console's charts. It counts them in memory and writes them to the
// counters backend every refusalFlush (Run does), one Take per hour and
// reason whatever the number of refusals, so a flood of refused requests
// costs the store nothing more. Counts not yet written when a process
// stops are lost: these are statistics, not protections.

// refusalFlush is how often Run writes the refusal counts.
const refusalFlush = 10 * time.Second

const refusalPrefix = "stats:refused:"

// Reasons of refusals, as Refusals reports them.
const (
	RefusalLocked     = "locked out"
	RefusalWaiting    = "waiting after wrong codes"
	RefusalPrefix     = "prefix blocked for low conversion"
	RefusalSendHook   = "refused by the send hook"
	RefusalGeo        = "country or number type not allowed"
	refusalLimitShort = "limit: "
)

type refusalKey struct {
	hour   int64 // Unix hours
	reason string
}

// refusalTally is the refusals counted and not yet written.
type refusalTally struct {
	mu        sync.Mutex
	m         map[refusalKey]int64
	lastFlush time.Time
}

// refused counts one refusal for reason at now.
func (e *Engine) refused(reason string, now time.Time) {
	t := &e.refusals
	t.mu.Lock()
	if t.m == nil {
		t.m = map[refusalKey]int64{}
	}
	t.m[refusalKey{now.Unix() / 3600, reason}]++
	t.mu.Unlock()
}

// limitReason is the reason of a refusal by the rate limit on what
// ("sends to this recipient").
func limitReason(what string) string { return refusalLimitShort + what }

// FlushRefusals writes the refusals counted since the last flush to the
// counters backend: one Take per hour and reason, kept for the retention
// period. Run calls it when it wakes (every poll interval at the latest)
// once 10 seconds have passed since the last flush; call it before a
// process stops, or regularly if the host does not call Run. On an error the counts are
// kept for the next flush.
func (e *Engine) FlushRefusals(ctx context.Context) error {
	t := &e.refusals
	t.mu.Lock()
	m := t.m
	t.m = nil
	t.lastFlush = e.clock.Now()
	t.mu.Unlock()
	var errs []error
	for k, n := range m {
		hourEnd := time.Unix((k.hour+1)*3600, 0)
		_, err := e.counters.Take(ctx, e.now(), []Take{{Key: refusalPrefix + strconv.FormatInt(k.hour, 10) + ":" + k.reason,
			Delta: n, Max: NoLimit, ExpiresAt: hourEnd.Add(e.retention)}})
		if err != nil {
			errs = append(errs, err)
			t.mu.Lock()
			if t.m == nil {
				t.m = map[refusalKey]int64{}
			}
			t.m[k] += n
			t.mu.Unlock()
		}
	}
	if len(errs) > 0 {
		return storeErr(ctx, "write refusal counts", errors.Join(errs...))
	}
	return nil
}

// flushRefusalsDue flushes when refusalFlush has passed since the last
// flush; Run calls it at every wake-up.
func (e *Engine) flushRefusalsDue(ctx context.Context) error {
	t := &e.refusals
	t.mu.Lock()
	due := len(t.m) > 0 && !e.clock.Now().Before(t.lastFlush.Add(refusalFlush))
	t.mu.Unlock()
	if !due {
		return nil
	}
	return e.FlushRefusals(ctx)
}

// RefusalCount is how many requests were refused for Reason in the hour
// starting at Hour (UTC), by every engine that shares the counters.
type RefusalCount struct {
	Hour   time.Time `json:"hour"`
	Reason string    `json:"reason"`
	Count  int       `json:"count"`
}

// Refusals returns the refusals written by FlushRefusals for the hours
// that start in [from, to), oldest first, then by reason. The counters
// backend must implement CounterLister (ErrListingUnsupported).
func (e *Engine) Refusals(ctx context.Context, from, to time.Time) ([]RefusalCount, error) {
	l, ok := e.counters.(CounterLister)
	if !ok {
		return nil, ErrListingUnsupported
	}
	if !from.Before(to) {
		return nil, invalid(ErrInvalidParameter, "from", "from must be before to")
	}
	var out []RefusalCount
	after := ""
	for {
		cs, err := l.ListCounters(ctx, refusalPrefix, e.now(), after, maxPageSize)
		if err != nil {
			return nil, storeErr(ctx, "list refusal counts", err)
		}
		for _, c := range cs {
			after = c.Key
			h, reason, ok := strings.Cut(strings.TrimPrefix(c.Key, refusalPrefix), ":")
			hour, err := strconv.ParseInt(h, 10, 64)
			if !ok || err != nil || c.Value <= 0 {
				continue
			}
			at := time.Unix(hour*3600, 0).UTC()
			if !at.Before(from) && at.Before(to) {
				out = append(out, RefusalCount{Hour: at, Reason: reason, Count: int(c.Value)})
			}
		}
		if len(cs) < maxPageSize {
			break
		}
	}
	slices.SortFunc(out, func(a, b RefusalCount) int {
		if c := a.Hour.Compare(b.Hour); c != 0 {
			return c
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	return out, nil
}
