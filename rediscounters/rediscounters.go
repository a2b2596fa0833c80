// Package rediscounters keeps the engine's protection counters in Redis:
// the failure lockouts and delays, the number-prefix blocks and, through a
// verify.StoreLimiter built on it, the rate limits, for deployments that
// already run Redis and want those off the database while verifications
// stay in SQL:
//
//	counters := rediscounters.New(redis.NewClient(&redis.Options{Addr: "localhost:6379"}))
//	eng, err := verify.New(store,
//		verify.WithCounters(counters),
//		verify.WithLimiter(verify.NewStoreLimiter(counters)),
//		...)
//
// Every engine that shares the store must share the counters.
//
// Each Take is one Lua script, which Redis runs atomically: it reads the
// named counters, decides as verify.ApplyTakes does (all or nothing, Max,
// NotBefore and the backoff, expiry by the engine's clock), and writes the
// changed ones, so that racing engines never count past a limit and a
// refused Take changes nothing. Counters are hashes (value, updated,
// expires and not-before times in microseconds) under a key prefix, with
// a Redis expiry of their ExpiresAt plus a grace period, counted from the
// now of the Take that set that ExpiresAt (a Take that keeps it, such as a
// fixed window's next count or a give-back, leaves the expiry alone), so
// that Redis drops them when they no longer count.
//
// On Redis Cluster the keys of one Take must share a hash slot: the
// default prefix, "{openverify}:", puts every counter in one.
//
// Concurrent calls share round trips: the Takes and GetCounters that come
// while one round trip is out go together in the next, as one pipeline
// (each Take still its own script, run atomically, in turn).
//
// Redis's own durability applies: with the default RDB snapshots, a
// restart loses the counts since the last snapshot; turn on the AOF
// (appendonly yes) where lockouts must survive a crash.
package rediscounters

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/combine"
)

// Counters is a verify.Counters backend on Redis.
type Counters struct {
	rdb    redis.UniversalClient
	prefix string
	grace  time.Duration
	calls  combine.Combiner[command, reply]
}

// command is a Take (its script's keys and arguments) or a GetCounter
// (get, the counter's key), and reply its answer: the script's numbers,
// or the counter's fields.
type command struct {
	keys []string
	args []any
	get  string
}

type reply struct {
	take []int64
	get  []any
}

var _ verify.Counters = (*Counters)(nil)

// An Option configures Counters.
type Option func(*Counters)

// WithPrefix sets the prefix of the counters' Redis keys. The default is
// "{openverify}:"; on Redis Cluster keep a hash tag in it, so that a Take's
// keys share a slot.
func WithPrefix(p string) Option {
	return func(c *Counters) { c.prefix = p }
}

// WithGrace sets how long Redis keeps a counter past its ExpiresAt (by the
// clock of the Take that set it) before it drops it. The default is one
// minute; it only matters when the engines' clocks disagree: keep it above
// their skew, or an engine whose clock runs ahead makes Redis drop a
// counter before the others' ExpiresAt.
func WithGrace(d time.Duration) Option {
	return func(c *Counters) {
		if d >= 0 {
			c.grace = d
		}
	}
}

// New returns Counters on the Redis client rdb: a *redis.Client, a
// *redis.ClusterClient, or any redis.UniversalClient.
func New(rdb redis.UniversalClient, opts ...Option) *Counters {
	c := &Counters{rdb: rdb, prefix: "{openverify}:", grace: time.Minute}
	for _, o := range opts {
		o(c)
	}
	c.calls.Run = c.pipeline
	return c
}

//go:embed take.lua
var takeSource string

//go:embed purge.lua
var purgeSource string

var (
	takeScript  = redis.NewScript(takeSource)
	purgeScript = redis.NewScript(purgeSource)
)

// maxExact is the largest integer Redis's Lua numbers (doubles) hold
// exactly. A Max above it is no limit; a Delta beyond it, or a count that
// would take a counter past it, fails the Take with an error.
const maxExact = 1<<53 - 1

// Take implements verify.Counters in one Lua script (see the package
// documentation).
func (c *Counters) Take(ctx context.Context, now time.Time, takes []verify.Take) (verify.Taken, error) {
	if len(takes) == 0 {
		return verify.ApplyTakes(nil, nil, now), nil
	}
	cmd, err := c.takeCommand(now, takes)
	if err != nil {
		return verify.Taken{}, err
	}
	r, err := c.calls.Do(ctx, cmd)
	return taken(r.take, err, len(takes))
}

