package memstore

import (
	"math"
	"slices"
	"time"

	"github.com/openverify/verify"
)

// Ended verifications are kept for reports, late checks and late receipts
// until Purge removes them: with a retention of days they are nearly all
// of a store, so they are kept compact. When a verification ends it moves
// from its shard's recs, as a *verify.VerificationRecord, to its done, as
// an *endedRec: times as Unix nanoseconds, small numbers narrowed, the
// code's hash in a buffer of its own (the sealed code is gone), the flow's
// steps shared with the other verifications of the flow, and deliveries
// without the verification's ID. A read expands it into a record again,
// with its times in UTC.

// endedRec is an ended verification without its ID (the key of done).
type endedRec struct {
	flowID, foreignID string
	to                verify.Recipient
	ipAddress         string
	idempotencyKey    string
	brand, language   string
	fallbackLanguage  string
	requestHash       []byte
	codeHash          []byte
	steps             []verify.Step // shared: never written into
	allowedIPs        []string
	deliveries        []endedDelivery
	checks            []endedCheck

	createdAt, expiresAt, verifiedAt, endedAt, lastSentAt int64

	attempts, maxAttempts, sends int32
	codeLength                   int16
	charset                      verify.Charset
	status                       verify.Status
	exclusive                    bool
}

// endedCheck is a verify.CheckAttempt.
type endedCheck struct {
	at    int64
	right bool
}

// endedDelivery is a verify.DeliveryRecord without the verification's ID.
type endedDelivery struct {
	id, channel, from, providerID, err string
	createdAt, updatedAt               int64
	step                               int32
	status                             verify.DeliveryStatus
}

// compactRecord returns r's compact form, sharing steps with earlier
// verifications of its flow through the shard's steps cache. The caller
// holds the shard's lock.
func (sh *shard) compactRecord(r *verify.VerificationRecord) *endedRec {
	var (
		e   *endedRec
		one *endedRecOne
	)
	if len(r.Deliveries) == 1 {
		// The usual case: the record and its delivery in one allocation.
		one = new(endedRecOne)
		e = &one.endedRec
	} else {
		e = new(endedRec)
	}
	*e = endedRec{
		flowID: r.FlowID, foreignID: r.ForeignID, to: r.To, ipAddress: r.IPAddress,
		idempotencyKey: r.IdempotencyKey, brand: r.Brand, language: r.Language,
		fallbackLanguage: r.FallbackLanguage,
		requestHash:      clip(r.RequestHash), codeHash: clip(r.CodeHash),
		steps: sh.sharedSteps(r.FlowID, r.Steps), allowedIPs: r.AllowedIPs,
		createdAt: nanos(r.CreatedAt), expiresAt: nanos(r.ExpiresAt), verifiedAt: nanos(r.VerifiedAt),
		endedAt: nanos(r.EndedAt), lastSentAt: nanos(r.LastSentAt),
		attempts: int32(r.Attempts), maxAttempts: int32(r.MaxAttempts), sends: int32(r.Sends),
		codeLength: int16(r.CodeLength), charset: r.Charset, status: r.Status, exclusive: r.Exclusive,
	}
	if len(r.AllowedIPs) == 0 {
		e.allowedIPs = nil
	}
	if len(r.Checks) > 0 {
		e.checks = make([]endedCheck, len(r.Checks))
		for i, c := range r.Checks {
			e.checks[i] = endedCheck{nanos(c.At), c.Right}
		}
	}
	switch {
	case one != nil:
		one.delivery[0] = compactDelivery(&r.Deliveries[0])
		e.deliveries = one.delivery[:]
	case len(r.Deliveries) > 1:
		e.deliveries = make([]endedDelivery, len(r.Deliveries))
		for i := range r.Deliveries {
			e.deliveries[i] = compactDelivery(&r.Deliveries[i])
		}
	}
	return e
}

// endedRecOne is an endedRec with room for one delivery.
type endedRecOne struct {
	endedRec
	delivery [1]endedDelivery
}

