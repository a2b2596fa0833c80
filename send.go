package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
)

// Send starts a verification: it resolves the flow (FlowID "" is the
// default flow), validates the recipient for every step's channel, applies
// the flow's and the engine's protections, generates the code (or checks the
// custom one), stores the verification with all its steps, and delivers the
// first step together with its send-anyway companions before returning, with
// status sent. It runs as four stages: resolve (the flow and the request),
// admit (idempotency, the SendHook and the protections), store (the new
// verification, or the flow's Duplicates policy) and deliver.
//
// Refusals are *Error values, in this order: E909 unknown flow, E809 bad
// language, E920 client IP not allowed, E804 bad recipient, E921 country or
// number type not allowed, E805 bad custom code; then an IdempotencyKey
// seen before returns that verification (or E923 if the request differs;
// a request matches under any secret given to WithSecret, so a retry
// survives a rotation); then the SendHook and the pumping guard's prefix
// block (E922, with RetryAfter when the block has an end) and the rate
// limits (E918, with RetryAfter). On a Store that keeps the counters and
// is a CountingStore the block is checked by the write that stores the
// verification: after the limits of a Limiter of their own (a
// LocalLimiter, a StoreLimiter on Redis), so a Send both blocked and
// limited gets E918; with a StoreLimiter on the Store, the same write
// decides and counts the limits too, after the block. The limits are
// decided and counted all or nothing, and given back when the Send is
// refused afterwards, so a refused Send spends nothing; a give-back runs
// even once ctx is done, for up to five seconds.
//
// When the recipient has an open verification on the flow, its Duplicates
// policy applies: reuse resends it (as Resend does, with its cooldown and
// MaxSends, but without counting the send limits twice) and returns it;
// replace cancels it first. A Send that carries a custom Code other than
// the open verification's, another ForeignID or another language is a
// different request, so under reuse it replaces the open verification
// rather than silently resending the old code. Sends to one recipient
// racing under reuse or replace, on any number of engines, leave one
// verification open; one that keeps losing the race answers E918. The
// policy applies to the verifications started under it (marked
// Exclusive): those started while the flow allowed duplicates, or stored by
// a Store from before exclusivity, are left alone until they end.
//
// If every channel of a step fails, the next step is tried at once. If every
// step fails, the verification ends as failed and Send returns it together
// with an E915 error. Fallback steps with After > 0 are delivered later by
// Run or ProcessDue, while the verification is still open. Once a channel
// has accepted the code, Send returns the verification with a nil error:
// bookkeeping that fails afterwards (recording the delivery, the conversion
// counters) is logged and emitted as a bookkeeping_failed event.
//
// A refusal before the verification is stored (E800–E809, E909,
// E918–E923) means this Send stored and sent nothing; E915 means it was
// stored and every channel failed. A store failure (E925, E926) or the
// caller's context error is ambiguous: the store may have committed the verification before
// the failure reached the engine, and then its code is delivered by Run
// once this call's claim on the first step is released or runs out. Retry
// such a Send with the same IdempotencyKey: the retry returns the stored
// verification, delivering its first step if no one holds it, and never
// sends a second code. Without a key, a retry starts another verification.
func (e *Engine) Send(ctx context.Context, req SendRequest) (Verification, error) {
	plan, err := e.resolveSend(ctx, req)
	if err != nil {
		return Verification{}, err
	}
	p := &plan
	if req.IdempotencyKey != "" {
		if v, done, err := e.idempotent(ctx, p); done {
			return v, err
		}
	}
	now := e.now()
	if p.allowed, err = e.admit(ctx, p, now); err != nil {
		return Verification{}, err
	}
	rec, code, claimed, ans, err := e.storeSend(ctx, p, now)
	if err != nil || ans.done {
		if !ans.sent { // nothing went out for this request
			e.refund(ctx, p.allowed)
		}
		e.uncountSent(ctx, p, now) // no new verification
		if err != nil {
			return Verification{}, err
		}
		return ans.v, ans.err
	}
	return e.deliverFirst(ctx, p, &rec, code, claimed, now)
}

