package verify

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Check checks a code. It returns the verification and a nil error only
// when this call verified it. Otherwise the error is an *Error, answered in
// this order:
//
//  1. E800 empty VerifyID, E801 empty Code, E803 a code that is not
//     [0-9A-Za-z];
//  2. E909 unknown (or purged) VerifyID;
//  3. E920 a client IP outside the flow's allow-list; E918 too many checks
//     from this IP, or a wait imposed after many wrong codes for this
//     recipient (RetryAfter says how long); E919 the recipient is locked
//     out after MaxFailures consecutive wrong codes (RetryAfter says until
//     when);
//  4. for a verification that has ended: E910 verified, E914 canceled,
//     E915 failed, E911 max_attempts, E913 expired; for an open one whose
//     attempts are used up, E911, and past ExpiresAt, E913;
//  5. otherwise the Store counts the attempt and compares the code in one
//     atomic step, and a wrong code answers E912 with AttemptsRemaining;
//     the attempt that uses the last try answers E912 with 0 remaining and
//     ends the verification as max_attempts.
//
// Only step 5 consumes an attempt. The protections of step 3 decide and
// count in one step: while the recipient is locked out or must wait,
// every check is refused, whatever its code, by the same work, so that a
// refusal takes the same time for a right code and a wrong one. A wrong
// code reserves one of the recipient's failure slots (Counters.Take
// refuses it if racing checks have locked the recipient out since), and
// only then does the Store judge it. A right code is no guess and takes
// no slot. (The engine tells the two apart by comparing the code's HMAC
// with the stored one, which it remembers; the Store compares them again
// when it counts the attempt.) However many checks race on any number of
// engines, at most MaxFailures wrong codes are judged for a recipient,
// and past FreeFailures none before its delay. A check refused by the
// lockout gives the per-IP check back (or never counts it, when the two
// are one Take); a wrong code that is compared with nothing (the
// verification has ended) gives its failure slot back; a right code that
// verifies resets the recipient's failures, if any were counted. What a
// check gives back, and the reset, run even once ctx is done (a caller
// that hangs up while its attempt is out leaves nothing counted), for up
// to five seconds each.
//
// On a refusal the returned Verification may hold only the ID, flow,
// recipient and expiry. Alphanumeric codes are compared
// case-insensitively. The right code ends the verification as verified,
// sets VerifiedAt and cancels its pending steps; of many concurrent right
// answers exactly one succeeds and the others get E910 (or E911 when they
// found every attempt taken). Once the Store has verified the code, Check
// returns the verification and a nil error: bookkeeping that fails
// afterwards (resetting the failures) is logged and emitted as a
// bookkeeping_failed event, never returned.
//
// What each answer reveals: E909 that no verification has this ID (an ID
// holds 74 random bits, so this does not help guess one); E910–E915 the
// state of a verification whose ID the caller already holds. Every answer
// after the input checks computes the code's HMAC (one per secret), so the
// time an answer takes does not tell an unknown ID from a known one beyond
// noise.
//
// The parts of a verification that never change (recipient, flow, IP
// allow-list, the code's HMAC) are remembered from Send and earlier Checks
// on this engine, so that a Check costs these calls:
//
//   - on a Store that keeps the counters and is a GuardedStore (memstore,
//     sqlstore), a right code's read of the failures and its attempt are
//     one call; a wrong code's read, failure slot and attempt are three.
//     The per-IP limit, when the request names an IP, is one more.
//   - with Counters apart from the Store (WithCounters, as on Redis), one
//     Counters.Take checks the failures for a right code, counting the
//     conversion monitor's verification with it (given back if the Store
//     does not verify the code), or takes a wrong code's failure slot;
//     with a StoreLimiter on the same Counters, the per-IP limit is in that
//     Take too. Then the Store counts the attempt.
//
// A right code after failures resets them: one call more.
func (e *Engine) Check(ctx context.Context, req CheckRequest) (Verification, error) {
	if req.VerifyID == "" {
		return Verification{}, ErrMissingVerifyID
	}
	if req.Code == "" {
		return Verification{}, ErrMissingOTP
	}
	code, ok := normalizeCode(req.Code)
	if !ok {
		return Verification{}, ErrOTPNotAlphanumeric
	}
	now := e.now()
	// Every answer from here on costs these HMACs, so the time an answer
	// takes does not tell an unknown ID from a known one.
	hashes := e.keys.hashes(req.VerifyID, code)
	parts, known := e.fixed.get(req.VerifyID)
	var rec VerificationRecord
	if !known {
		var err error
		if rec, err = e.store.GetVerification(ctx, req.VerifyID); err != nil {
			return Verification{}, e.lookupErr(ctx, "get verification", err)
		}
		parts = partsOf(&rec)
		if rec.Status.Open() {
			e.fixed.put(rec.ID, parts, now)
		}
	}
	refuse := func(err error) (Verification, error) {
		e.emitCheck(ctx, req.VerifyID, parts.flowID, err, now)
		v := Verification{ID: req.VerifyID, FlowID: parts.flowID, To: parts.to, ExpiresAt: parts.expiresAt}
		if !known {
			v = rec.public()
		}
		return v, err
	}
	if !ipAllowed(parts.allowedIPs, req.IPAddress) {
		return refuse(invalid(ErrIPNotAllowed, "ip_address", "IP address %q is not on the flow's allow-list", req.IPAddress))
	}
	// The per-IP limit, then the recipient's failures: each decides and
	// counts in one step (with a StoreLimiter on the Counters, both in
	// one), and a refusal by the second gives back the first, so a
	// refused check spends nothing.
	ipLimit := req.IPAddress != "" && !e.protection.IPChecks.off()
	joinIP := ipLimit && e.guarded == nil && e.shared != nil
	var perIP Allowance
	if ipLimit && !joinIP {
		var err error
		if perIP, err = e.allowOne(ctx, "check:ip:"+req.IPAddress, "checks from this IP address", e.protection.IPChecks, now); err != nil {
			return refuse(err)
		}
	}
	fkey := failKey(parts.to)
	// Every check is refused while the recipient is locked out or must
	// wait, whatever the code, by the same work, and so in the same time,
	// for a right code and a wrong one. A wrong code reserves one of the
	// failure slots before the Store judges it (a check that raced this
	// one to the lockout makes that refuse too); a right code is no guess
	// and takes no slot. The engine tells them apart by comparing the
	// code's HMAC with the stored one, which it remembers; the Store
	// compares them again when it counts the attempt.
	right := MatchHash(parts.codeHash, hashes)
	counts := e.onVerified(parts)
	var (
		failures  Counter
		convCount *Count // counted with the failures' Take, given back unless the Store verifies
	)
	if e.guarded != nil {
		// The read of the failures and, for a right code, the attempt, in
		// one Store call: a refusal is that same call for any code.
		g, verified, f, err := e.guarded.AttemptRight(ctx, req.VerifyID, hashes, now,
			Guard{Key: fkey, Max: int64(e.protection.MaxFailures)}, counts)
		if err != nil {
			// Whether a right code's attempt was counted is unknown: like
			// Attempt's failure, it keeps the per-IP check.
			e.fixed.drop(req.VerifyID)
			return Verification{}, e.lookupErr(ctx, "check code", err)
		}
		failures = f
		if err := e.failuresRefuse(failures, now); err != nil {
			e.refund(ctx, perIP)
			return refuse(err)
		}
		if verified {
			return e.judged(ctx, g, true, failures, fkey, now)
		}
		if right {
			if countable(&g, now) {
				// Cannot happen with a conforming Store (see judged).
				e.fixed.drop(g.ID)
				return Verification{}, internalErr("check code", fmt.Errorf("the store judged verification %s's matching code wrong", g.ID))
			}
			v, err := e.closed(ctx, g, now)
			e.emitCheck(ctx, g.ID, g.FlowID, err, now)
			return v, err
		}
		// A wrong code reserves a failure slot before the Store judges it.
		if err := e.reserveFailure(ctx, fkey, now); err != nil {
			e.refund(ctx, perIP)
			return refuse(err)
		}
	} else {
		// One Counters.Take: a wrong code's failure slot, or a right
		// code's check of the failures (refused in the same states) with
		// the conversion monitor's count of its verification, and the
		// per-IP limit when a StoreLimiter keeps it on the same Counters.
		// Both codes' Takes name the same counters, so that a refusal
		// is the same work for either.
		takes := make([]Take, 1, 2)
		if right {
			takes[0] = Take{Key: fkey, Delta: 0, Max: int64(e.protection.MaxFailures) - 1}
		} else {
			takes[0] = e.failureSlot(fkey, now)
		}
		if cnt, ok := e.verifiedCount(parts.to, time.Unix(0, parts.createdAt).UTC()); ok && counts == nil && cnt.ExpiresAt.After(now) {
			if right && (known || countable(&rec, now)) {
				takes = append(takes, cnt.Take())
				convCount = &cnt
			} else {
				// Writes nothing: a wrong code, or one for a verification
				// already known to have ended.
				takes = append(takes, Take{Key: cnt.Key, Delta: 0, Max: NoLimit})
			}
		}
		var (
			res Taken
			err error
		)
		if joinIP { // the per-IP limit first, as allowOne would decide it
			var refusedFailures bool
			limit := []Limit{{Key: "check:ip:" + req.IPAddress, Rate: e.protection.IPChecks}}
			perIP, res, refusedFailures, err = e.shared.allowWith(ctx, now, limit, nil, takes)
			if err == nil {
				if !res.OK && !refusedFailures {
					what := "checks from this IP address"
					e.refused(limitReason(what), now)
					return refuse(rateLimited(what, perIP.RetryAfter))
				}
				res.Counters = res.Counters[len(res.Counters)-len(takes):]
			}
		} else {
			res, err = takeAll(ctx, e.counters, now, takes)
		}
		if err != nil {
			e.refund(ctx, perIP)
			return refuse(storeErr(ctx, "check failures", err))
		}
		if !res.OK {
			e.refund(ctx, perIP)
			return refuse(e.failureRefusal(res.Counters[0], res.RetryAfter, now))
		}
		failures = res.Counters[0]
	}
	if !known && !countable(&rec, now) {
		if !right {
			e.refundFailure(ctx, fkey, now)
		}
		// A right code counted no verification here (see above).
		v, err := e.closed(ctx, rec, now)
		e.emitCheck(ctx, rec.ID, rec.FlowID, err, now)
		return v, err
	}
	rec, counted, err := e.attempt(ctx, req.VerifyID, counts, hashes, now)
	if convCount != nil && (err != nil || !counted || rec.Status != StatusVerified) {
		// Not verified by this attempt (another check verified it, say).
		e.uncountVerified(ctx, convCount, now)
	}
	if err != nil {
		// Whether the attempt was counted is unknown: a slot stays taken.
		e.fixed.drop(req.VerifyID)
		return Verification{}, e.lookupErr(ctx, "check code", err)
	}
	if !counted { // ended, expired, or another caller used the last attempt
		e.fixed.drop(rec.ID)
		if !right {
			e.refundFailure(ctx, fkey, now)
		}
		v, err := e.closed(ctx, rec, now)
		e.emitCheck(ctx, rec.ID, rec.FlowID, err, now)
		return v, err
	}
	return e.judged(ctx, rec, right, failures, fkey, now)
}

