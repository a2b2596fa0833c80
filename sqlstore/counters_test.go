package sqlstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
)

// TestTakeAcrossStores races Takes from three Stores (three connection
// pools, as three instances would have) on one database. Each takes the
// same three counters, named in a random order: a limited one, a counting
// one and a block it only checks. Exactly the limit's worth are allowed,
// the refused ones change nothing, and none deadlocks (on PostgreSQL the
// rows are locked in key order, whatever the order of the takes). Then
// refunds from every Store give everything back.
func TestTakeAcrossStores(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := b.newDSN(t)
			stores := []*sqlstore.Store{open(t, dsn), open(t, dsn), open(t, dsn)}
			const (
				callers = 200
				limit   = 50
			)
			expires := start.Add(time.Minute)
			takes := func(delta int64) []verify.Take {
				ts := []verify.Take{
					{Key: "limited", Delta: delta, Max: limit, ExpiresAt: expires},
					{Key: "counting", Delta: delta, Max: verify.NoLimit, ExpiresAt: expires},
					{Key: "block", Delta: 0, Max: 0},
				}
				rand.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
				return ts
			}
			var (
				allowed atomic.Int32
				mu      sync.Mutex
				errs    []error
			)
			runConcurrently(callers, func(i int) {
				ts := takes(1)
				res, err := stores[i%len(stores)].Take(ctx, start, ts)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					errs = append(errs, err)
				case res.OK:
					allowed.Add(1)
				case ts[res.Refused].Key != "limited" || res.RetryAfter != time.Minute:
					errs = append(errs, fmt.Errorf("refused by %q after %v, want by limited after 1m", ts[res.Refused].Key, res.RetryAfter))
				}
			})
			require.Empty(t, errs)
			assert.Equal(t, int32(limit), allowed.Load(), "exactly the limit is allowed")
			for _, key := range []string{"limited", "counting"} {
				c, err := stores[0].GetCounter(ctx, key, start)
				require.NoError(t, err)
				assert.Equal(t, verify.Counter{Value: limit, UpdatedAt: start, ExpiresAt: expires}, c, key)
			}
			c, err := stores[0].GetCounter(ctx, "block", start)
			require.NoError(t, err)
			assert.Zero(t, c, "a take with Delta 0 changes nothing")

			runConcurrently(limit, func(i int) {
				res, err := stores[i%len(stores)].Take(ctx, start.Add(time.Second), takes(-1))
				mu.Lock()
				defer mu.Unlock()
				if err != nil || !res.OK {
					errs = append(errs, fmt.Errorf("refund: %+v, %v", res, err))
				}
			})
			require.Empty(t, errs)
			for _, key := range []string{"limited", "counting"} {
				c, err := stores[1].GetCounter(ctx, key, start.Add(time.Second))
				require.NoError(t, err)
				assert.Equal(t, verify.Counter{Value: 0, UpdatedAt: start.Add(time.Second), ExpiresAt: expires}, c, key)
			}
		})
	}
}

// TestTakeBackoffAcrossStores: failures racing on several Stores get the
// growing delay of one counter: past Free, at most one take is allowed
// before its NotBefore, however many race.
func TestTakeBackoffAcrossStores(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := b.newDSN(t)
			stores := []*sqlstore.Store{open(t, dsn), open(t, dsn)}
			take := []verify.Take{{Key: "fail", Delta: 1, Max: 100, ExpiresAt: start.Add(time.Hour),
				Backoff: verify.Backoff{Free: 3, Base: time.Second, Max: time.Minute}}}
			var allowed atomic.Int32
			runConcurrently(40, func(i int) {
				res, err := stores[i%len(stores)].Take(ctx, start, take)
				assert.NoError(t, err)
				if res.OK {
					allowed.Add(1)
				}
			})
			assert.Equal(t, int32(3), allowed.Load(), "values 1 and 2 are free, 3 sets the first delay")
			c, err := stores[0].GetCounter(ctx, "fail", start)
			require.NoError(t, err)
			assert.Equal(t, start.Add(time.Second), c.NotBefore)

			// A refund to a value below Free lifts the delay; the next take
			// sets it again.
			res, err := stores[1].Take(ctx, start, []verify.Take{{Key: "fail", Delta: -1, Max: verify.NoLimit, Backoff: take[0].Backoff}})
			require.NoError(t, err)
			require.True(t, res.OK)
			assert.Zero(t, res.Counters[0].NotBefore)
			at := start.Add(500 * time.Millisecond)
			res, err = stores[0].Take(ctx, at, take)
			require.NoError(t, err)
			require.True(t, res.OK)
			assert.Equal(t, verify.Counter{Value: 3, UpdatedAt: at, ExpiresAt: start.Add(time.Hour),
				NotBefore: at.Add(time.Second)}, res.Counters[0])
			res, err = stores[1].Take(ctx, at.Add(400*time.Millisecond), take)
			require.NoError(t, err)
			assert.False(t, res.OK)
			assert.Equal(t, 600*time.Millisecond, res.RetryAfter)
		})
	}
}