// sendPlan is a Send request resolved against its flow.
type sendPlan struct {
	req     SendRequest
	flow    Flow
	flowKey string // what identifies the flow in the request hash (with an IdempotencyKey)
	to      Recipient
	code    string // the custom code, "" to generate one
	lang    string
	reqHash []byte
	attempt SendAttempt
	// sent is the conversion monitor's count of codes sent to the prefix,
	// once this Send is counted (see countSent); 0 until then.
	sent int64
	// allowed is what the Limiter counted for this Send, given back if
	// it sends nothing.
	allowed Allowance
	// limits, when admitSend left them to the write that stores the
	// verification (see create), are the send limits, and rows their rows
	// in the send limit table; nil once counted otherwise (allowed).
	limits []Limit
	rows   [6]uint8
}

// resolveSend is Send's first stage: the flow, and every check of the
// request that needs no Store state.
func (e *Engine) resolveSend(ctx context.Context, req SendRequest) (sendPlan, error) {
	flow, err := e.sendFlow(ctx, req)
	if err != nil {
		return sendPlan{}, err
	}
	if req.Language != "" && !languageRE.MatchString(req.Language) {
		return sendPlan{}, invalid(ErrInvalidParameter, "language", "language %q is not a language tag such as \"en\" or \"pt-BR\"", req.Language)
	}
	if !ipAllowed(flow.AllowedIPs, req.IPAddress) {
		return sendPlan{}, invalid(ErrIPNotAllowed, "ip_address", "IP address %q is not on the flow's allow-list", req.IPAddress)
	}
	to, info, err := e.checkRecipient(flow, req.To)
	if err != nil {
		return sendPlan{}, err
	}
	p := sendPlan{req: req, flow: flow, to: to}
	if req.Code != "" {
		c, ok := normalizeCode(req.Code)
		if !ok || len(c) != flow.CodeLength || !fitsCharset(c, flow.Charset) {
			return sendPlan{}, invalid(ErrInvalidCode, "otp", "a custom OTP must be %d %s characters", flow.CodeLength, flow.Charset)
		}
		p.code = c
	}
	p.lang = resolveLanguage(req, to, flow)
	if req.IdempotencyKey != "" {
		p.flowKey = flow.ID
		if req.Flow != nil {
			// An ad-hoc flow is part of the request: a retry with the
			// same key and other steps is another request.
			b, err := json.Marshal(flow)
			if err != nil {
				return sendPlan{}, internalErr("encode ad-hoc flow", err)
			}
			p.flowKey += "\x00" + string(b)
		}
		p.reqHash = e.keys.requestHash(p.flowKey, to, p.code, req)
	}
	p.attempt = SendAttempt{FlowID: flow.ID, To: to, Country: info.Country, IPAddress: req.IPAddress, ForeignID: req.ForeignID}
	if to.Phone != "" {
		p.attempt.Prefix = phonePrefix(to.Phone)
	}
	return p, nil
}

// admit is Send's second stage: the SendHook, then the pumping guard and
// the rate limits (admitSend). The returned Allowance is refunded if the
// Send is refused later.
func (e *Engine) admit(ctx context.Context, p *sendPlan, now time.Time) (Allowance, error) {
	if e.sendHook != nil {
		if err := e.sendHook(ctx, p.attempt); err != nil {
			return Allowance{}, e.blocked(ctx, p.attempt, RefusalSendHook, err.Error(), 0)
		}
	}
	return e.admitSend(ctx, p, now)
}

// answer is how storeSend answered a Send without storing a new
// verification: done is set when it did, sent when a code went out for
// this request (a reused verification's resend).
type answer struct {
	v          Verification
	err        error
	done, sent bool
}

