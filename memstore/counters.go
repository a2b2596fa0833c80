package memstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/openverify/verify"
)

// Counters are sharded by key like verifications. A Take locks every shard
// its keys fall in, always in ascending shard order, so racing Takes over
// overlapping keys cannot deadlock.

type counterShard struct {
	mu sync.Mutex
	m  map[string]verify.Counter
}

// Take implements verify.Store. The takes must name distinct counters; a
// call that names one twice is refused with an error and changes nothing.
func (s *Store) Take(ctx context.Context, now time.Time, takes []verify.Take) (verify.Taken, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.Taken{}, err
	}
	var buf [8]int // the engine names a handful of counters at a time
	idx := buf[:0]
	for i, t := range takes {
		// A Take carries a handful of takes, so a quadratic check is cheaper
		// than a map.
		for _, u := range takes[:i] {
			if u.Key == t.Key {
				return verify.Taken{}, fmt.Errorf("memstore: Take names counter %q twice", t.Key)
			}
		}
		idx = append(idx, shardIndex(t.Key))
	}
	var obuf [8]int
	order := s.lockShards(append(obuf[:0], idx...))
	defer s.unlockShards(order)
	current := make([]verify.Counter, len(takes))
	for i, t := range takes {
		current[i] = s.counters[idx[i]].m[t.Key]
	}
	res := verify.ApplyTakes(current, takes, now)
	if res.OK {
		for i, t := range takes {
			if t.Delta != 0 {
				s.counters[idx[i]].m[t.Key] = res.Counters[i]
			}
		}
	}
	return res, nil
}

// lockShards sorts the counter shards of order, drops repeats, and locks
// them in that ascending order, so that racing callers over overlapping
// shards cannot deadlock. It returns order for unlockShards.
func (s *Store) lockShards(order []int) []int {
	slices.Sort(order)
	order = slices.Compact(order)
	for _, i := range order {
		s.counters[i].mu.Lock()
	}
	return order
}

// unlockShards unlocks what lockShards locked.
func (s *Store) unlockShards(order []int) {
	for _, i := range order {
		s.counters[i].mu.Unlock()
	}
}

// lockedCounter is counter for a caller that holds key's shard lock.
func (s *Store) lockedCounter(key string, now time.Time) verify.Counter {
	c, ok := s.counters[shardIndex(key)].m[key]
	if !ok || !now.Before(c.ExpiresAt) {
		return verify.Counter{}
	}
	return c
}

// decideGuard returns guard's refusal at now, or nil, under the lock of
// its counter's shard.
func (s *Store) decideGuard(guard verify.Guard, now time.Time) error {
	if guard.Key != "" {
		if c := s.lockedCounter(guard.Key, now); guard.Refuses(c, now) {
			return guard.Refusal(c)
		}
	}
	return nil
}

// decideCounts decides counts at now, under the locks of their shards:
// the counters after them, or the refusal of a count's Limit.
func (s *Store) decideCounts(counts []verify.Count, now time.Time) ([]verify.Counter, error) {
	if len(counts) == 0 {
		return nil, nil
	}
	current := make([]verify.Counter, len(counts))
	for i, c := range counts {
		current[i] = s.lockedCounter(c.Key, now)
	}
	return verify.ApplyCounts(current, counts, now)
}

// applyCounts applies counts at now, which name distinct counters, and
// returns the counters after them. It locks the counters' shards as Take
// does; a caller may hold a verification's shard lock.
func (s *Store) applyCounts(counts []verify.Count, now time.Time) []verify.Counter {
	out := make([]verify.Counter, len(counts))
	for i, c := range counts {
		// One shard at a time: a count is unconditional, so the counts
		// need not be applied under one lock.
		sh := &s.counters[shardIndex(c.Key)]
		sh.mu.Lock()
		cur, ok := sh.m[c.Key]
		if !ok || !now.Before(cur.ExpiresAt) {
			cur = verify.Counter{}
		}
		out[i] = c.Take().Apply(cur, now)
		sh.m[c.Key] = out[i]
		sh.mu.Unlock()
	}
	return out
}

// counter returns the counter key at now: the zero Counter if it does not
// exist or has expired.
func (s *Store) counter(key string, now time.Time) verify.Counter {
	sh := &s.counters[shardIndex(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c, ok := sh.m[key]
	if !ok || !now.Before(c.ExpiresAt) {
		return verify.Counter{}
	}
	return c
}

// GetCounter implements verify.Store.
func (s *Store) GetCounter(ctx context.Context, key string, now time.Time) (verify.Counter, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.Counter{}, err
	}
	return s.counter(key, now), nil
}

// DeleteCounter implements verify.Store.
func (s *Store) DeleteCounter(ctx context.Context, key string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	sh := &s.counters[shardIndex(key)]
	sh.mu.Lock()
	delete(sh.m, key)
	sh.mu.Unlock()
	return nil
}

// PurgeCounters implements verify.Store. It scans the counters, one shard
// at a time, until it has deleted limit of them.
func (s *Store) PurgeCounters(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctxErr(ctx); err != nil {
		return 0, err
	}
	n := 0
	for i := 0; i < len(s.counters) && n < limit; i++ {
		sh := &s.counters[i]
		sh.mu.Lock()
		for k, c := range sh.m {
			if n >= limit {
				break
			}
			if c.ExpiresAt.Before(before) {
				delete(sh.m, k)
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n, nil
}

var _ verify.CounterLister = (*Store)(nil)

// ListCounters implements verify.CounterLister, in byte order of keys. It
// reads every counter.
func (s *Store) ListCounters(ctx context.Context, prefix string, now time.Time, after string, limit int) ([]verify.NamedCounter, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var out []verify.NamedCounter
	for i := range s.counters {
		sh := &s.counters[i]
		sh.mu.Lock()
		for k, c := range sh.m {
			if strings.HasPrefix(k, prefix) && k > after && now.Before(c.ExpiresAt) {
				out = append(out, verify.NamedCounter{Key: k, Counter: c})
			}
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b verify.NamedCounter) int { return strings.Compare(a.Key, b.Key) })
	if len(out) > limit {
		out = out[:max(limit, 0)]
	}
	return out, nil
}
