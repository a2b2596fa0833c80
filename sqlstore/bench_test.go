package sqlstore_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
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
// Send and Check from 32 concurrent callers. The engine runs with
// verify.NoProtection, so that the figures are the store's; the last
// benchmark adds the default protections (rate limits, lockout and
// pumping-guard counters, also kept in the store). Run it with
//
//	VERIFY_POSTGRES_DSN=postgres://... go test -run '^$' -bench . ./sqlstore/
func BenchmarkStore(b *testing.B) {
	for _, bk := range backends {
		b.Run(bk.name, func(b *testing.B) {
			ctx := context.Background()
			st := open(b, bk.newDSN(b))
			newEngine := func(p verify.Protection) *verify.Engine {
				eng, err := verify.New(st, verify.WithChannels(nopChannel{}), verify.WithSecret(testSecret),
					verify.WithClock(newClock()), verify.WithLogger(quietLog), verify.WithProtection(p))
				require.NoError(b, err)
				return eng
			}
			eng := newEngine(verify.NoProtection())
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
			parallel := func(eng *verify.Engine) func(b *testing.B) {
				return func(b *testing.B) {
					procs := runtime.GOMAXPROCS(0)
					b.SetParallelism((parallelCallers + procs - 1) / procs)
					var failures atomic.Int64
					b.ReportAllocs()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if !sendAndCheck(b, eng, req()) {
								failures.Add(1)
							}
						}
					})
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
					if failures.Load() > 0 {
						b.Fatalf("%d of %d pairs failed", failures.Load(), b.N)
					}
				}
			}
			b.Run("send+check-parallel32", parallel(eng))
			b.Run("send+check-parallel32-protected", parallel(newEngine(verify.DefaultProtection())))
		})
	}
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