// storeSend is Send's third stage: it stores a new verification with its
// steps, the first group leased to this call (returned as claimed), or
// applies the flow's Duplicates policy when an exclusive one is open. When
// the request is answered otherwise (an idempotent repeat, a reused
// verification), the answer says so.
func (e *Engine) storeSend(ctx context.Context, p *sendPlan, now time.Time) (rec VerificationRecord, code string, claimed []PendingStep, ans answer, err error) {
	code = p.code
	if code == "" {
		if code, err = generateCode(p.flow.CodeLength, p.flow.Charset); err != nil {
			return rec, "", nil, ans, err
		}
	}
	id, err := newID(now)
	if err != nil {
		return rec, "", nil, ans, err
	}
	hash, sealed, err := e.keys.protect(id, code)
	if err != nil {
		return rec, "", nil, ans, err
	}
	flow := p.flow
	rec = VerificationRecord{
		ID:               id,
		FlowID:           flow.ID,
		ForeignID:        p.req.ForeignID,
		Status:           StatusPending,
		To:               p.to,
		IPAddress:        p.req.IPAddress,
		IdempotencyKey:   p.req.IdempotencyKey,
		RequestHash:      p.reqHash,
		Exclusive:        flow.Duplicates != DuplicateAllow,
		Brand:            flow.Brand,
		Language:         p.lang,
		FallbackLanguage: flow.Language,
		CodeHash:         hash,
		SealedCode:       sealed,
		Charset:          flow.Charset,
		CodeLength:       flow.CodeLength,
		MaxAttempts:      flow.MaxAttempts,
		Sends:            1,
		LastSentAt:       now,
		Steps:            flow.Steps,
		AllowedIPs:       flow.AllowedIPs,
		CreatedAt:        now,
		ExpiresAt:        now.Add(flow.TTL),
	}
	// Every step is a pending row, the first group leased to this call, so
	// that a crash before it is delivered loses nothing: another engine
	// claims it when the lease runs out.
	pending := schedule(id, rec.Steps, 0, now, now.Add(e.lease))
	for try := 1; ; try++ {
		err := e.create(ctx, p, rec, pending)
		if err == nil {
			break
		}
		if p.req.IdempotencyKey != "" && (errors.Is(err, ErrDuplicate) || errors.Is(err, ErrOpenExists)) {
			// A concurrent request with the same key may have won.
			if v, done, err := e.idempotent(ctx, p); done {
				return rec, "", nil, answer{v: v, err: err, done: true}, nil
			}
		}
		if errors.Is(err, ErrBlocked) || errors.Is(err, ErrRateLimited) { // nothing stored
			return rec, "", nil, ans, err
		}
		if !errors.Is(err, ErrOpenExists) {
			e.release(ctx, pending)
			return rec, "", nil, ans, storeErr(ctx, "create verification", err)
		}
		if try == maxCreateTries {
			// Other Sends to this recipient keep starting verifications
			// (DuplicateReplace cancels them in turn): let them settle.
			return rec, "", nil, ans, rateLimited("concurrent sends to this recipient", time.Second)
		}
		if a, err := e.duplicate(ctx, p, now); a.done || err != nil {
			return rec, "", nil, a, err
		}
	}
	e.fixed.put(id, partsOf(&rec), now)
	if len(e.observers) > 0 {
		e.emit(ctx, Event{Type: EventCreated, VerificationID: id, FlowID: flow.ID, Time: now})
	}
	return rec, code, pending[:groupEnd(rec.Steps, 0)], ans, nil
}