// TestTakeErrors: duplicate keys are refused before anything is read, and
// the errors are wrapped like every other method's.
func TestTakeErrors(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t, b.newDSN(t))
			_, err := st.Take(ctx, start, []verify.Take{{Key: "a", Delta: 1, Max: 1}, {Key: "a", Delta: 1, Max: 1}})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "sqlstore: take counters: ")
			c, err := st.GetCounter(ctx, "a", start)
			require.NoError(t, err)
			assert.Zero(t, c)

			res, err := st.Take(ctx, start, nil)
			require.NoError(t, err)
			assert.True(t, res.OK)
			assert.Equal(t, -1, res.Refused)

			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			_, err = st.Take(cancelled, start, []verify.Take{{Key: "a", Delta: 1, Max: 1}})
			require.ErrorIs(t, err, context.Canceled)
			assert.Contains(t, err.Error(), "sqlstore: take counters: ")
		})
	}
}

// TestPurgeCounters: Purge leaves counters alone; PurgeCounters deletes up
// to limit of those that expired before before, and the rows a refused
// Take created only to lock them are not left behind.
func TestPurgeCounters(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t, b.newDSN(t))
			for i := range 5 {
				res, err := st.Take(ctx, start, []verify.Take{{Key: fmt.Sprintf("old-%d", i), Delta: 1, Max: verify.NoLimit, ExpiresAt: start.Add(time.Minute)}})
				require.NoError(t, err)
				require.True(t, res.OK)
			}
			res, err := st.Take(ctx, start, []verify.Take{{Key: "new", Delta: 1, Max: verify.NoLimit, ExpiresAt: start.Add(time.Hour)}})
			require.NoError(t, err)
			require.True(t, res.OK)
			res, err = st.Take(ctx, start, []verify.Take{{Key: "refused", Delta: 2, Max: 1, ExpiresAt: start.Add(time.Hour)}})
			require.NoError(t, err)
			require.False(t, res.OK)
			assert.Equal(t, 6, countRows(t, st, "counters"), "a refused take leaves no row")

			later := start.Add(10 * time.Minute)
			n, err := st.Purge(ctx, later, 100)
			require.NoError(t, err)
			assert.Zero(t, n)
			assert.Equal(t, 6, countRows(t, st, "counters"), "Purge leaves counters alone")

			n, err = st.PurgeCounters(ctx, later, 3)
			require.NoError(t, err)
			assert.Equal(t, 3, n)
			n, err = st.PurgeCounters(ctx, later, 3)
			require.NoError(t, err)
			assert.Equal(t, 2, n)
			n, err = st.PurgeCounters(ctx, later, 3)
			require.NoError(t, err)
			assert.Zero(t, n)
			c, err := st.GetCounter(ctx, "new", later)
			require.NoError(t, err)
			assert.Equal(t, int64(1), c.Value)
		})
	}
}

func countRows(t *testing.T, st *sqlstore.Store, table string) int {
	t.Helper()
	var n int
	require.NoError(t, st.DB().QueryRow(`SELECT COUNT(*) FROM `+table).Scan(&n))
	return n
}

// TestCountSendCooldownAcrossStores: Resends racing on three Stores after
// the cooldown are counted once, and none is counted within it.
func TestCountSendCooldownAcrossStores(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := b.newDSN(t)
			stores := []*sqlstore.Store{open(t, dsn), open(t, dsn), open(t, dsn)}
			require.NoError(t, stores[0].CreateVerification(ctx, verify.VerificationRecord{
				ID: "v1", FlowID: "f", Status: verify.StatusSent, To: ana, MaxAttempts: 5, Sends: 1,
				LastSentAt: start, CreatedAt: start, ExpiresAt: start.Add(time.Hour),
			}, nil))
			const cooldown = time.Minute
			race := func(cooldown time.Duration, now time.Time) (counted int32) {
				var n atomic.Int32
				runConcurrently(30, func(i int) {
					_, ok, err := stores[i%len(stores)].CountSend(ctx, "v1", 10, cooldown, now)
					assert.NoError(t, err)
					if ok {
						n.Add(1)
					}
				})
				return n.Load()
			}
			assert.Zero(t, race(cooldown, start.Add(59*time.Second)), "within the cooldown")
			assert.Equal(t, int32(1), race(cooldown, start.Add(cooldown)), "once the cooldown has passed")
			v, err := stores[1].GetVerification(ctx, "v1")
			require.NoError(t, err)
			assert.Equal(t, 2, v.Sends)
			assert.Equal(t, start.Add(cooldown), v.LastSentAt)

			// Without a cooldown every send up to max is counted.
			assert.Equal(t, int32(8), race(0, start.Add(cooldown)))
		})
	}
}

