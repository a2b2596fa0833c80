package metrics_test

import (
	"context"
	"testing"
	"time"

	"github.com/openverify/verify"
	"github.com/openverify/verify/metrics"
)

// BenchmarkObserve measures the cost of one event, for the event types on
// the path of every verification, once its series exist.
func BenchmarkObserve(b *testing.B) {
	const flow = "3f1c9a4e-7d2b-4c51-9e0a-6b8d2f4c1a77"
	events := []verify.Event{
		{Type: verify.EventCreated, VerificationID: "v", FlowID: flow},
		{Type: verify.EventSent, VerificationID: "v", FlowID: flow, Channel: "sms", Latency: 120 * time.Millisecond},
		{Type: verify.EventDeliveryFailed, VerificationID: "v", FlowID: flow, Channel: "sms", Latency: 2 * time.Second},
		{Type: verify.EventCheckFailed, VerificationID: "v", FlowID: flow, ErrorCode: "E912"},
		{Type: verify.EventVerified, VerificationID: "v", FlowID: flow, Latency: 25 * time.Second},
		{Type: verify.EventExpired, VerificationID: "v"},
		{Type: verify.EventBlocked, FlowID: flow, ErrorCode: "E922", Reason: "pumping"},
	}
	ctx := context.Background()
	for _, ev := range events {
		b.Run(string(ev.Type), func(b *testing.B) {
			m := metrics.New()
			m.Observe(ctx, ev)
			b.ReportAllocs()
			for b.Loop() {
				m.Observe(ctx, ev)
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		m := metrics.New()
		for _, ev := range events {
			m.Observe(ctx, ev)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				m.Observe(ctx, events[i%len(events)])
				i++
			}
		})
	})
}
