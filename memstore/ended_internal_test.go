package memstore

import (
	"reflect"
	"testing"
	"time"

	"github.com/openverify/verify"
)

// TestEncodedRecordRoundTrip: every field of an ended verification but its
// sealed code reads back as it was written, times in UTC and to the
// nanosecond, before and after the creation time, zero or not; Purge's
// reads of EndedAt and the idempotency key agree; and a late receipt that
// moves a delivery forward changes it alone, keeping its provider ID when
// the receipt has none, while one that would move it back changes nothing.
func TestEncodedRecordRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.FixedZone("CET", 3600))
	steps := []verify.Step{{Channel: "sms", From: "ACME"}, {Channel: "email", After: time.Minute}}
	r := verify.VerificationRecord{
		ID: "v1", FlowID: "flow-1", ForeignID: "order-7", Status: verify.StatusVerified,
		To: verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}, IPAddress: "203.0.113.7",
		IdempotencyKey: "key-1", RequestHash: []byte{1, 2, 3}, Exclusive: true,
		Brand: "Acme", Language: "pt-BR", FallbackLanguage: "en",
		CodeHash: []byte("0123456789abcdef0123456789abcdef"), SealedCode: []byte("sealed"),
		Charset: verify.Alphanumeric, CodeLength: 8, Attempts: 2, MaxAttempts: 5, Sends: 3,
		LastSentAt: at.Add(30 * time.Second), Steps: steps, AllowedIPs: []string{"203.0.113.0/24", "2001:db8::/32"},
		CreatedAt: at, ExpiresAt: at.Add(10 * time.Minute), VerifiedAt: at.Add(time.Minute), EndedAt: at.Add(time.Minute),
		Checks: []verify.CheckAttempt{{At: at.Add(40 * time.Second), Right: false}, {At: at.Add(time.Minute), Right: true}},
		Deliveries: []verify.DeliveryRecord{
			{ID: "v1-0", VerificationID: "v1", Step: 0, Channel: "sms", From: "ACME", Status: verify.DeliveryDelivered,
				ProviderID: "SM123", CreatedAt: at, UpdatedAt: at.Add(2 * time.Second)},
			{ID: "v1-r", VerificationID: "v1", Step: -1, Channel: "email", Status: verify.DeliveryFailed,
				Error: "mailbox full", CreatedAt: at.Add(-time.Millisecond), UpdatedAt: at.Add(-time.Millisecond)},
		},
	}
	var sh shard
	e := sh.compactRecord(&r)
	want := r
	want.SealedCode = nil
	for _, p := range []*time.Time{&want.LastSentAt, &want.CreatedAt, &want.ExpiresAt, &want.VerifiedAt, &want.EndedAt} {
		*p = p.UTC()
	}
	want.Checks = []verify.CheckAttempt{{At: r.Checks[0].At.UTC()}, {At: r.Checks[1].At.UTC(), Right: true}}
	want.Deliveries = []verify.DeliveryRecord{r.Deliveries[0], r.Deliveries[1]}
	for i := range want.Deliveries {
		want.Deliveries[i].CreatedAt, want.Deliveries[i].UpdatedAt = want.Deliveries[i].CreatedAt.UTC(), want.Deliveries[i].UpdatedAt.UTC()
	}
	if got := e.expand("v1"); !reflect.DeepEqual(got, want) {
		t.Fatalf("read back:\n got %+v\nwant %+v", got, want)
	}
	if !e.endedAt().Equal(r.EndedAt) || e.idempotencyKey() != "key-1" {
		t.Fatalf("Purge's reads: %v %q", e.endedAt(), e.idempotencyKey())
	}

	// A receipt moving the first delivery forward, without a provider ID.
	late := verify.DeliveryRecord{ID: "v1-0", VerificationID: "v1", Status: verify.DeliveryFailed, Error: "expired",
		UpdatedAt: at.Add(time.Hour)}
	if _, changed := e.recordDelivery("v1", late); changed {
		t.Fatal("delivered moved back to failed")
	}
	r.Deliveries[1].Status = verify.DeliverySent
	e = sh.compactRecord(&r)
	late = verify.DeliveryRecord{ID: "v1-r", VerificationID: "v1", Status: verify.DeliveryDelivered, UpdatedAt: at.Add(time.Hour)}
	e2, changed := e.recordDelivery("v1", late)
	if !changed {
		t.Fatal("sent did not move to delivered")
	}
	got := e2.expand("v1").Deliveries
	if got[1].Status != verify.DeliveryDelivered || !got[1].UpdatedAt.Equal(late.UpdatedAt) || got[1].Error != "" {
		t.Fatalf("the moved delivery: %+v", got[1])
	}
	if got[0].ProviderID != "SM123" || got[0].Status != verify.DeliveryDelivered {
		t.Fatalf("the other delivery changed: %+v", got[0])
	}
	if e.expand("v1").Deliveries[1].Status != verify.DeliverySent {
		t.Fatal("the earlier encoding changed")
	}

	// A record with nothing optional.
	bare := verify.VerificationRecord{ID: "v2", Status: verify.StatusExpired, CreatedAt: at, ExpiresAt: at, EndedAt: at}
	gotBare := sh.compactRecord(&bare).expand("v2")
	if gotBare.AllowedIPs != nil || gotBare.Checks != nil || gotBare.Deliveries != nil || gotBare.CodeHash != nil ||
		!gotBare.VerifiedAt.IsZero() || !gotBare.LastSentAt.IsZero() || gotBare.IdempotencyKey != "" {
		t.Fatalf("a bare record read back: %+v", gotBare)
	}
}