// TestMigrateDelays: the migration that adds counters.not_before and
// verifications.last_sent_at sets last_sent_at of open verifications to
// their creation and leaves ended ones NULL; rows written afterwards the
// way engines from before it write them (without the new columns) read
// as no cooldown and no delay.
func TestMigrateDelays(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t, b.newDSN(t), sqlstore.WithoutMigrate())
			delays := map[sqlstore.Dialect]int{sqlstore.SQLite: 6, sqlstore.Postgres: 5}[st.Dialect()]
			require.NoError(t, st.MigrateTo(ctx, delays-1))
			pg := st.Dialect() == sqlstore.Postgres
			tv := func(t time.Time) any {
				if pg {
					return t
				}
				return t.UnixMicro()
			}
			insertOld := func(id, status string, ended any) {
				args := []any{id, status, tv(start), tv(start.Add(time.Hour)), ended}
				q := `INSERT INTO verifications (id, status, created_at, expires_at, ended_at, flow_id, foreign_id,
					to_phone, to_email, ip_address, brand, language, fallback_language, charset, code_length,
					attempts, max_attempts, sends, steps, allowed_ips)
					VALUES ($1, $2, $3, $4, $5, 'f', '', '+4712345678', '', '', 'Acme', 'en', 'en', 0, 6, 0, 5, 1, '[]', 'null')`
				_, err := st.DB().ExecContext(ctx, q, args...)
				require.NoError(t, err)
			}
			insertOld("open", "sent", nil)
			insertOld("ended", "verified", tv(start.Add(time.Minute)))
			_, err := st.DB().ExecContext(ctx, `INSERT INTO counters (name, value, updated_at, expires_at) VALUES ('c', 2, $1, $2)`,
				tv(start), tv(start.Add(time.Hour)))
			require.NoError(t, err)

			require.NoError(t, st.Migrate(ctx))
			v, err := st.GetVerification(ctx, "open")
			require.NoError(t, err)
			assert.Equal(t, start, v.LastSentAt, "an open verification's first send was at its creation")
			v, err = st.GetVerification(ctx, "ended")
			require.NoError(t, err)
			assert.Zero(t, v.LastSentAt)
			c, err := st.GetCounter(ctx, "c", start)
			require.NoError(t, err)
			assert.Equal(t, verify.Counter{Value: 2, UpdatedAt: start, ExpiresAt: start.Add(time.Hour)}, c)

			// An engine from before the migration writes no last_sent_at:
			// no cooldown holds the next send back.
			insertOld("old-engine", "sent", nil)
			_, counted, err := st.CountSend(ctx, "old-engine", 5, time.Hour, start.Add(time.Second))
			require.NoError(t, err)
			assert.True(t, counted)
			_, counted, err = st.CountSend(ctx, "open", 5, time.Hour, start.Add(time.Second))
			require.NoError(t, err)
			assert.False(t, counted, "the backfilled last_sent_at holds the cooldown")
		})
	}
}

// TestMigrateDeliverySteps: SQLite's migration delivery_steps fills the
// steps mask of the verifications stored before it from their deliveries,
// so that Trends counts their steps and resends.
func TestMigrateDeliverySteps(t *testing.T) {
	ctx := context.Background()
	st := open(t, backends[0].newDSN(t), sqlstore.WithoutMigrate())
	require.Equal(t, sqlstore.SQLite, st.Dialect())
	require.NoError(t, st.MigrateTo(ctx, 9))
	for i, steps := range [][]int{{0}, {0, 1}, {0, -1, -1}, {0, 1, 2}, nil} {
		id := fmt.Sprintf("v%d", i)
		_, err := st.DB().ExecContext(ctx, `INSERT INTO verifications (id, status, created_at, expires_at, flow_id, foreign_id,
			to_phone, to_email, ip_address, brand, language, fallback_language, charset, code_length,
			attempts, max_attempts, sends, steps, allowed_ips)
			VALUES ($1, 'sent', $2, $3, 'f', '', '+4712345678', '', '', 'Acme', 'en', 'en', 0, 6, 0, 5, 1, '[]', '[]')`,
			id, start.Add(time.Duration(i)*time.Second).UnixMicro(), start.Add(time.Hour).UnixMicro())
		require.NoError(t, err)
		for j, step := range steps {
			_, err := st.DB().ExecContext(ctx, `INSERT INTO deliveries (id, verification_id, step, channel, sender, status,
				provider_id, error, created_at, updated_at) VALUES ($1, $2, $3, 'sms', '', 'sent', '', '', $4, $4)`,
				fmt.Sprintf("%s-%d", id, j), id, step, start.UnixMicro())
			require.NoError(t, err)
		}
	}
	require.NoError(t, st.Migrate(ctx))
	tr, err := st.Trends(ctx, verify.TrendQuery{Query: verify.Query{From: start, To: start.Add(time.Hour)}, Bucket: time.Hour})
	require.NoError(t, err)
	assert.Equal(t, []int{4, 2, 1}, tr.Steps, "four sent at step 0, two at step 1, one at step 2")
	assert.Equal(t, 1, tr.Resends, "one resent, twice")
}