// takeCommand is the script call of a Take.
func (c *Counters) takeCommand(now time.Time, takes []verify.Take) (command, error) {
	keys := make([]string, len(takes))
	args := make([]any, 0, 2+6*len(takes))
	args = append(args, micros(now), c.grace.Microseconds())
	for i, t := range takes {
		if t.Key == "" {
			return command{}, errors.New("rediscounters: take with an empty key")
		}
		if t.Delta > maxExact || t.Delta < -maxExact {
			return command{}, fmt.Errorf("rediscounters: take %q: delta %d is beyond ±2^53", t.Key, t.Delta)
		}
		keys[i] = c.prefix + t.Key
		limit := t.Max
		if limit > maxExact {
			limit = -1 // no limit
		} else if limit < 0 {
			limit = math.MinInt32 // refuses every positive delta, as Max < 0 does
		}
		// Nanoseconds, as Backoff.Delay doubles them; beyond 2^53 (104
		// days) a delay is as good as that.
		args = append(args, t.Delta, limit, micros(t.ExpiresAt),
			t.Backoff.Free, min(int64(t.Backoff.Base), maxExact), min(int64(t.Backoff.Max), maxExact))
	}
	if dup := duplicate(keys); dup != "" {
		return command{}, fmt.Errorf("rediscounters: counter %q is named by more than one take", dup[len(c.prefix):])
	}
	return command{keys: keys, args: args}, nil
}

// taken reads the reply of a Take of n takes.
func taken(raw []int64, err error, n int) (verify.Taken, error) {
	if err != nil {
		return verify.Taken{}, fmt.Errorf("rediscounters: take: %w", err)
	}
	if len(raw) != 3+4*n {
		return verify.Taken{}, fmt.Errorf("rediscounters: take: the script returned %d numbers for %d takes", len(raw), n)
	}
	res := verify.Taken{OK: raw[0] == 1, Refused: int(raw[1]), Counters: make([]verify.Counter, n)}
	if !res.OK {
		res.RetryAfter = time.Duration(raw[2]) * time.Microsecond
	}
	for i := range n {
		res.Counters[i] = counterOf(raw[3+4*i : 7+4*i])
	}
	return res, nil
}

// GetCounter implements verify.Counters.
func (c *Counters) GetCounter(ctx context.Context, key string, now time.Time) (verify.Counter, error) {
	r, err := c.calls.Do(ctx, command{get: c.prefix + key})
	vals := r.get
	if err != nil {
		return verify.Counter{}, fmt.Errorf("rediscounters: get counter: %w", err)
	}
	raw, ok, err := rawCounter(vals)
	if err != nil {
		return verify.Counter{}, fmt.Errorf("rediscounters: get counter %q: %w", key, err)
	}
	if !ok || raw[2] <= micros(now) {
		return verify.Counter{}, nil
	}
	return counterOf(raw[:]), nil
}

// DeleteCounter implements verify.Counters.
func (c *Counters) DeleteCounter(ctx context.Context, key string) error {
	if err := c.rdb.Del(ctx, c.prefix+key).Err(); err != nil {
		return fmt.Errorf("rediscounters: delete counter: %w", err)
	}
	return nil
}

// PurgeCounters implements verify.Counters. Redis drops counters by itself
// a grace period after they expire; this deletes, up to limit, those
// whose ExpiresAt is before before sooner, scanning the prefix's keys a
// batch at a time and checking each one's ExpiresAt as it deletes it, in
// one script, so that a counter a Take renewed meanwhile is kept.
func (c *Counters) PurgeCounters(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	var deleted int
	purge := func(ctx context.Context, node redis.UniversalClient) error {
		var cursor uint64
		for deleted < limit {
			keys, next, err := node.Scan(ctx, cursor, escapeGlob(c.prefix)+"*", 500).Result()
			if err != nil {
				return err
			}
			for len(keys) > 0 && deleted < limit {
				batch := keys[:min(len(keys), 100)]
				keys = keys[len(batch):]
				n, err := purgeScript.Run(ctx, node, batch, micros(before), limit-deleted).Int()
				if err != nil {
					return err
				}
				deleted += n
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
		return nil
	}
	var err error
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		// A scan sees one node's keys: scan every primary. ForEachMaster
		// calls them concurrently; they take turns, sharing deleted.
		var mu sync.Mutex
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			if deleted >= limit {
				return nil
			}
			return purge(ctx, node)
		})
	} else {
		err = purge(ctx, c.rdb)
	}
	if err != nil {
		return deleted, fmt.Errorf("rediscounters: purge counters: %w", err)
	}
	return deleted, nil
}

