package verify_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/openverify/verify"
	"github.com/openverify/verify/memstore"
)

// noopChannel accepts every message and, when keep is set, remembers the
// code per verification, so benchmarks measure the engine and the store
// alone.
type noopChannel struct {
	keep  bool
	codes sync.Map // verification ID -> code
}

func (*noopChannel) Name() string { return "sms" }
func (c *noopChannel) Send(_ context.Context, m verify.Message) (verify.Receipt, error) {
	if c.keep {
		c.codes.Store(m.VerificationID, m.Code)
	}
	return verify.Receipt{}, nil
}

func (c *noopChannel) take(id string) string {
	v, _ := c.codes.LoadAndDelete(id)
	return v.(string)
}

func benchEngine(b *testing.B) (*verify.Engine, *noopChannel) {
	eng, ch, _ := benchEngineClock(b)
	return eng, ch
}

func benchEngineClock(b *testing.B, opts ...verify.Option) (*verify.Engine, *noopChannel, *clock.Mock) {
	b.Helper()
	ch := &noopChannel{keep: true}
	clk := clock.NewMock()
	eng, err := verify.New(memstore.New(), append([]verify.Option{verify.WithChannels(ch), verify.WithSecret(secret),
		verify.WithLogger(slog.New(slog.DiscardHandler)), verify.WithClock(clk),
		verify.WithProtection(verify.NoProtection())}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := eng.CreateFlow(context.Background(), verify.Flow{Name: "bench", Default: true,
		Duplicates: verify.DuplicateAllow, Steps: []verify.Step{{Channel: "sms"}}}); err != nil {
		b.Fatal(err)
	}
	return eng, ch, clk
}

var benchTo = verify.SendRequest{To: verify.Recipient{Phone: "+4712345678"}}

// BenchmarkSend measures Send in a steady state: the store holds at most
// 10,000 verifications, as it does in service when expiry and retention
// purge old ones (which happens off the timer here).
func BenchmarkSend(b *testing.B) {
	eng, ch, clk := benchEngineClock(b, verify.WithRetention(time.Second))
	ch.keep = false
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := eng.Send(ctx, benchTo); err != nil {
			b.Fatal(err)
		}
		if i%10000 == 9999 {
			b.StopTimer()
			clk.Add(10 * time.Minute)
			if _, err := eng.ProcessDue(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := eng.Purge(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
}

// BenchmarkSendGrowingStore measures Send into a memstore that keeps every
// verification, so the store grows with b.N.
func BenchmarkSendGrowingStore(b *testing.B) {
	eng, ch := benchEngine(b)
	ch.keep = false
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eng.Send(ctx, benchTo); err != nil {
			b.Fatal(err)
		}
	}
}

// benchChecks measures Check on verifications made 10,000 at a time off the
// timer; after each batch the store is purged, as in BenchmarkSend.
func benchChecks(b *testing.B, right bool) {
	eng, ch, clk := benchEngineClock(b, verify.WithRetention(time.Second))
	ctx := context.Background()
	type pair struct{ id, code string }
	batch := make([]pair, 0, 10000)
	refill := func() {
		clk.Add(10 * time.Minute)
		if _, err := eng.ProcessDue(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := eng.Purge(ctx); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
		for range cap(batch) {
			v, err := eng.Send(ctx, benchTo)
			if err != nil {
				b.Fatal(err)
			}
			batch = append(batch, pair{v.ID, ch.take(v.ID)})
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%cap(batch) == 0 {
			b.StopTimer()
			refill()
			b.StartTimer()
		}
		p := batch[i%cap(batch)]
		if !right {
			p.code = "00000Z"
		}
		_, err := eng.Check(ctx, verify.CheckRequest{VerifyID: p.id, Code: p.code})
		if (err == nil) != right {
			b.Fatalf("check(right=%v): %v", right, err)
		}
	}
}

func BenchmarkCheck(b *testing.B)      { benchChecks(b, true) }
func BenchmarkCheckWrong(b *testing.B) { benchChecks(b, false) }

func BenchmarkSendCheckParallel(b *testing.B) {
	eng, ch := benchEngine(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			v, err := eng.Send(ctx, benchTo)
			if err != nil {
				b.Error(err)
				return
			}
			if _, err := eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: ch.take(v.ID)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSendProtected measures Send with the default protection on
// (limits, pumping counters, duplicate lookup), each send to another of
// 100,000 recipients over 5,000 number prefixes, the store purged (and an
// hour passed) every 5,000 sends off the timer.
func BenchmarkSendProtected(b *testing.B) {
	eng, ch, clk := benchEngineClock(b, verify.WithRetention(time.Second), verify.WithProtection(verify.Protection{}))
	ch.keep = false
	ctx := context.Background()
	reqs := make([]verify.SendRequest, 100000)
	for i := range reqs {
		// Spread over 10,000 number prefixes, as real traffic is.
		reqs[i] = verify.SendRequest{To: verify.Recipient{Phone: fmt.Sprintf("+47%04d%04d", 4000+i%5000, i/5000)},
			IPAddress: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := eng.Send(ctx, reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
		if i%5000 == 4999 {
			b.StopTimer()
			clk.Add(time.Hour)
			if _, err := eng.ProcessDue(ctx); err != nil {
				b.Fatal(err)
			}
			if _, err := eng.Purge(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
}
