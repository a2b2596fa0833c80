package memstore

import (
	"encoding/binary"
	"math"
	"slices"
	"time"
	"unsafe"

	"github.com/openverify/verify"
)

// Ended verifications are kept for reports, late checks and late receipts
// until Purge removes them: with a retention of days they are nearly all
// of a store, so they are kept compact. When a verification ends it moves
// from its shard's recs, as a *verify.VerificationRecord, to its done, as
// an endedRec: everything but its ID (done's key), its steps (shared with
// the other verifications of its flow) and its sealed code (gone) encoded
// in one byte slice, which holds no pointers, so that the garbage
// collector has one object to mark and nothing to scan in it. A read
// decodes it into a record again, with its times in UTC and its strings
// pointing into the slice, which is never written to once made (a late
// receipt makes a new one).

// endedRec is an ended verification without its ID: b as encode makes it,
// and its steps.
type endedRec struct {
	b     []byte
	steps []verify.Step // shared: never written into
}

// compactRecord returns r's compact form, sharing steps with earlier
// verifications of its flow through the shard's steps cache. The caller
// holds the shard's lock.
func (sh *shard) compactRecord(r *verify.VerificationRecord) endedRec {
	return endedRec{b: encode(r), steps: sh.sharedSteps(r.FlowID, r.Steps)}
}

// encode writes r, but for its ID, steps and sealed code, in the order
// expand reads it: EndedAt and the idempotency key first, for Purge.
func encode(r *verify.VerificationRecord) []byte {
	var w writer
	w.b = make([]byte, 0, 128+len(r.ForeignID)+len(r.To.Phone)+len(r.To.Email)+len(r.RequestHash)+len(r.CodeHash)+
		96*len(r.Deliveries)+10*len(r.Checks))
	created := nanos(r.CreatedAt)
	w.time(r.EndedAt, 0)
	w.str(r.IdempotencyKey)
	w.time(r.CreatedAt, 0)
	w.time(r.ExpiresAt, created)
	w.time(r.VerifiedAt, created)
	w.time(r.LastSentAt, created)
	w.int(int64(r.Attempts))
	w.int(int64(r.MaxAttempts))
	w.int(int64(r.Sends))
	w.int(int64(r.CodeLength))
	w.int(int64(r.Charset))
	w.bool(r.Exclusive)
	for _, s := range [...]string{string(r.Status), r.FlowID, r.ForeignID, r.To.Phone, r.To.Email, r.IPAddress,
		r.Brand, r.Language, r.FallbackLanguage} {
		w.str(s)
	}
	w.bytes(r.RequestHash)
	w.bytes(r.CodeHash)
	w.int(int64(len(r.AllowedIPs)))
	for _, ip := range r.AllowedIPs {
		w.str(ip)
	}
	w.int(int64(len(r.Checks)))
	for _, c := range r.Checks {
		w.time(c.At, created)
		w.bool(c.Right)
	}
	w.int(int64(len(r.Deliveries)))
	for i := range r.Deliveries {
		d := &r.Deliveries[i]
		for _, s := range [...]string{d.ID, d.Channel, d.From, d.ProviderID, d.Error, string(d.Status)} {
			w.str(s)
		}
		w.time(d.CreatedAt, created)
		w.time(d.UpdatedAt, created)
		w.int(int64(d.Step))
	}
	return w.b
}

// expand returns the record e keeps for the verification id.
func (e endedRec) expand(id string) verify.VerificationRecord {
	rd := reader{b: e.b}
	r := verify.VerificationRecord{ID: id, Steps: e.steps}
	r.EndedAt = rd.time(0)
	r.IdempotencyKey = rd.str()
	r.CreatedAt = rd.time(0)
	created := nanos(r.CreatedAt)
	r.ExpiresAt, r.VerifiedAt, r.LastSentAt = rd.time(created), rd.time(created), rd.time(created)
	r.Attempts, r.MaxAttempts, r.Sends, r.CodeLength = int(rd.int()), int(rd.int()), int(rd.int()), int(rd.int())
	r.Charset = verify.Charset(rd.int())
	r.Exclusive = rd.bool()
	r.Status = verify.Status(rd.str())
	r.FlowID, r.ForeignID, r.To.Phone, r.To.Email, r.IPAddress = rd.str(), rd.str(), rd.str(), rd.str(), rd.str()
	r.Brand, r.Language, r.FallbackLanguage = rd.str(), rd.str(), rd.str()
	r.RequestHash, r.CodeHash = rd.bytes(), rd.bytes()
	if n := rd.int(); n > 0 {
		r.AllowedIPs = make([]string, n)
		for i := range r.AllowedIPs {
			r.AllowedIPs[i] = rd.str()
		}
	}
	if n := rd.int(); n > 0 {
		r.Checks = make([]verify.CheckAttempt, n)
		for i := range r.Checks {
			r.Checks[i] = verify.CheckAttempt{At: rd.time(created), Right: rd.bool()}
		}
	}
	if n := rd.int(); n > 0 {
		r.Deliveries = make([]verify.DeliveryRecord, n)
		for i := range r.Deliveries {
			d := &r.Deliveries[i]
			d.VerificationID = id
			d.ID, d.Channel, d.From, d.ProviderID, d.Error = rd.str(), rd.str(), rd.str(), rd.str(), rd.str()
			d.Status = verify.DeliveryStatus(rd.str())
			d.CreatedAt, d.UpdatedAt = rd.time(created), rd.time(created)
			d.Step = int(rd.int())
		}
	}
	return r
}

