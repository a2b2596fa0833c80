package verify_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"log/slog"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/testutil"
	"github.com/openverify/verify/memstore"
)

// cryptoFloor is the bare work of a verification pair with no engine and
// no store logic: a random six-digit code, a UUID, the code's HMAC and its
// AES-GCM-sealed copy, one map insert; then one map lookup and the HMAC
// compared in constant time. Whatever the engine spends beyond it on a
// Send and a Check (validation, protections, the store's records, events)
// is its overhead, which BenchmarkPairVsFloor reports as a ratio.
type cryptoFloor struct {
	key  []byte
	aead cipher.AEAD
	mu   sync.Mutex
	m    map[string]floorRecord
}

type floorRecord struct{ hash, sealed []byte }

func newCryptoFloor(b testing.TB) *cryptoFloor {
	block, err := aes.NewCipher(secret)
	if err != nil {
		b.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	return &cryptoFloor{key: secret, aead: aead, m: make(map[string]floorRecord)}
}

func (f *cryptoFloor) mac(id string, code []byte) []byte {
	h := hmac.New(sha256.New, f.key)
	h.Write([]byte(id))
	h.Write(code)
	return h.Sum(nil)
}

// pair sends and checks one code, as the floor.
func (f *cryptoFloor) pair(b testing.TB) {
	var raw [6]byte
	rand.Read(raw[:])
	code := make([]byte, 6)
	for i, r := range raw {
		code[i] = '0' + r%10
	}
	id := uuid.NewString()
	nonce := make([]byte, f.aead.NonceSize(), f.aead.NonceSize()+len(code)+f.aead.Overhead())
	rand.Read(nonce)
	rec := floorRecord{hash: f.mac(id, code), sealed: f.aead.Seal(nonce, nonce, code, []byte(id))}
	f.mu.Lock()
	f.m[id] = rec
	f.mu.Unlock()

	f.mu.Lock()
	got, ok := f.m[id]
	f.mu.Unlock()
	if !ok || !hmac.Equal(got.hash, f.mac(id, code)) {
		b.Fatal("the floor's own check failed")
	}
}

// BenchmarkPairVsFloor measures a Send and a Check on memstore (no
// protections, no fallback steps) against the bare crypto work of a pair
// (see cryptoFloor), the two run in alternating rounds in one benchmark
// (see testutil.Alternate), so that the growing heaps and whatever else
// drifts in a run fall on both. It reports the engine's time and
// allocations as multiples of the floor's ("x-floor", "allocs-x-floor"),
// and the floor's own ("floor-ns/op", "floor-allocs/op"); ns/op and
// allocs/op are the engine's.
func BenchmarkPairVsFloor(b *testing.B) {
	pair := newEnginePair(b)
	f := newCryptoFloor(b)
	b.ReportAllocs()
	rates := testutil.Alternate(b, 4,
		func(n int) {
			for range n {
				pair()
			}
		},
		func(n int) {
			for range n {
				f.pair(b)
			}
		})
	engine, floor := rates[0], rates[1]
	b.ReportMetric(1e9/floor.PerSecond, "floor-ns/op")
	b.ReportMetric(floor.AllocsPerOp, "floor-allocs/op")
	b.ReportMetric(floor.Ratio(engine), "x-floor")
	b.ReportMetric(engine.AllocsPerOp/floor.AllocsPerOp, "allocs-x-floor")
}

// newEnginePair returns a function that sends a code and checks it on
// memstore, without protections or fallback steps.
func newEnginePair(tb testing.TB) func() {
	ch := &lastCode{}
	eng, err := verify.New(memstore.New(), verify.WithChannels(ch), verify.WithSecret(secret),
		verify.WithLogger(slog.New(slog.DiscardHandler)), verify.WithProtection(verify.NoProtection()))
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if _, err := eng.CreateFlow(ctx, verify.Flow{Name: "bench", Default: true,
		Duplicates: verify.DuplicateAllow, Steps: []verify.Step{{Channel: "sms"}}}); err != nil {
		tb.Fatal(err)
	}
	return func() {
		v, err := eng.Send(ctx, benchTo)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: ch.code}); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestPairAllocations: a Send and a Check on memstore allocate at most 1.3
// times what the bare crypto work of a pair does (BenchmarkPairVsFloor's
// allocs-x-floor). Counts of allocations are exact, unlike times, so this
// is a test. The race detector makes pooled work allocate: .ci/run runs
// this test without it too.
func TestPairAllocations(t *testing.T) {
	if verify.RaceEnabled {
		t.Skip("allocation counts differ under the race detector; .ci/run runs this test without it")
	}
	f := newCryptoFloor(t)
	floor := testing.AllocsPerRun(1000, func() { f.pair(t) })
	engine := testing.AllocsPerRun(1000, newEnginePair(t))
	t.Logf("a pair: engine %.1f allocations, floor %.1f (%.2f×)", engine, floor, engine/floor)
	if engine > 1.3*floor {
		t.Errorf("a pair allocates %.1f times; at most 1.3 × the floor's %.1f = %.1f", engine, floor, 1.3*floor)
	}
}

// lastCode is a channel that keeps the code it was last handed, and
// allocates nothing: the floor has no channel to pay for.
type lastCode struct{ code string }

func (*lastCode) Name() string { return "sms" }
func (c *lastCode) Send(_ context.Context, m verify.Message) (verify.Receipt, error) {
	c.code = m.Code
	return verify.Receipt{}, nil
}