// countable reports whether an attempt on r at now would be counted: r is
// open, unexpired and has attempts left.
func countable(r *VerificationRecord, now time.Time) bool {
	return r.Status.Open() && r.Attempts < r.MaxAttempts && now.Before(r.ExpiresAt)
}

// judged answers a Check whose attempt the Store counted, as rec: right
// says whether the engine took the code for the right one, and failures
// the recipient's failures it read before. The conversion monitor's count
// of a verification was counted with the attempt, or with the failures'
// check before it.
func (e *Engine) judged(ctx context.Context, rec VerificationRecord, right bool, failures Counter, fkey string, now time.Time) (Verification, error) {
	if right && rec.Status != StatusVerified {
		// Cannot happen with a conforming Store: it compares the hash that
		// it returned for this verification.
		e.fixed.drop(rec.ID)
		return Verification{}, internalErr("check code", fmt.Errorf("the store judged verification %s's matching code wrong", rec.ID))
	}
	if !rec.Status.Open() {
		e.fixed.drop(rec.ID)
		e.emitEnded(ctx, rec, now)
	}
	if rec.Status == StatusVerified {
		// The code is verified: what follows is bookkeeping, whose
		// failures are logged and emitted, never returned.
		if failures.Value > 0 || !right { // !right: a slot was taken
			if err := e.resetFailuresAfter(ctx, fkey); err != nil {
				e.bookkeepingFailed(ctx, rec, "reset failures", err, now)
			}
		}
		if e.log.Enabled(ctx, slog.LevelDebug) {
			e.log.LogAttrs(ctx, slog.LevelDebug, "verify: verified", slog.String("verification", rec.ID))
		}
		return rec.public(), nil
	}
	wrong := *ErrInvalidOTP
	wrong.AttemptsRemaining = max(rec.MaxAttempts-rec.Attempts, 0)
	e.emitCheck(ctx, rec.ID, rec.FlowID, &wrong, now)
	return rec.public(), &wrong
}