// create stores rec with its pending steps. When the Store can count in
// the same step, that step also checks the prefix's block (admitSend left
// it to this one), counts the send for the conversion monitor and, with a
// StoreLimiter on the Store's counters, decides and counts the send
// limits (p.limits); a refusal is answered as admitSend answers it.
func (e *Engine) create(ctx context.Context, p *sendPlan, rec VerificationRecord, pending []PendingStep) error {
	if e.counting == nil {
		return e.store.CreateVerification(ctx, rec, pending)
	}
	var (
		guard  Guard
		counts []Count
	)
	cnt, conv := e.sentCount(p.attempt.Prefix, rec.CreatedAt)
	if conv {
		guard, counts = blockGuard(p.attempt.Prefix), []Count{cnt}
	}
	limitsFrom := len(counts)
	if p.limits != nil {
		counts = append(counts, limitCounts(rec.CreatedAt, p.limits)...)
	}
	if len(counts) == 0 {
		return e.store.CreateVerification(ctx, rec, pending)
	}
	counters, err := e.counting.CreateVerificationCounting(ctx, rec, pending, guard, counts)
	var refused *RefusedError
	isRefusal := errors.As(err, &refused)
	switch {
	case isRefusal && (refused.Refused < 0 || refused.Guard.Key != ""):
		return e.prefixBlocked(ctx, p.attempt, refused.Counter, rec.CreatedAt)
	case isRefusal && refused.Refused >= limitsFrom && refused.Refused < len(counts):
		return e.sendLimited(ctx, p, p.rows[refused.Refused-limitsFrom], refused.RetryAfter, rec.CreatedAt)
	case err != nil:
		return err
	case len(counters) != len(counts):
		return fmt.Errorf("the store returned %d counters for %d counts", len(counters), len(counts))
	}
	if conv {
		p.sent = max(counters[0].Value, 1)
	}
	return nil
}

// release gives up this call's claim on the first group of steps of a
// verification whose CreateVerification failed, and the tries the claim
// counted, since nothing was sent. The failure may have come after the
// store committed (a connection lost during the commit): if so, the
// verification exists, and its first group becomes free now instead of
// when the lease runs out, so Run on any engine, or a retry with the same
// IdempotencyKey, delivers it. If nothing was stored, or the store is still
// failing, this changes nothing.
func (e *Engine) release(ctx context.Context, pending []PendingStep) {
	for _, p := range pending {
		if !p.LeaseUntil.IsZero() {
			_ = e.releaseStep(ctx, p, time.Time{}, false)
		}
	}
}

// deliverFirst is Send's last stage: it delivers the first group of steps,
// which the caller has claimed (moving on through later ones if they all
// fail), and feeds the conversion monitor.
func (e *Engine) deliverFirst(ctx context.Context, p *sendPlan, rec *VerificationRecord, code string, claimed []PendingStep, now time.Time) (Verification, error) {
	handed := false // a channel has accepted the code
	for _, step := range claimed {
		d, _, err := e.deliver(ctx, rec, code, step, now)
		if d.Status != "" { // attempted
			rec.Deliveries = append(rec.Deliveries, d)
		}
		if accepted(d) {
			handed = true
			if rec.Status == StatusPending {
				rec.Status = StatusSent
			}
		}
		if err != nil {
			if !handed {
				if e.counting == nil {
					// A CountingStore's count stays with the verification,
					// which is open and will be sent (by Run, or by a
					// retry with its IdempotencyKey, which counts nothing).
					e.uncountSent(ctx, p, now)
				}
				return Verification{}, err
			}
			e.bookkeepingFailed(ctx, *rec, "record delivery", err, now)
		}
	}
	if !handed {
		// deliver moved on through the later steps; read what happened.
		fresh, err := e.store.GetVerification(ctx, rec.ID)
		if err != nil {
			return Verification{}, storeErr(ctx, "get verification", err)
		}
		*rec = fresh
		if rec.Status == StatusFailed {
			e.uncountSent(ctx, p, now)
			return rec.public(), e.deliveryError(*rec)
		}
	}
	if err := e.countSent(ctx, p, now); err != nil {
		e.bookkeepingFailed(ctx, *rec, "count send", err, now)
	}
	if e.log.Enabled(ctx, slog.LevelDebug) {
		e.log.LogAttrs(ctx, slog.LevelDebug, "verify: sent", slog.String("verification", rec.ID), slog.String("flow", rec.FlowID))
	}
	return rec.public(), nil
}

// maxCreateTries bounds how often Send tries to store an exclusive
// verification while others for the same recipient keep appearing.
const maxCreateTries = 5