// pipeline runs a batch of calls in one round trip (a batch of one on its
// own), and answers each with its own reply or error. A Take whose script
// Redis does not have cached yet (NOSCRIPT, which ran nothing) runs again
// with the script.
func (c *Counters) pipeline(ctx context.Context, batch []*combine.Call[command, reply]) {
	if len(batch) == 1 {
		cl := batch[0]
		cl.Res, cl.Err = c.one(ctx, cl.Req)
		return
	}
	pipe := c.rdb.Pipeline()
	cmds := make([]redis.Cmder, len(batch))
	for i, cl := range batch {
		if cl.Req.get != "" {
			cmds[i] = pipe.HMGet(ctx, cl.Req.get, "v", "u", "e", "n")
		} else {
			cmds[i] = takeScript.EvalSha(ctx, pipe, cl.Req.keys, cl.Req.args...)
		}
	}
	_, _ = pipe.Exec(ctx) // each command holds its own error
	for i, cl := range batch {
		switch cmd := cmds[i].(type) {
		case *redis.SliceCmd:
			cl.Res.get, cl.Err = cmd.Result()
		case *redis.Cmd:
			cl.Res.take, cl.Err = cmd.Int64Slice()
			if cl.Err != nil && redis.HasErrorPrefix(cl.Err, "NOSCRIPT") {
				cl.Res, cl.Err = c.one(ctx, cl.Req)
			}
		}
	}
}

// one runs a call on its own.
func (c *Counters) one(ctx context.Context, cmd command) (reply, error) {
	if cmd.get != "" {
		vals, err := c.rdb.HMGet(ctx, cmd.get, "v", "u", "e", "n").Result()
		return reply{get: vals}, err
	}
	raw, err := takeScript.Run(ctx, c.rdb, cmd.keys, cmd.args...).Int64Slice()
	return reply{take: raw}, err
}

// micros is t in microseconds since the Unix epoch; 0 for the zero time.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// timeOf is the inverse of micros.
func timeOf(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// counterOf reads value, updated, expires and not-before.
// rawCounter reads a counter's hash fields v, u, e and n, as HMGET
// returns them; ok is false when the counter does not exist.
func rawCounter(vals []any) (raw [4]int64, ok bool, err error) {
	if len(vals) != len(raw) {
		return raw, false, fmt.Errorf("%d fields, not %d", len(vals), len(raw))
	}
	for i, v := range vals {
		if v == nil {
			return raw, false, nil
		}
		s, _ := v.(string)
		if raw[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return raw, false, fmt.Errorf("field %d is %q", i, s)
		}
	}
	return raw, true, nil
}

func counterOf(raw []int64) verify.Counter {
	return verify.Counter{Value: raw[0], UpdatedAt: timeOf(raw[1]), ExpiresAt: timeOf(raw[2]), NotBefore: timeOf(raw[3])}
}

// duplicate returns a key named twice, or "".
func duplicate(keys []string) string {
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	for i := 1; i < len(sorted); i++ {
		if sorted[i] == sorted[i-1] {
			return sorted[i]
		}
	}
	return ""
}

// escapeGlob escapes the characters SCAN's MATCH treats as a pattern.
func escapeGlob(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			out = append(out, '\\')
		}
		out = append(out, s[i])
	}
	return string(out)
}

var _ verify.CounterLister = (*Counters)(nil)

// ListCounters implements verify.CounterLister, in byte order of keys. It
// SCANs every key under the prefix (on a cluster, every primary's) and
// reads the matching ones in pipelines.
func (c *Counters) ListCounters(ctx context.Context, prefix string, now time.Time, after string, limit int) ([]verify.NamedCounter, error) {
	if limit <= 0 {
		return nil, nil
	}
	var (
		mu   sync.Mutex
		keys []string
	)
	scan := func(ctx context.Context, node redis.UniversalClient) error {
		var cursor uint64
		for {
			found, next, err := node.Scan(ctx, cursor, escapeGlob(c.prefix+prefix)+"*", 1000).Result()
			if err != nil {
				return err
			}
			mu.Lock()
			for _, k := range found {
				if key := strings.TrimPrefix(k, c.prefix); key > after {
					keys = append(keys, key)
				}
			}
			mu.Unlock()
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return scan(ctx, node) })
	} else {
		err = scan(ctx, c.rdb)
	}
	if err != nil {
		return nil, fmt.Errorf("rediscounters: list counters: %w", err)
	}
	slices.Sort(keys)
	keys = slices.Compact(keys) // SCAN may return a key twice
	var out []verify.NamedCounter
	for len(keys) > 0 && len(out) < limit {
		batch := keys[:min(len(keys), 100)]
		keys = keys[len(batch):]
		pipe := c.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, len(batch))
		for i, k := range batch {
			cmds[i] = pipe.HMGet(ctx, c.prefix+k, "v", "u", "e", "n")
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("rediscounters: list counters: %w", err)
		}
		for i, k := range batch {
			raw, ok, err := rawCounter(cmds[i].Val())
			if err != nil {
				return nil, fmt.Errorf("rediscounters: list counters: %q: %w", k, err)
			}
			if ok && raw[2] > micros(now) && len(out) < limit {
				out = append(out, verify.NamedCounter{Key: k, Counter: counterOf(raw[:])})
			}
		}
	}
	return out, nil
}