// attempt counts an attempt with the Store, and with it counts (see
// onVerified) when there are some.
func (e *Engine) attempt(ctx context.Context, id string, counts []Count, hashes [][]byte, now time.Time) (rec VerificationRecord, counted bool, err error) {
	if counts != nil {
		return e.counting.AttemptCounting(ctx, id, hashes, now, counts)
	}
	return e.store.Attempt(ctx, id, hashes, now)
}

// onVerified is what a CountingStore counts with the attempt that verifies
// the verification of parts: the conversion monitor's count. nil without
// a CountingStore, or when the monitor counts nothing for it.
func (e *Engine) onVerified(parts fixedParts) []Count {
	if e.counting == nil {
		return nil
	}
	if cnt, ok := e.verifiedCount(parts.to, time.Unix(0, parts.createdAt).UTC()); ok {
		return []Count{cnt}
	}
	return nil
}

func (e *Engine) emitCheck(ctx context.Context, id, flowID string, err error, now time.Time) {
	if len(e.observers) == 0 {
		return
	}
	typ := EventCheckFailed
	if c := codeOf(err); c == ErrRateLimited.Code || c == ErrLocked.Code {
		typ = EventRateLimited
	}
	e.emit(ctx, Event{Type: typ, VerificationID: id, FlowID: flowID, Time: now, ErrorCode: codeOf(err)})
}

