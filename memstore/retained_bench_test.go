package memstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/openverify/verify"
	"github.com/openverify/verify/memstore"
)

// codeKeeper is a channel that remembers the last code it sent, and gives
// each message a provider ID of its own, as Twilio's 34-character SIDs.
type codeKeeper struct {
	mu   sync.Mutex
	code string
	n    int
}

func (*codeKeeper) Name() string { return "sms" }
func (c *codeKeeper) Send(_ context.Context, m verify.Message) (verify.Receipt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.code = m.Code
	c.n++
	return verify.Receipt{ProviderID: fmt.Sprintf("SM%032x", c.n)}, nil
}

// BenchmarkRetained measures the memory memstore keeps per verification
// once it has ended, as a service retaining them for reports holds them
// (30 days of them, say): each of b.N verifications is sent (one SMS step
// on a flow with an SMS fallback; its own recipient, foreign ID and
// provider message ID), delivered and verified through the engine, and the
// live heap grows by "B/retained" for each. Run it with
// -benchtime 1000000x for the figure at a million.
func BenchmarkRetained(b *testing.B) {
	ctx := context.Background()
	st := memstore.New()
	ch := &codeKeeper{}
	eng, err := verify.New(st, verify.WithChannels(ch), verify.WithSecret([]byte("0123456789abcdef0123456789abcdef")),
		verify.WithLogger(slog.New(slog.DiscardHandler)), verify.WithProtection(verify.NoProtection()))
	if err != nil {
		b.Fatal(err)
	}
	_, err = eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true, Brand: "Acme", Duplicates: verify.DuplicateAllow,
		Steps: []verify.Step{{Channel: "sms", From: "ACME"}, {Channel: "sms", From: "ACME", After: 60e9}}})
	if err != nil {
		b.Fatal(err)
	}
	before := liveHeap()
	for i := 0; b.Loop(); i++ {
		v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: phone(i)}, IPAddress: "203.0.113.7",
			ForeignID: "order-" + strconv.Itoa(1000000+i)})
		if err != nil {
			b.Fatal(err)
		}
		if err := eng.ReportDelivery(ctx, v.ID+"-0", verify.DeliveryDelivered, ""); err != nil {
			b.Fatal(err)
		}
		if _, err := eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: ch.code}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(liveHeap()-before)/float64(b.N), "B/retained")
	runtime.KeepAlive(st)
}

// phone is the i-th of many Norwegian mobile numbers.
func phone(i int) string {
	b := []byte("+4790000000")
	for j := len(b) - 1; i > 0 && j > 3; j-- {
		b[j] = byte('0' + i%10)
		i /= 10
	}
	return string(b)
}

// liveHeap is the heap in use after a collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