// endedAt and idempotencyKey read the first fields only, for Purge.
func (e endedRec) endedAt() time.Time {
	rd := reader{b: e.b}
	return rd.time(0)
}

func (e endedRec) idempotencyKey() string {
	rd := reader{b: e.b}
	rd.time(0)
	return rd.str()
}

// recordDelivery is RecordDelivery on the ended verification id: a report
// that moves its delivery forward, or a new delivery. It returns whether
// it changed the record, and the record as changed. The caller holds the
// shard's lock, and keeps the record returned.
func (e endedRec) recordDelivery(id string, d verify.DeliveryRecord) (endedRec, bool) {
	r := e.expand(id)
	i := slices.IndexFunc(r.Deliveries, func(old verify.DeliveryRecord) bool { return old.ID == d.ID })
	switch {
	case i < 0:
		r.Deliveries = append(r.Deliveries, d)
	case !r.Deliveries[i].Status.MovesTo(d.Status):
		return e, false
	default:
		old := &r.Deliveries[i]
		old.Status, old.Error, old.UpdatedAt = d.Status, d.Error, d.UpdatedAt
		if d.ProviderID != "" {
			old.ProviderID = d.ProviderID
		}
	}
	return endedRec{b: encode(&r), steps: e.steps}, true
}

// writer appends the fields of an encoded record: integers as varints,
// strings and byte slices as their length and bytes, times as their
// distance from a base (see time).
type writer struct{ b []byte }

func (w *writer) int(n int64) { w.b = binary.AppendVarint(w.b, n) }

func (w *writer) bool(v bool) {
	if v {
		w.b = append(w.b, 1)
	} else {
		w.b = append(w.b, 0)
	}
}

func (w *writer) str(s string) {
	w.b = binary.AppendUvarint(w.b, uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *writer) bytes(p []byte) {
	w.b = binary.AppendUvarint(w.b, uint64(len(p)))
	w.b = append(w.b, p...)
}

// time writes t as 0 for the zero time, else as 1 + the zigzag varint of
// its nanoseconds since base (Unix nanoseconds), so that times near the
// verification's creation take a few bytes.
func (w *writer) time(t time.Time, base int64) {
	if t.IsZero() {
		w.b = append(w.b, 0)
		return
	}
	d := t.UnixNano() - base
	w.b = binary.AppendUvarint(w.b, uint64(d<<1^(d>>63))+1)
}

// reader reads what writer wrote, in the same order. The record was
// encoded by this package, so a read past its end cannot happen; if it
// did, the reads return zero values.
type reader struct {
	b []byte
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

// int reads what writer.int wrote: a zigzag varint (binary.AppendVarint).
func (r *reader) int() int64 {
	u := r.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}

func (r *reader) bool() bool {
	if len(r.b) == 0 {
		return false
	}
	v := r.b[0] == 1
	r.b = r.b[1:]
	return v
}

// str returns the next string, pointing into the record's slice, which
// is never written to once made (encode makes a new one for every change).
func (r *reader) str() string {
	p := r.bytes()
	if len(p) == 0 {
		return ""
	}
	return unsafe.String(&p[0], len(p))
}

// bytes returns the next byte slice (nil when empty), sharing the
// record's: a caller never writes into a record's slices (see
// Records in verifications.go).
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if n == 0 || n > uint64(len(r.b)) {
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *reader) time(base int64) time.Time {
	v := r.uvarint()
	if v == 0 {
		return time.Time{}
	}
	v--
	d := int64(v>>1) ^ -int64(v&1)
	return time.Unix(0, base+d).UTC()
}

// sharedSteps returns steps, or an equal slice already kept for the flow:
// every verification of a flow (while it is unchanged) shares one. The
// caller holds the shard's lock.
func (sh *shard) sharedSteps(flowID string, steps []verify.Step) []verify.Step {
	return sh.shareSteps(flowID, steps, false)
}

// ownSteps is sharedSteps for steps the caller may still change: a copy of
// them is kept and returned when the cache has none equal to them.
func (sh *shard) ownSteps(flowID string, steps []verify.Step) []verify.Step {
	return sh.shareSteps(flowID, steps, true)
}

func (sh *shard) shareSteps(flowID string, steps []verify.Step, clone bool) []verify.Step {
	if len(steps) == 0 {
		return nil
	}
	if kept, ok := sh.steps[flowID]; ok && (len(kept) == len(steps) && &kept[0] == &steps[0] || slices.Equal(kept, steps)) {
		return kept
	}
	if clone {
		steps = slices.Clone(steps)
	}
	if sh.steps == nil || len(sh.steps) >= maxSharedFlows {
		sh.steps = make(map[string][]verify.Step)
	}
	sh.steps[flowID] = steps
	return steps
}

// maxSharedFlows bounds a shard's steps cache.
const maxSharedFlows = 1024

// noTime is nanos of the zero time. (0 is 1970-01-01, where a mock clock
// starts.)
const noTime = math.MinInt64

// nanos is t as Unix nanoseconds, noTime for the zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return noTime
	}
	return t.UnixNano()
}