// duplicate applies the flow's Duplicates policy to the recipient's open
// verifications, which kept an exclusive one from being stored. With
// DuplicateReuse it resends the newest unexpired one that this request
// would have created (same custom code, ForeignID and language; reused =
// done); otherwise it ends them all (expired or canceled), so that the
// caller can store its own. Send limits are counted for this request
// before any of that (if admitSend left them to the write that stores the
// verification, allowDeferred counts them now, and the Send's later tries
// count them no more), so a Send they refuse changes nothing, and the
// resend does not count them again.
func (e *Engine) duplicate(ctx context.Context, p *sendPlan, now time.Time) (answer, error) {
	if err := e.allowDeferred(ctx, p, now); err != nil {
		return answer{err: err, done: true}, nil
	}
	open, err := e.store.FindOpen(ctx, p.flow.ID, p.to, time.Time{})
	if err != nil {
		return answer{}, storeErr(ctx, "find open verifications", err)
	}
	for _, o := range open {
		live := now.Before(o.ExpiresAt)
		if live && p.flow.Duplicates == DuplicateReuse && e.sameShape(o, p) {
			v, err := e.resend(ctx, o.ID, false)
			if err != nil && v.Status != "" && !v.Status.Open() {
				// It ended meanwhile (verified, canceled, ...): make room
				// for a new one instead.
				continue
			}
			// Refused by the resend's cooldown or MaxSends, nothing went
			// out: the caller gives back this request's limits.
			sent := err == nil || codeOf(err) == ErrDeliveryFailed.Code
			return answer{v: v, err: err, done: true, sent: sent}, nil
		}
		status := StatusCanceled
		if !live {
			status = StatusExpired
		}
		if _, _, err := e.finish(ctx, o.ID, status, now); err != nil {
			return answer{}, err
		}
	}
	return answer{}, nil
}

// sameShape reports whether the open verification o is what the request
// would have created: its custom code (if any) is o's code, its ForeignID
// and language are o's, and so are its flow's steps and code settings (an
// ad-hoc flow's differ from request to request; a catalog flow's when an
// admin changed it since).
func (e *Engine) sameShape(o VerificationRecord, p *sendPlan) bool {
	if o.ForeignID != p.req.ForeignID || o.Language != p.lang {
		return false
	}
	f := &p.flow
	if o.CodeLength != f.CodeLength || o.Charset != f.Charset || o.MaxAttempts != f.MaxAttempts ||
		o.Brand != f.Brand || !slices.Equal(o.Steps, f.Steps) {
		return false
	}
	return p.code == "" || MatchHash(o.CodeHash, e.keys.hashes(o.ID, p.code))
}

// idempotent looks up a verification by idempotency key. done is true when
// one exists: the caller returns v (the same request) or E923.
func (e *Engine) idempotent(ctx context.Context, p *sendPlan) (v Verification, done bool, err error) {
	key := p.req.IdempotencyKey
	prev, err := e.store.FindByIdempotencyKey(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return Verification{}, false, nil
	}
	if err != nil {
		return Verification{}, true, storeErr(ctx, "find by idempotency key", err)
	}
	if !e.keys.sameRequest(prev.RequestHash, p.flowKey, p.to, p.code, p.req) {
		return Verification{}, true, invalid(ErrIdempotencyMismatch, "idempotency_key", "idempotency key %q was used for a different request", key)
	}
	v, err = e.resume(ctx, p, prev)
	return v, true, err
}

// resume answers a repeated Send with the verification the first one
// stored. When that Send failed after storing it, before anything was
// delivered (see release), resume delivers the first group of steps as
// Send would have, claiming them first: a step another call still holds
// (a Send still delivering, one whose claim has not run out, or one
// waiting out its re-delivery backoff) is left to it, so a retry never
// sends a second code, and a step already tried WithDeliveryTries times is
// given up as Run would.
func (e *Engine) resume(ctx context.Context, p *sendPlan, prev VerificationRecord) (Verification, error) {
	at := e.now()
	if !prev.Status.Open() || len(prev.Deliveries) > 0 || !at.Before(prev.ExpiresAt) || len(prev.SealedCode) == 0 {
		return prev.public(), nil
	}
	first := groupEnd(prev.Steps, 0)
	claimed, err := e.store.Reschedule(ctx, at, schedule(prev.ID, prev.Steps[:first], 0, at, at.Add(e.lease)))
	if err != nil {
		return Verification{}, storeErr(ctx, "reschedule steps", err)
	}
	if len(claimed) == 0 {
		return prev.public(), nil
	}
	var mine []PendingStep
	for _, c := range claimed {
		if c.Tries > e.tries { // claimed too often already: not sent again
			if _, err := e.giveUp(ctx, &prev, c, at); err != nil {
				return Verification{}, err
			}
			continue
		}
		mine = append(mine, c)
	}
	if len(mine) == 0 {
		return e.Get(ctx, prev.ID)
	}
	code, err := e.keys.unseal(prev.ID, prev.SealedCode)
	if err != nil {
		return Verification{}, err
	}
	return e.deliverFirst(ctx, p, &prev, code, mine, at)
}

