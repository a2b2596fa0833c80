package sqlstore_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/testutil"
	"github.com/openverify/verify/rediscounters"
	"github.com/openverify/verify/sqlstore"
)

// nopChannel accepts every message and does nothing with it.
type nopChannel struct{}

func (nopChannel) Name() string { return "sms" }
func (nopChannel) Send(context.Context, verify.Message) (verify.Receipt, error) {
	return verify.Receipt{}, nil
}

// parallelCallers is how many goroutines the parallel benchmark runs.
const parallelCallers = 32

// BenchmarkStore measures the engine's Send and Check on each database,
// next to one raw INSERT round trip measured in the same run, and pairs of
// Send and Check from 32 concurrent callers in alternating rounds with the
// floor (see floor) by the same callers, reporting each as a fraction of
// it ("of-floor"), and the protected ones also of the unprotected engine
// in the same rounds ("of-unprotected"). The engine runs with verify.NoProtection, so that the
// figures are the store's; the protected benchmarks add the default
// protections (lockout and pumping-guard counters kept in the store, the
// rate limits in the process or, "shared", in the store as several
// instances count them). Run it with
//
//	VERIFY_POSTGRES_DSN=postgres://... go test -run '^$' -bench . ./sqlstore/
func BenchmarkStore(b *testing.B) {
	for _, bk := range backends {
		b.Run(bk.name, func(b *testing.B) {
			ctx := context.Background()
			st := open(b, bk.newDSN(b))
			// The engines run on the real clock, as in service: under a
			// mock clock that stands still, every verification would have
			// one creation time, and its time-ordered ID and the indexes
			// on its times would take their inserts at random places, as
			// a busy store's never do.
			newEngine := func(p verify.Protection, opts ...verify.Option) *verify.Engine {
				eng, err := verify.New(st, append([]verify.Option{verify.WithChannels(nopChannel{}), verify.WithSecret(testSecret),
					verify.WithClock(clock.New()), verify.WithLogger(quietLog), verify.WithProtection(p)}, opts...)...)
				require.NoError(b, err)
				return eng
			}
			eng := newEngine(verify.NoProtection()) // unprotected
			_, err := eng.CreateFlow(ctx, verify.Flow{Name: "bench", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
			require.NoError(b, err)
			req := func() verify.SendRequest { return verify.SendRequest{To: someone(), Code: "123456"} }

			b.Run("raw-insert", func(b *testing.B) {
				ddl := `CREATE TABLE IF NOT EXISTS bench_raw (id TEXT PRIMARY KEY, body BLOB)`
				if st.Dialect() == sqlstore.Postgres {
					ddl = `CREATE TABLE IF NOT EXISTS bench_raw (id TEXT PRIMARY KEY, body BYTEA)`
				}
				_, err := st.DB().ExecContext(ctx, ddl)
				require.NoError(b, err)
				body := make([]byte, 32)
				prefix := randomHex(8) + "-"
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if _, err := st.DB().ExecContext(ctx, `INSERT INTO bench_raw (id, body) VALUES ($1, $2)`,
						prefix+strconv.Itoa(i), body); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("send", func(b *testing.B) {
				b.ReportAllocs()
				for range b.N {
					if _, err := eng.Send(ctx, req()); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("check", func(b *testing.B) {
				ids := make([]string, b.N)
				for i := range ids {
					v, err := eng.Send(ctx, req())
					require.NoError(b, err)
					ids[i] = v.ID
				}
				b.ReportAllocs()
				b.ResetTimer()
				for _, id := range ids {
					if _, err := eng.Check(ctx, verify.CheckRequest{VerifyID: id, Code: "123456"}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("send+check", func(b *testing.B) {
				b.ReportAllocs()
				for range b.N {
					sendAndCheck(b, eng, req())
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
			})
			// The floor: the least SQL a verification needs, on the same
			// table through the same driver, by the same 32 callers.
			f := newFloor(st)
			floorPairs := func(b *testing.B) func(int) { return parallelPairs(b, func() bool { return f.pair(b) }) }
			b.Run("floor-parallel32", func(b *testing.B) {
				b.ReportAllocs()
				rate := testutil.Alternate(b, 1, floorPairs(b))[0]
				b.ReportMetric(rate.PerSecond, "pairs/s")
			})
			// Each engine runs in alternating rounds with the floor and,
			// protected, with the unprotected engine (testutil.Alternate),
			// so that the tables each fills, the database's warming and
			// the machine's neighbours fall on all of them alike; each
			// reports its rate as a fraction of theirs in the same rounds.
			enginePairs := func(b *testing.B, eng *verify.Engine) func(int) {
				return parallelPairs(b, func() bool { return sendAndCheck(b, eng, req()) })
			}
			parallel := func(subject *verify.Engine) func(b *testing.B) {
				return func(b *testing.B) {
					protected := subject != eng
					var (
						statements, calls int64 // the subject's (see pgbatch.go)
						batches, writes   int64 // the subject's group commits
					)
					pairs := enginePairs(b, subject)
					subject := func(n int) {
						b0, w0, _ := st.GroupCommits()
						s0, c0 := st.Combined()
						pairs(n)
						b1, w1, _ := st.GroupCommits()
						s1, c1 := st.Combined()
						batches, writes, statements, calls = batches+b1-b0, writes+w1-w0, statements+s1-s0, calls+c1-c0
					}
					contenders := []func(int){subject, floorPairs(b)}
					if protected {
						contenders = append(contenders, enginePairs(b, eng))
					}
					b.ReportAllocs()
					rates := testutil.Alternate(b, 4, contenders...)
					b.ReportMetric(rates[0].PerSecond, "pairs/s")
					b.ReportMetric(rates[0].Ratio(rates[1]), "of-floor")
					if protected {
						b.ReportMetric(rates[0].Ratio(rates[2]), "of-unprotected")
					}
					if statements > 0 {
						// How many calls a PostgreSQL statement carries,
						// and how many a pair makes.
						b.ReportMetric(float64(calls)/float64(statements), "calls/statement")
						b.ReportMetric(float64(calls)/float64(b.N), "calls/pair")
					}
					if _, _, grouped := st.GroupCommits(); grouped {
						// How many writes a pair makes, and how many a
						// commit carries (SQLite's group commit).
						b.ReportMetric(float64(writes)/float64(b.N), "writes/pair")
						b.ReportMetric(float64(writes)/float64(max(batches, 1)), "writes/commit")
					}
				}
			}
			b.Run("send+check-parallel32", parallel(eng))
			b.Run("send+check-parallel32-protected", parallel(newEngine(verify.DefaultProtection())))
			// As the README configures several instances: the rate limits
			// counted in the database too.
			b.Run("send+check-parallel32-protected-shared", parallel(newEngine(verify.DefaultProtection(),
				verify.WithLimiter(verify.NewStoreLimiter(st)))))
			// The same with the counters on Redis ($VERIFY_REDIS_ADDR), the
			// verifications still in the database.
			if addr := os.Getenv("VERIFY_REDIS_ADDR"); addr != "" {
				rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 2 * parallelCallers})
				defer rdb.Close()
				rc := rediscounters.New(rdb, rediscounters.WithPrefix("{bench-"+randomHex(8)+"}:"))
				b.Run("send+check-parallel32-protected-redis", parallel(newEngine(verify.DefaultProtection(),
					verify.WithCounters(rc), verify.WithLimiter(verify.NewStoreLimiter(rc)))))
			}
		})
	}
}

// parallelPairs returns a function that makes n pairs with pair, spread
// over parallelCallers goroutines, and fails b if any pair failed.
func parallelPairs(b *testing.B, pair func() bool) func(n int) {
	return func(n int) {
		var (
			next, failures atomic.Int64
			wg             sync.WaitGroup
		)
		for range min(parallelCallers, n) {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					if !pair() {
						failures.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if failures.Load() > 0 {
			b.Fatalf("%d of %d pairs failed", failures.Load(), n)
		}
	}
}

// floor is the least SQL a verification needs, on the store's own
// verifications table through its own driver: one INSERT of the row at
// Send, and at Check one conditional UPDATE that counts the attempt,
// compares the code's hash and ends it, returning what it changed. No
// deliveries, steps, counters or transactions: what the engine does
// beyond this is its price for fallback, receipts and protection. Its IDs
// are time-ordered, as the engine's are, and its times the clock's.
type floor struct {
	st     *sqlstore.Store
	insert string
	check  string
	tv     func(time.Time) any
}

func newFloor(st *sqlstore.Store) *floor {
	f := &floor{st: st,
		insert: `INSERT INTO verifications (id, flow_id, foreign_id, status, to_phone, to_email, ip_address,
			brand, language, fallback_language, code_hash, sealed_code, charset, code_length, attempts,
			max_attempts, sends, steps, allowed_ips, created_at, expires_at, last_sent_at)
			VALUES ($1, 'floor', '', 'sent', $2, '', '', '', 'en', 'en', $3, $4, 0, 6, 0, 5, 1, '[]', '[]', $5, $6, $5)`,
		check: `UPDATE verifications SET attempts = attempts + 1, status = 'verified', verified_at = $2, ended_at = $2,
			sealed_code = NULL
			WHERE id = $1 AND status IN ('pending', 'sent', 'delivered') AND expires_at > $2
				AND attempts < max_attempts AND code_hash = $3
			RETURNING status, attempts`,
		tv: func(t time.Time) any { return t.UnixMicro() },
	}
	if st.Dialect() == sqlstore.Postgres {
		f.tv = func(t time.Time) any { return t }
	}
	return f
}

// pair stores a verification and checks its code, as the floor.
func (f *floor) pair(b *testing.B) bool {
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7()).String() // time-ordered, as the engine's
	hash := []byte(randomHex(16))
	if _, err := f.st.DB().ExecContext(ctx, f.insert, id, someone().Phone, hash, []byte("sealed-code-bytes"),
		f.tv(time.Now()), f.tv(time.Now().Add(5*time.Minute))); err != nil {
		b.Error(err)
		return false
	}
	var (
		status   string
		attempts int
	)
	if err := f.st.DB().QueryRowContext(ctx, f.check, id, f.tv(time.Now()), hash).Scan(&status, &attempts); err != nil {
		b.Error(err)
		return false
	}
	return status == "verified"
}

// sendAndCheck sends a code and checks it, and reports whether both
// succeeded.
func sendAndCheck(b *testing.B, eng *verify.Engine, req verify.SendRequest) bool {
	ctx := context.Background()
	v, err := eng.Send(ctx, req)
	if err != nil {
		b.Error(err)
		return false
	}
	if _, err := eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: req.Code}); err != nil {
		b.Error(err)
		return false
	}
	return true
}

// BenchmarkTake measures one Counters.Take of one counter, as the engine's
// failure slot takes it before every Check: a count (a transaction that
// locks, decides and writes back), a refused count (locks, decides and
// rolls back) and a check (Delta 0: one read), next to one raw INSERT in
// the same run.
func BenchmarkTake(b *testing.B) {
	for _, bk := range backends {
		b.Run(bk.name, func(b *testing.B) {
			ctx := context.Background()
			st := open(b, bk.newDSN(b))
			b.Run("raw-insert", func(b *testing.B) {
				_, err := st.DB().ExecContext(ctx, `CREATE TABLE IF NOT EXISTS bench_raw (id TEXT PRIMARY KEY, n INTEGER)`)
				require.NoError(b, err)
				prefix := randomHex(8) + "-"
				for i := 0; b.Loop(); i++ {
					_, err := st.DB().ExecContext(ctx, `INSERT INTO bench_raw (id, n) VALUES ($1, $2)`, prefix+strconv.Itoa(i), i)
					require.NoError(b, err)
				}
			})
			run := func(take verify.Take, wantOK bool) func(b *testing.B) {
				return func(b *testing.B) {
					b.ReportAllocs()
					for i := 0; b.Loop(); i++ {
						t := take
						t.Key = "bench:" + strconv.Itoa(i%1000)
						res, err := st.Take(ctx, start, []verify.Take{t})
						require.NoError(b, err)
						if res.OK != wantOK {
							b.Fatalf("take %+v: OK = %v", t, res.OK)
						}
					}
				}
			}
			expires := start.Add(time.Hour)
			b.Run("count", run(verify.Take{Delta: 1, Max: verify.NoLimit, ExpiresAt: expires}, true))
			b.Run("refused", run(verify.Take{Delta: 1, Max: 0, ExpiresAt: expires}, false))
			b.Run("check", run(verify.Take{Delta: 0, Max: verify.NoLimit}, true))
		})
	}
}
