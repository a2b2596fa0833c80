package verify

import (
	"context"
	"errors"
	"log/slog"
	"strings"
)

// ReportDelivery records a provider's delivery report for a message the
// engine sent: status DeliveryDelivered moves the verification to
// delivered; DeliveryFailed marks the delivery failed and, if every
// channel of that step has now failed, sends the next step at once instead
// of waiting for its interval (the verification ends as failed when no
// step delivered it). messageID is Message.ID; detail is the provider's
// explanation, kept with the delivery.
//
// A delivery's status only moves forward, decided by the Store in one
// atomic step (see Verifications.RecordDelivery): a late sent after failed
// or delivered, or failed after delivered, changes nothing; delivered after
// failed is recorded (the recipient has the code) without undoing the
// fallback already sent. A report that changes nothing emits no event and
// moves no fallback, so reports are idempotent, and one for a verification
// that has ended is recorded without reopening it.
//
// The detail is kept and emitted without the code in any form a channel
// may echo it (see scrubCode), even after the verification has ended and
// only the code's HMAC is left to recognise it by. An unknown message ID
// is E909; a status other than sent, delivered or failed is E809.
func (e *Engine) ReportDelivery(ctx context.Context, messageID string, status DeliveryStatus, detail string) error {
	switch status {
	case DeliverySent, DeliveryDelivered, DeliveryFailed:
	default:
		return invalid(ErrInvalidParameter, "status", "status must be sent, delivered or failed, got %q", status)
	}
	notFound := ErrNotFound.with("message_id", "")
	id, ok := verificationOfMessage(messageID)
	if !ok {
		return notFound
	}
	rec, err := e.store.GetVerification(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return notFound
	}
	if err != nil {
		return storeErr(ctx, "get verification", err)
	}
	var d *DeliveryRecord
	for i := range rec.Deliveries {
		if rec.Deliveries[i].ID == messageID {
			d = &rec.Deliveries[i]
		}
	}
	if d == nil {
		return notFound
	}
	if !d.Status.MovesTo(status) {
		return nil // a repeated or out-of-order report; the Store decides again below
	}
	now := e.now()
	upd := *d
	upd.Status, upd.UpdatedAt, upd.Error = status, now, ""
	if detail != "" {
		detail = storable(scrubCode(detail, rec.CodeLength, rec.Charset, func(c string) bool {
			return MatchHash(rec.CodeHash, e.keys.hashes(rec.ID, c))
		}))
	}
	if status == DeliveryFailed {
		upd.Error = detail
	}
	changed, err := e.store.RecordDelivery(ctx, upd)
	if err != nil {
		return storeErr(ctx, "record delivery", err)
	}
	if !changed {
		return nil // another report moved it first
	}
	if status != DeliverySent && len(e.observers) > 0 {
		typ := EventDelivered
		if status == DeliveryFailed {
			typ = EventDeliveryFailed
		}
		e.emit(ctx, Event{Type: typ, VerificationID: id, FlowID: rec.FlowID, Channel: upd.Channel, Step: upd.Step,
			Time: now, Reason: detail})
	}
	e.log.LogAttrs(ctx, slog.LevelDebug, "verify: delivery report",
		slog.String("verification", id), slog.String("message", messageID), slog.String("status", string(status)))
	if status != DeliveryFailed || upd.Step < 0 || !rec.Status.Open() {
		return nil
	}
	code, err := e.keys.unseal(rec.ID, rec.SealedCode)
	if err != nil {
		return err
	}
	_, err = e.moveOn(ctx, id, code, upd.Step, now)
	return err
}

// verificationOfMessage extracts the verification ID from a message ID,
// which is "<verification ID>-<step>" or "<verification ID>-r<n>".
func verificationOfMessage(messageID string) (string, bool) {
	i := strings.LastIndexByte(messageID, '-')
	if i <= 0 || i == len(messageID)-1 {
		return "", false
	}
	return messageID[:i], true
}