// closed answers for a verification that can take no more attempts. An
// open one past its expiry is ended as expired. An open, unexpired one
// whose attempts are used up (the Store ends a verification at its last
// attempt, so only a record stored that way) answers E911.
func (e *Engine) closed(ctx context.Context, rec VerificationRecord, now time.Time) (Verification, error) {
	if rec.Status.Open() && now.Before(rec.ExpiresAt) {
		return rec.public(), ErrMaxAttempts
	}
	if rec.Status.Open() {
		done, _, err := e.finish(ctx, rec.ID, StatusExpired, now)
		if err != nil {
			return Verification{}, err
		}
		rec = done
		if rec.Status.Open() { // cannot happen with a conforming Store
			return rec.public(), internalErr("finish", fmt.Errorf("the store left verification %s open after Finish", rec.ID))
		}
	}
	return rec.public(), endedError(rec)
}

// endedError is the answer for a verification in an ended status.
func endedError(rec VerificationRecord) error {
	switch rec.Status {
	case StatusVerified:
		return ErrAlreadyVerified
	case StatusCanceled:
		return ErrCanceled
	case StatusFailed:
		err := ErrDeliveryFailed.with("channel", "")
		err.Reference = rec.ID
		return err
	case StatusMaxAttempts:
		return ErrMaxAttempts
	case StatusExpired:
		return ErrExpired
	}
	return internalErr("read verification", fmt.Errorf("verification %s has unknown status %q", rec.ID, rec.Status))
}