func (e *Engine) deliveryError(rec VerificationRecord) *Error {
	err := ErrDeliveryFailed.with("channel", "")
	err.Reference = rec.ID
	return err
}

// checkRecipient trims the recipient, checks it has what every step's
// channel needs (a phone number the PhoneParser accepts, a bare email
// address), and applies the flow's country and number-type rules. The phone
// is returned in the parser's E.164 form.
func (e *Engine) checkRecipient(flow Flow, to Recipient) (Recipient, PhoneInfo, error) {
	to.Phone = strings.TrimSpace(to.Phone)
	to.Email = strings.TrimSpace(to.Email)
	needPhone, needEmail := false, false
	for _, s := range flow.Steps {
		ch, ok := e.channels[s.Channel]
		if !ok {
			return Recipient{}, PhoneInfo{}, invalid(ErrUnknownChannel, "channel", "the flow's channel %q is not registered with this engine", s.Channel)
		}
		if addressingOf(ch) == ByEmail {
			needEmail = true
		} else {
			needPhone = true
		}
	}
	if to.Phone == "" && to.Email == "" {
		return Recipient{}, PhoneInfo{}, invalid(ErrInvalidRecipient, "to", "a recipient (mobile or email) is mandatory")
	}
	var info PhoneInfo
	if needPhone || to.Phone != "" {
		if to.Phone == "" {
			return Recipient{}, PhoneInfo{}, invalid(ErrInvalidRecipient, "to.mobile", "the flow has a phone channel; a mobile number is mandatory")
		}
		var err error
		if info, err = e.phones.ParsePhone(to.Phone); err != nil {
			return Recipient{}, PhoneInfo{}, invalid(ErrInvalidRecipient, "to.mobile", "%s", err.Error())
		}
		to.Phone = info.E164
		if err := checkGeo(flow, info); err != nil {
			e.refused(RefusalGeo, e.now())
			return Recipient{}, PhoneInfo{}, err
		}
	}
	if needEmail || to.Email != "" {
		if to.Email == "" {
			return Recipient{}, PhoneInfo{}, invalid(ErrInvalidRecipient, "to.email", "the flow has an email channel; an email address is mandatory")
		}
		if err := checkEmail(to.Email); err != nil {
			return Recipient{}, PhoneInfo{}, invalid(ErrInvalidRecipient, "to.email", "%s", err.Error())
		}
	}
	return to, info, nil
}

// checkGeo applies a flow's country and number-type rules.
func checkGeo(flow Flow, info PhoneInfo) error {
	if len(flow.AllowedCountries) > 0 && !slices.Contains(flow.AllowedCountries, info.Country) {
		return invalid(ErrGeoNotAllowed, "to.mobile", "numbers in country %q are not allowed by this flow", info.Country)
	}
	if slices.Contains(flow.DeniedCountries, info.Country) {
		return invalid(ErrGeoNotAllowed, "to.mobile", "numbers in country %q are not allowed by this flow", info.Country)
	}
	if slices.Contains(flow.DeniedNumberTypes, info.Type) {
		return invalid(ErrGeoNotAllowed, "to.mobile", "%s numbers are not allowed by this flow", info.Type)
	}
	return nil
}
