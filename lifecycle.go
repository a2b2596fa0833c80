package verify

import (
	"context"
	"errors"
	"strconv"
)

// lookupErr maps a Store's not-found to E909 verify_id.
func (e *Engine) lookupErr(op string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return ErrNotFound.with("verify_id", "")
	}
	return storeErr(op, err)
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
		return Verification{}, e.lookupErr("get verification", err)
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
		return Verification{}, e.lookupErr("get verification", err)
	}
	if rec.Status.Open() && !now.Before(rec.ExpiresAt) {
		return e.closed(ctx, rec, now)
	}
	rec, ended, err := e.finish(ctx, id, StatusCanceled, now)
	if err != nil {
		return Verification{}, e.lookupErr("finish verification", err)
	}
	if !ended && rec.Status != StatusCanceled {
		return rec.public(), endedError(rec)
	}
	return rec.public(), nil
}

// Resend delivers the same code again on the first step's channel. It
// counts as a send (see WithMaxSends; E916 beyond), must wait
// Protection.ResendCooldown after the previous Send or Resend (E918 with
// RetryAfter) and is subject to the recipient's send limit. It never resets
// the attempts and leaves pending fallback steps as they are. An ended
// verification answers as Check would (E910, E913, ...). If the channel
// fails, Resend returns the verification with an E915 error; the
// verification stays open.
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
		return Verification{}, e.lookupErr("get verification", err)
	}
	if !rec.Status.Open() || !now.Before(rec.ExpiresAt) || rec.Attempts >= rec.MaxAttempts {
		return e.closed(ctx, rec, now)
	}
	if rec.Sends >= e.maxSends {
		return rec.public(), ErrMaxSends
	}
	if wait := e.cooldownLeft(rec, now); wait > 0 {
		return rec.public(), rateLimited("resends of this code", wait)
	}
	if limited {
		if err := e.allow(ctx, "send:to:"+recipientKey(rec.To), "codes sent to this recipient", e.protection.RecipientSends, now); err != nil {
			return rec.public(), err
		}
	}
	rec, counted, err := e.store.CountSend(ctx, id, e.maxSends, now)
	if err != nil {
		return Verification{}, e.lookupErr("count send", err)
	}
	if !counted {
		if rec.Status.Open() && now.Before(rec.ExpiresAt) {
			return rec.public(), ErrMaxSends
		}
		return e.closed(ctx, rec, now)
	}
	code, err := e.keys.unseal(rec.ID, rec.SealedCode)
	if err != nil {
		return Verification{}, err
	}
	d, err := e.send(ctx, &rec, code, -1, rec.ID+"-r"+strconv.Itoa(rec.Sends), now)
	if err != nil {
		return Verification{}, err
	}
	if rec, err = e.store.GetVerification(ctx, id); err != nil {
		return Verification{}, storeErr("get verification", err)
	}
	if d.Status == DeliveryFailed {
		return rec.public(), e.deliveryError(rec)
	}
	return rec.public(), nil
}