// TestRefusedCheckCostsAsACount: a refused Take is the same work whatever
// its Deltas: a check of one counter (Delta 0) and a count on it each run
// the same statement, which locks the row, then Take's transaction (on
// SQLite two writes in the group commit); with two counters, the
// transaction alone; on PostgreSQL each is one call of the Takes'
// combiner, and both wait for another transaction's lock on the row.
// Nothing is written. An engine whose Counters these are then refuses a
// right code and a wrong one for a locked-out recipient alike.
func TestRefusedCheckCostsAsACount(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := open(t, b.newDSN(t))
			ctx := context.Background()
			now := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
			exp := now.Add(time.Hour)
			res, err := st.Take(ctx, now, []verify.Take{{Key: "fail:x", Delta: 3, Max: 3, ExpiresAt: exp}})
			require.NoError(t, err)
			require.True(t, res.OK)
			locked := verify.Counter{Value: 3, UpdatedAt: now, ExpiresAt: exp}
			cost := func(takes ...verify.Take) [2]int64 {
				_, w0, _ := st.GroupCommits()
				_, c0 := st.Combined()
				res, err := st.Take(ctx, now, takes)
				require.NoError(t, err)
				require.False(t, res.OK, "refused: the counter is at 3")
				assert.Equal(t, time.Hour, res.RetryAfter)
				_, w1, _ := st.GroupCommits()
				_, c1 := st.Combined()
				got, err := st.GetCounter(ctx, "fail:x", now)
				require.NoError(t, err)
				assert.Equal(t, locked, got, "a refused Take writes nothing")
				return [2]int64{w1 - w0, c1 - c0}
			}
			check := cost(verify.Take{Key: "fail:x", Delta: 0, Max: 2})
			count := cost(verify.Take{Key: "fail:x", Delta: 1, Max: 3, ExpiresAt: exp})
			assert.Equal(t, count, check, "one counter: a refused check costs what a refused count does (writes, combined calls)")
			check2 := cost(verify.Take{Key: "fail:x", Delta: 0, Max: 2}, verify.Take{Key: "conv:ok:x", Delta: 0, Max: verify.NoLimit})
			count2 := cost(verify.Take{Key: "fail:x", Delta: 1, Max: 3, ExpiresAt: exp}, verify.Take{Key: "conv:ok:x", Delta: 0, Max: verify.NoLimit})
			assert.Equal(t, count2, check2, "two counters: the same")
			if _, _, ok := st.GroupCommits(); ok {
				assert.Equal(t, int64(2), check[0], "SQLite, one counter: the locking statement, then the transaction")
				assert.Equal(t, int64(1), check2[0], "SQLite, two counters: the transaction")
			} else {
				assert.Equal(t, int64(1), check[1], "PostgreSQL: through the combiner")
				assert.Equal(t, int64(1), check2[1], "PostgreSQL: through the combiner")
				// Both lock the counter's row first: another transaction
				// holding it holds up a check as it does a count.
				tx, err := st.DB().BeginTx(ctx, nil)
				require.NoError(t, err)
				defer tx.Rollback()
				_, err = tx.ExecContext(ctx, `SELECT value FROM counters WHERE name = 'fail:x' FOR UPDATE`)
				require.NoError(t, err)
				for _, tk := range []verify.Take{{Key: "fail:x", Delta: 0, Max: 2}, {Key: "fail:x", Delta: 1, Max: 3, ExpiresAt: exp},
					{Key: "fail:x", Delta: 5, Max: 3, ExpiresAt: exp}} {
					short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
					_, err := st.Take(short, now, []verify.Take{tk})
					cancel()
					assert.Error(t, err, "Delta %d waits for the row's lock", tk.Delta)
					// Its first statement already does.
					short, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
					_, err = st.CountOne(short, tk, now)
					cancel()
					assert.Error(t, err, "Delta %d: the first statement waits for the row's lock", tk.Delta)
				}
			}
		})
	}
}
