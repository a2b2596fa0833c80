package memstore

import (
	"slices"
	"testing"
	"time"

	"github.com/openverify/verify"
)

// TestOpenSet: the set keeps one ID without a map and any number with one,
// and removing the ID it keeps inline promotes another.
func TestOpenSet(t *testing.T) {
	var o openSet
	if !o.empty() || len(o.appendTo(nil)) != 0 {
		t.Fatal("the zero openSet is not empty")
	}
	o.add("")
	o.add("")
	if o.empty() || !slices.Equal(o.appendTo(nil), []string{""}) {
		t.Fatalf("an empty ID is an ID: %v", o.appendTo(nil))
	}
	o.remove("")
	for _, id := range []string{"a", "b", "c", "b"} {
		o.add(id)
	}
	got := o.appendTo(nil)
	slices.Sort(got)
	if !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("after adding a, b, c, b: %v", got)
	}
	o.remove("a") // the inline one
	o.remove("x") // absent
	got = o.appendTo(nil)
	slices.Sort(got)
	if !slices.Equal(got, []string{"b", "c"}) || o.empty() {
		t.Fatalf("after removing a: %v", got)
	}
	o.remove("b")
	o.remove("c")
	if !o.empty() || len(o.appendTo(nil)) != 0 {
		t.Fatalf("after removing every ID: %v", o.appendTo(nil))
	}
}

// TestCompactOneDelivery: a record with one delivery, encoded, reads back
// whole, and a late receipt's new delivery is added beside it without
// touching the first.
func TestCompactOneDelivery(t *testing.T) {
	at := time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)
	d := verify.DeliveryRecord{ID: "d1", VerificationID: "v1", Channel: "sms", Status: verify.DeliverySent, CreatedAt: at, UpdatedAt: at}
	r := verify.VerificationRecord{ID: "v1", FlowID: "f", Status: verify.StatusVerified, CreatedAt: at, ExpiresAt: at.Add(time.Minute),
		EndedAt: at, VerifiedAt: at, Deliveries: []verify.DeliveryRecord{d}}
	var sh shard
	e := sh.compactRecord(&r)
	got := e.expand("v1")
	if len(got.Deliveries) != 1 || got.Deliveries[0] != d {
		t.Fatalf("deliveries read back: %+v", got.Deliveries)
	}
	second := verify.DeliveryRecord{ID: "d2", VerificationID: "v1", Step: 1, Channel: "email", Status: verify.DeliverySent, CreatedAt: at, UpdatedAt: at}
	e, recorded := e.recordDelivery("v1", second)
	if !recorded {
		t.Fatal("a new delivery on an ended verification was not recorded")
	}
	got = e.expand("v1")
	if len(got.Deliveries) != 2 || got.Deliveries[0] != d || got.Deliveries[1] != second {
		t.Fatalf("deliveries after a late one: %+v", got.Deliveries)
	}
}