func compactDelivery(d *verify.DeliveryRecord) endedDelivery {
	return endedDelivery{id: d.ID, channel: d.Channel, from: d.From, providerID: d.ProviderID, err: d.Error,
		createdAt: nanos(d.CreatedAt), updatedAt: nanos(d.UpdatedAt), step: int32(d.Step), status: d.Status}
}

// expand returns the record e keeps for the verification id.
func (e *endedRec) expand(id string) verify.VerificationRecord {
	r := verify.VerificationRecord{
		ID: id, FlowID: e.flowID, ForeignID: e.foreignID, Status: e.status, To: e.to, IPAddress: e.ipAddress,
		IdempotencyKey: e.idempotencyKey, RequestHash: e.requestHash, Exclusive: e.exclusive,
		Brand: e.brand, Language: e.language, FallbackLanguage: e.fallbackLanguage,
		CodeHash: e.codeHash, Charset: e.charset, CodeLength: int(e.codeLength),
		Attempts: int(e.attempts), MaxAttempts: int(e.maxAttempts), Sends: int(e.sends),
		LastSentAt: timeOf(e.lastSentAt), Steps: e.steps, AllowedIPs: e.allowedIPs,
		CreatedAt: timeOf(e.createdAt), ExpiresAt: timeOf(e.expiresAt), VerifiedAt: timeOf(e.verifiedAt),
		EndedAt: timeOf(e.endedAt),
	}
	if len(e.checks) > 0 {
		r.Checks = make([]verify.CheckAttempt, len(e.checks))
		for i, c := range e.checks {
			r.Checks[i] = verify.CheckAttempt{At: timeOf(c.at), Right: c.right}
		}
	}
	if len(e.deliveries) > 0 {
		r.Deliveries = make([]verify.DeliveryRecord, len(e.deliveries))
		for i, d := range e.deliveries {
			r.Deliveries[i] = verify.DeliveryRecord{ID: d.id, VerificationID: id, Step: int(d.step), Channel: d.channel,
				From: d.from, Status: d.status, ProviderID: d.providerID, Error: d.err,
				CreatedAt: timeOf(d.createdAt), UpdatedAt: timeOf(d.updatedAt)}
		}
	}
	return r
}

// recordDelivery is RecordDelivery on an ended verification: a report
// that moves its delivery forward, or a new delivery. The caller holds the
// shard's lock.
func (e *endedRec) recordDelivery(d verify.DeliveryRecord) bool {
	for i := range e.deliveries {
		old := &e.deliveries[i]
		if old.id != d.ID {
			continue
		}
		if !old.status.MovesTo(d.Status) {
			return false
		}
		old.status, old.err, old.updatedAt = d.Status, d.Error, nanos(d.UpdatedAt)
		if d.ProviderID != "" {
			old.providerID = d.ProviderID
		}
		return true
	}
	// Expanded records copy the deliveries, so e's may grow in place.
	e.deliveries = append(slices.Clip(e.deliveries), compactDelivery(&d))
	return true
}

// sharedSteps returns steps, or an equal slice already kept for the flow:
// every verification of a flow (while it is unchanged) shares one. The
// caller holds the shard's lock.
func (sh *shard) sharedSteps(flowID string, steps []verify.Step) []verify.Step {
	if len(steps) == 0 {
		return nil
	}
	if kept, ok := sh.steps[flowID]; ok && slices.Equal(kept, steps) {
		return kept
	}
	if sh.steps == nil || len(sh.steps) >= maxSharedFlows {
		sh.steps = make(map[string][]verify.Step)
	}
	sh.steps[flowID] = steps
	return steps
}

// maxSharedFlows bounds a shard's steps cache.
const maxSharedFlows = 1024

// clip returns a copy of b in a buffer of its own size (nil for none), so
// that a hash does not keep a larger buffer it was cut from alive.
func clip(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return slices.Clone(b)
}

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

// timeOf is the inverse of nanos, in UTC.
func timeOf(n int64) time.Time {
	if n == noTime {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
