package verify

import (
	"context"
	"errors"
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
// status sent.
//
// Refusals are *Error values, in this order: E909 unknown flow, E809 bad
// language, E920 client IP not allowed, E804 bad recipient, E921 country or
// number type not allowed, E805 bad custom code; then an IdempotencyKey
// seen before returns that verification (or E923 if the request differs);
// then the SendHook and the pumping guard (E922) and the rate limits
// (E918, with RetryAfter); then, when the recipient has an open
// verification on the flow, its Duplicates policy applies: reuse resends
// it (as Resend does, with its cooldown and MaxSends, but without counting
// the send limits twice) and returns it, replace cancels it first. Sends to
// one recipient racing under reuse or replace, on any number of engines,
// leave one verification open; one that keeps losing the race answers E918.
// The policy applies to the verifications started under it (marked
// Exclusive): those started while the flow allowed duplicates, or stored by
// a Store from before exclusivity, are left alone until they end.
//
// If every channel of a step fails, the next step is tried at once. If every
// step fails, the verification ends as failed and Send returns it together
// with an E915 error. Fallback steps with After > 0 are delivered later by
// Run or ProcessDue, while the verification is still open.
func (e *Engine) Send(ctx context.Context, req SendRequest) (Verification, error) {
	flow, err := e.resolveFlow(ctx, req.FlowID)
	if err != nil {
		return Verification{}, err
	}
	if req.Language != "" && !languageRE.MatchString(req.Language) {
		return Verification{}, invalid(ErrInvalidParameter, "language", "language %q is not a language tag such as \"en\" or \"pt-BR\"", req.Language)
	}
	if !ipAllowed(flow.AllowedIPs, req.IPAddress) {
		return Verification{}, invalid(ErrIPNotAllowed, "ip_address", "IP address %q is not on the flow's allow-list", req.IPAddress)
	}
	to, info, err := e.checkRecipient(flow, req.To)
	if err != nil {
		return Verification{}, err
	}
	var code string
	if req.Code != "" {
		c, ok := normalizeCode(req.Code)
		if !ok || len(c) != flow.CodeLength || !fitsCharset(c, flow.Charset) {
			return Verification{}, invalid(ErrInvalidCode, "otp", "a custom OTP must be %d %s characters", flow.CodeLength, flow.Charset)
		}
		code = c
	}

	var reqHash []byte
	if req.IdempotencyKey != "" {
		reqHash = e.keys.requestHash(flow.ID, to, code, req)
		if v, done, err := e.idempotent(ctx, req.IdempotencyKey, reqHash); done {
			return v, err
		}
	}
	now := e.now()
	attempt := SendAttempt{FlowID: flow.ID, To: to, Country: info.Country, IPAddress: req.IPAddress, ForeignID: req.ForeignID}
	if to.Phone != "" {
		attempt.Prefix = phonePrefix(to.Phone)
	}
	if e.sendHook != nil {
		if err := e.sendHook(ctx, attempt); err != nil {
			return Verification{}, e.blocked(ctx, attempt, err.Error())
		}
	}
	if err := e.checkSendLimits(ctx, flow, attempt, now); err != nil {
		return Verification{}, err
	}

	if code == "" {
		if code, err = generateCode(flow.CodeLength, flow.Charset); err != nil {
			return Verification{}, err
		}
	}
	id, err := newID()
	if err != nil {
		return Verification{}, err
	}
	hash, sealed, err := e.keys.protect(id, code)
	if err != nil {
		return Verification{}, err
	}
	rec := VerificationRecord{
		ID:               id,
		FlowID:           flow.ID,
		ForeignID:        req.ForeignID,
		Status:           StatusPending,
		To:               to,
		IPAddress:        req.IPAddress,
		IdempotencyKey:   req.IdempotencyKey,
		RequestHash:      reqHash,
		Exclusive:        flow.Duplicates != DuplicateAllow,
		Brand:            flow.Brand,
		Language:         resolveLanguage(req, to, flow),
		FallbackLanguage: flow.Language,
		CodeHash:         hash,
		SealedCode:       sealed,
		Charset:          flow.Charset,
		CodeLength:       flow.CodeLength,
		MaxAttempts:      flow.MaxAttempts,
		Sends:            1,
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
		err := e.store.CreateVerification(ctx, rec, pending)
		if err == nil {
			break
		}
		if req.IdempotencyKey != "" && (errors.Is(err, ErrDuplicate) || errors.Is(err, ErrOpenExists)) {
			// A concurrent request with the same key may have won.
			if v, done, err := e.idempotent(ctx, req.IdempotencyKey, reqHash); done {
				return v, err
			}
		}
		if !errors.Is(err, ErrOpenExists) {
			return Verification{}, storeErr("create verification", err)
		}
		if try == maxCreateTries {
			// Other Sends to this recipient keep starting verifications
			// (DuplicateReplace cancels them in turn): let them settle.
			return Verification{}, rateLimited("concurrent sends to this recipient", time.Second)
		}
		if v, reused, err := e.duplicate(ctx, flow, to, now); reused || err != nil {
			return v, err
		}
	}
	e.fixed.put(id, partsOf(&rec), now)
	if len(e.observers) > 0 {
		e.emit(ctx, Event{Type: EventCreated, VerificationID: id, FlowID: flow.ID, Time: now})
	}
	first := groupEnd(rec.Steps, 0)
	failedAll := true
	for step := 0; step < first; step++ {
		d, _, err := e.deliver(ctx, &rec, code, step, now)
		if err != nil {
			return Verification{}, err
		}
		rec.Deliveries = append(rec.Deliveries, d)
		if d.Status != DeliveryFailed {
			failedAll = false
			if rec.Status == StatusPending {
				rec.Status = StatusSent
			}
		}
	}
	if failedAll {
		// deliver moved on through the later steps; read what happened.
		if rec, err = e.store.GetVerification(ctx, id); err != nil {
			return Verification{}, storeErr("get verification", err)
		}
		if rec.Status == StatusFailed {
			return rec.public(), e.deliveryError(rec)
		}
	}
	if err := e.countSent(ctx, attempt.Prefix, now); err != nil {
		return rec.public(), err
	}
	if e.log.Enabled(ctx, slog.LevelDebug) {
		e.log.LogAttrs(ctx, slog.LevelDebug, "verify: sent", slog.String("verification", id), slog.String("flow", flow.ID))
	}
	return rec.public(), nil
}

// maxCreateTries bounds how often Send tries to store an exclusive
// verification while others for the same recipient keep appearing.
const maxCreateTries = 5

// duplicate applies the flow's Duplicates policy to the recipient's open
// verifications, which kept an exclusive one from being stored. With
// DuplicateReuse it resends the newest unexpired one (reused = true);
// otherwise it ends them all (expired or canceled), so that the caller can
// store its own. Send limits were counted for this request already, so the
// resend does not count them again.
func (e *Engine) duplicate(ctx context.Context, flow Flow, to Recipient, now time.Time) (v Verification, reused bool, err error) {
	open, err := e.store.FindOpen(ctx, flow.ID, to, time.Time{})
	if err != nil {
		return Verification{}, false, storeErr("find open verifications", err)
	}
	for _, o := range open {
		live := now.Before(o.ExpiresAt)
		if live && flow.Duplicates == DuplicateReuse {
			v, err := e.resend(ctx, o.ID, false)
			if err != nil && v.Status != "" && !v.Status.Open() {
				// It ended meanwhile (verified, canceled, ...): make room
				// for a new one instead.
				continue
			}
			return v, true, err
		}
		status := StatusCanceled
		if !live {
			status = StatusExpired
		}
		if _, _, err := e.finish(ctx, o.ID, status, now); err != nil {
			return Verification{}, false, err
		}
	}
	return Verification{}, false, nil
}

// idempotent looks up a verification by idempotency key. done is true when
// one exists: the caller returns v (the same request) or E923.
func (e *Engine) idempotent(ctx context.Context, key string, reqHash []byte) (v Verification, done bool, err error) {
	prev, err := e.store.FindByIdempotencyKey(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return Verification{}, false, nil
	}
	if err != nil {
		return Verification{}, true, storeErr("find by idempotency key", err)
	}
	if !sameBytes(prev.RequestHash, reqHash) {
		return Verification{}, true, invalid(ErrIdempotencyMismatch, "idempotency_key", "idempotency key %q was used for a different request", key)
	}
	return prev.public(), true, nil
}

func sameBytes(a, b []byte) bool { return string(a) == string(b) }

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

// cooldownLeft is how long until the verification may be delivered again
// by Resend: ResendCooldown after its latest Send or Resend delivery.
func (e *Engine) cooldownLeft(rec VerificationRecord, now time.Time) time.Duration {
	if e.protection.ResendCooldown < 0 {
		return 0
	}
	var last time.Time
	for _, d := range rec.Deliveries {
		if (d.Step <= 0) && d.CreatedAt.After(last) {
			last = d.CreatedAt
		}
	}
	if last.IsZero() {
		return 0
	}
	return last.Add(e.protection.ResendCooldown).Sub(now)
}
