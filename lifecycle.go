package verify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// lookupErr maps a Store's not-found to E909 verify_id.
func (e *Engine) lookupErr(ctx context.Context, op string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return ErrNotFound.with("verify_id", "")
	}
	return storeErr(ctx, op, err)
}

// Get returns a verification by ID, ended ones included, with its
// deliveries (E909 if unknown or purged). An open verification past its
// ExpiresAt is ended as expired first.
func (e *Engine) Get(ctx context.Context, id string) (Verification, error) {
	if id == "" {
		return Verification{}, ErrMissingVerifyID
	}
	rec, err := e.store.GetVerification(ctx, id)
	if err != nil {
		return Verification{}, e.lookupErr(ctx, "get verification", err)
	}
	now := e.now()
	if rec.Status.Open() && !now.Before(rec.ExpiresAt) {
		if rec, _, err = e.finish(ctx, id, StatusExpired, now); err != nil {
			return Verification{}, err
		}
	}
	return rec.public(), nil
}

// Cancel ends an open verification as canceled and drops its pending
// steps; a later Check answers E914. Cancelling a canceled verification
// returns it unchanged; cancelling one that ended otherwise returns the
// error Check would give (E910, E913, ...).
func (e *Engine) Cancel(ctx context.Context, id string) (Verification, error) {
	if id == "" {
		return Verification{}, ErrMissingVerifyID
	}
	now := e.now()
	rec, err := e.store.GetVerification(ctx, id)
	if err != nil {
		return Verification{}, e.lookupErr(ctx, "get verification", err)
	}
	if rec.Status.Open() && !now.Before(rec.ExpiresAt) {
		return e.closed(ctx, rec, now)
	}
	rec, ended, err := e.finish(ctx, id, StatusCanceled, now)
	if errors.Is(err, ErrNotFound) { // purged since the read
		return Verification{}, ErrNotFound.with("verify_id", "")
	}
	if err != nil {
		return Verification{}, err // finish has named the operation
	}
	if !ended && rec.Status != StatusCanceled {
		return rec.public(), endedError(rec)
	}
	return rec.public(), nil
}

// Resend delivers the same code again on the first step's channel. It
// counts as a send (see WithMaxSends; E916 beyond), must wait
// Protection.ResendCooldown after the previous Send or Resend (E918 with
// RetryAfter) and is subject to the recipient's send limit. The cooldown
// and MaxSends are decided and counted by the Store in one step
// (Store.CountSend), so of many Resends racing after the cooldown one is
// sent; the recipient's limit is counted first and given back when the
// Store refuses. It never resets the attempts and leaves pending fallback
// steps as they are. An ended verification answers as Check would (E910,
// E913, ...). If the channel fails, Resend returns the verification with an
// E915 error; the verification stays open. Once the channel has accepted
// the message, Resend returns the verification with a nil error, even if
// recording the delivery fails afterwards (that is logged and emitted as a
// bookkeeping_failed event).
func (e *Engine) Resend(ctx context.Context, id string) (Verification, error) {
	if id == "" {
		return Verification{}, ErrMissingVerifyID
	}
	return e.resend(ctx, id, true)
}

// resend is Resend; limited says whether the recipient's send limit
// applies (a Send that reuses a verification has counted it already).
func (e *Engine) resend(ctx context.Context, id string, limited bool) (Verification, error) {
	now := e.now()
	rec, err := e.store.GetVerification(ctx, id)
	if err != nil {
		return Verification{}, e.lookupErr(ctx, "get verification", err)
	}
	if !rec.Status.Open() || !now.Before(rec.ExpiresAt) || rec.Attempts >= rec.MaxAttempts {
		return e.closed(ctx, rec, now)
	}
	var allowed Allowance
	if limited {
		if allowed, err = e.allowOne(ctx, "send:to:"+recipientKey(rec.To), "codes sent to this recipient", e.protection.RecipientSends, now); err != nil {
			return rec.public(), err
		}
	}
	rec, counted, err := e.store.CountSend(ctx, id, e.maxSends, max(e.protection.ResendCooldown, 0), now)
	if err != nil {
		e.refund(ctx, allowed)
		return Verification{}, e.lookupErr(ctx, "count send", err)
	}
	if !counted {
		e.refund(ctx, allowed)
		return e.sendRefused(ctx, rec, now)
	}
	code, err := e.keys.unseal(rec.ID, rec.SealedCode)
	if err != nil {
		return Verification{}, err
	}
	d, err := e.send(ctx, &rec, code, -1, rec.ID+"-r"+strconv.Itoa(rec.Sends), now, time.Time{})
	if err != nil {
		if !accepted(d) {
			return rec.public(), err
		}
		e.bookkeepingFailed(ctx, rec, "record delivery", err, now)
		rec.Deliveries = append(rec.Deliveries, d)
		return rec.public(), nil
	}
	if fresh, err := e.store.GetVerification(ctx, id); err == nil {
		rec = fresh
	} else {
		rec.Deliveries = append(rec.Deliveries, d)
	}
	if d.Status == DeliveryFailed {
		return rec.public(), e.deliveryError(rec)
	}
	return rec.public(), nil
}

// sendRefused answers a CountSend the Store refused, from the record it
// returned: E916 at MaxSends, E918 in the resend cooldown, or as Check
// would for a verification that has ended or expired.
func (e *Engine) sendRefused(ctx context.Context, rec VerificationRecord, now time.Time) (Verification, error) {
	if !rec.Status.Open() || !now.Before(rec.ExpiresAt) {
		return e.closed(ctx, rec, now)
	}
	if rec.Sends >= e.maxSends {
		return rec.public(), ErrMaxSends
	}
	if cd := e.protection.ResendCooldown; cd > 0 && !rec.LastSentAt.IsZero() {
		if wait := rec.LastSentAt.Add(cd).Sub(now); wait > 0 {
			return rec.public(), rateLimited("resends of this code", wait)
		}
	}
	// A conforming Store refuses only for the reasons above.
	return rec.public(), internalErr("count send", fmt.Errorf("the store refused to count a send of verification %s for no reason it states", rec.ID))
}
