package verify

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Protection configures abuse protection. Every field's zero value means
// the default given in its comment; a Rate with a negative Limit turns that
// limit off. Pass it with WithProtection.
type Protection struct {
	// RecipientSends limits Sends and Resends per recipient. Defaults to
	// 5 per 10 minutes.
	RecipientSends Rate
	// IPSends limits Sends per client IP (SendRequest.IPAddress). Defaults
	// to 20 per 10 minutes.
	IPSends Rate
	// FlowSends limits Sends per flow. Off by default; set it to cap spend.
	FlowSends Rate
	// GlobalSends limits all Sends of the engine's Store. Off by default.
	GlobalSends Rate
	// ResendCooldown is the least time between two deliveries of one
	// verification by Send or Resend. Defaults to 30 seconds; negative
	// turns it off.
	ResendCooldown time.Duration
	// IPChecks limits Checks per client IP (CheckRequest.IPAddress).
	// Defaults to 60 per minute.
	IPChecks Rate

	// FreeFailures is how many consecutive wrong codes a recipient may
	// enter, across all their verifications, before each further check must
	// wait: FailureDelay, doubling with every failure up to MaxFailureDelay.
	// Defaults to 10 failures, 1 second and 15 minutes.
	FreeFailures    int
	FailureDelay    time.Duration
	MaxFailureDelay time.Duration
	// MaxFailures consecutive wrong codes lock the recipient out of every
	// verification (NIST SP 800-63B allows at most 100) until LockFor has
	// passed since the last failure, or Unlock is called. A right code
	// resets the count; a new code, a resend or a fallback never does.
	// Defaults to 100 failures and 24 hours.
	MaxFailures int
	LockFor     time.Duration

	// PrefixSends limits Sends per number prefix (the E.164 number without
	// its last 4 digits), the unit SMS-pumping fraud works in. Defaults to
	// 20 per hour.
	PrefixSends Rate
	// CountrySends limits Sends per country (from the PhoneParser). Off by
	// default.
	CountrySends Rate
	// Conversion blocks a number prefix for BlockFor when, within Window,
	// at least MinSends codes were sent to it and fewer than Threshold of
	// them were verified. Defaults to 1 hour, 20 sends, 0.2 and 1 hour;
	// MinSends < 0 turns it off.
	Conversion Conversion
}

// Conversion configures the SMS-pumping conversion monitor.
type Conversion struct {
	Window    time.Duration
	MinSends  int
	Threshold float64
	BlockFor  time.Duration
}

// NoProtection returns a Protection with every limit, cooldown and block
// turned off, for tests and benchmarks. The lockout stays at NIST's bound
// of 100 consecutive wrong codes, reached without delays.
func NoProtection() Protection {
	off := Rate{Limit: -1}
	return Protection{
		RecipientSends: off, IPSends: off, FlowSends: off, GlobalSends: off, IPChecks: off,
		PrefixSends: off, CountrySends: off, ResendCooldown: -1,
		FreeFailures: 100, MaxFailures: 100,
		Conversion: Conversion{MinSends: -1},
	}.withDefaults()
}

// DefaultProtection returns the defaults WithProtection fills in.
func DefaultProtection() Protection {
	return Protection{}.withDefaults()
}

func (p Protection) withDefaults() Protection {
	rateDefault := func(r *Rate, limit int, per time.Duration) {
		if r.Limit == 0 {
			*r = Rate{Limit: limit, Per: per}
		}
	}
	rateDefault(&p.RecipientSends, 5, 10*time.Minute)
	rateDefault(&p.IPSends, 20, 10*time.Minute)
	rateDefault(&p.FlowSends, -1, 0)
	rateDefault(&p.GlobalSends, -1, 0)
	rateDefault(&p.IPChecks, 60, time.Minute)
	rateDefault(&p.PrefixSends, 20, time.Hour)
	rateDefault(&p.CountrySends, -1, 0)
	if p.ResendCooldown == 0 {
		p.ResendCooldown = 30 * time.Second
	}
	if p.FreeFailures == 0 {
		p.FreeFailures = 10
	}
	if p.FailureDelay == 0 {
		p.FailureDelay = time.Second
	}
	if p.MaxFailureDelay == 0 {
		p.MaxFailureDelay = 15 * time.Minute
	}
	if p.MaxFailures == 0 {
		p.MaxFailures = 100
	}
	if p.LockFor == 0 {
		p.LockFor = 24 * time.Hour
	}
	c := &p.Conversion
	if c.Window == 0 {
		c.Window = time.Hour
	}
	if c.MinSends == 0 {
		c.MinSends = 20
	}
	if c.Threshold == 0 {
		c.Threshold = 0.2
	}
	if c.BlockFor == 0 {
		c.BlockFor = time.Hour
	}
	return p
}

func (p Protection) validate() error {
	for name, r := range map[string]Rate{"RecipientSends": p.RecipientSends, "IPSends": p.IPSends,
		"FlowSends": p.FlowSends, "GlobalSends": p.GlobalSends, "IPChecks": p.IPChecks,
		"PrefixSends": p.PrefixSends, "CountrySends": p.CountrySends} {
		if r.Limit > 0 && r.Per <= 0 {
			return fmt.Errorf("verify: Protection.%s has Limit %d but Per %s; give a positive Per, or a negative Limit to turn it off", name, r.Limit, r.Per)
		}
	}
	switch {
	case p.FreeFailures < 0 || p.MaxFailures < 1 || p.MaxFailures > 100:
		return fmt.Errorf("verify: Protection needs 0 <= FreeFailures and 1 <= MaxFailures <= 100 (NIST SP 800-63B), got %d and %d", p.FreeFailures, p.MaxFailures)
	case p.FailureDelay < 0 || p.MaxFailureDelay < 0 || p.LockFor < 0:
		return errors.New("verify: Protection durations must not be negative")
	case p.Conversion.Threshold < 0 || p.Conversion.Threshold > 1:
		return fmt.Errorf("verify: Protection.Conversion.Threshold must be 0..1, got %g", p.Conversion.Threshold)
	}
	return nil
}

// WithProtection sets the abuse protection limits; fields left zero keep
// their defaults (see Protection and DefaultProtection).
func WithProtection(p Protection) Option {
	return func(c *config) error {
		c.protection = p.withDefaults()
		return c.protection.validate()
	}
}

// WithLimiter sets the Limiter for send and check rate limits. Defaults to
// a LocalLimiter, which counts in this process only; engines that share a
// Store across instances should share limits too:
//
//	verify.WithLimiter(verify.NewStoreLimiter(store))
//
// Failure lockouts and pumping blocks always live in the Store.
func WithLimiter(l Limiter) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("verify: WithLimiter(nil): pass verify.NewLocalLimiter() or verify.NewStoreLimiter(store)")
		}
		c.limiter = l
		return nil
	}
}

// SendAttempt describes a Send about to happen, for a SendHook.
type SendAttempt struct {
	FlowID    string
	To        Recipient
	Country   string // ISO 3166-1 alpha-2, "" if unknown
	Prefix    string // the phone number without its last 4 digits
	IPAddress string
	ForeignID string
}

// SendHook lets the host allow or deny each Send before anything is stored
// or sent (like a verification-request webhook). Returning an error blocks
// the Send: the caller gets E922 with the error's text as the reason, and
// the engine logs the block and emits a blocked event.
type SendHook func(ctx context.Context, a SendAttempt) error

// WithSendHook installs a SendHook.
func WithSendHook(h SendHook) Option {
	return func(c *config) error {
		c.sendHook = h
		return nil
	}
}

// rateLimited builds an E918 for a limit.
func rateLimited(what string, retryAfter time.Duration) *Error {
	err := invalid(ErrRateLimited, "", "too many %s; retry after %s", what, retryAfter.Round(time.Second))
	err.RetryAfter = retryAfter
	return err
}

// allow asks the limiter about one limit and turns a refusal into E918.
func (e *Engine) allow(ctx context.Context, key, what string, r Rate, now time.Time) error {
	ok, retry, err := e.limiter.Allow(ctx, key, r, now)
	if err != nil {
		return fmt.Errorf("verify: rate limit %s: %w", key, err)
	}
	if !ok {
		return rateLimited(what, retry)
	}
	return nil
}

// recipientKey names a recipient for limits and lockouts: the phone number
// if it has one, else the email address.
func recipientKey(to Recipient) string {
	if to.Phone != "" {
		return to.Phone
	}
	return to.Email
}

// phonePrefix is an E.164 number without its last 4 digits.
func phonePrefix(phone string) string {
	if len(phone) <= 5 {
		return phone
	}
	return phone[:len(phone)-4]
}

// checkSendLimits applies the send limits and the pumping guard.
func (e *Engine) checkSendLimits(ctx context.Context, flow Flow, a SendAttempt, now time.Time) error {
	p := &e.protection
	if a.Prefix != "" && p.Conversion.MinSends >= 0 { // blocks come from the conversion monitor
		c, err := e.store.GetCounter(ctx, "block:prefix:"+a.Prefix, now)
		if err != nil {
			return storeErr("get counter", err)
		}
		if c.Value > 0 {
			return e.blocked(ctx, a, fmt.Sprintf("number prefix %s is blocked for low conversion until %s", a.Prefix, c.ExpiresAt.Format(time.RFC3339)))
		}
	}
	limits := [...]struct {
		prefix, value, what string
		r                   Rate
	}{
		{"send:to:", recipientKey(a.To), "codes sent to this recipient", p.RecipientSends},
		{"send:ip:", a.IPAddress, "codes requested from this IP address", p.IPSends},
		{"send:flow:", flow.ID, "codes sent on this flow", p.FlowSends},
		{"send:", "all", "codes sent", p.GlobalSends},
		{"send:prefix:", a.Prefix, "codes sent to this number range", p.PrefixSends},
		{"send:country:", a.Country, "codes sent to this country", p.CountrySends},
	}
	for _, l := range limits {
		if l.r.off() || l.value == "" { // off, or nothing to key it by (no IP, no phone, ...)
			continue
		}
		if err := e.allow(ctx, l.prefix+l.value, l.what, l.r, now); err != nil {
			e.emit(ctx, Event{Type: EventRateLimited, FlowID: flow.ID, Time: now, ErrorCode: codeOf(err), Reason: l.what})
			return err
		}
	}
	return nil
}

// blocked records and answers a blocked Send.
func (e *Engine) blocked(ctx context.Context, a SendAttempt, reason string) error {
	now := e.now()
	e.log.LogAttrs(ctx, warnLevel, "verify: send blocked",
		logStr("flow", a.FlowID), logStr("prefix", a.Prefix), logStr("country", a.Country), logStr("reason", reason))
	e.emit(ctx, Event{Type: EventBlocked, FlowID: a.FlowID, Time: now, ErrorCode: ErrBlocked.Code, Reason: reason})
	if a.Prefix != "" {
		if _, err := e.store.AddCounter(ctx, "blocked:prefix:"+a.Prefix, 1, now.Add(e.protection.Conversion.Window), now); err != nil {
			return storeErr("add counter", err)
		}
	}
	return invalid(ErrBlocked, "to", "send blocked: %s", reason)
}

// countSent feeds the conversion monitor after a successful Send, and blocks
// the prefix if its conversion has fallen below the threshold.
func (e *Engine) countSent(ctx context.Context, prefix string, now time.Time) error {
	c := e.protection.Conversion
	if prefix == "" || c.MinSends < 0 {
		return nil
	}
	end := windowEnd(now, c.Window)
	sent, err := e.store.AddCounter(ctx, "conv:sent:"+prefix+":"+end.Format(time.RFC3339), 1, end, now)
	if err != nil {
		return storeErr("add counter", err)
	}
	if sent.Value < int64(c.MinSends) {
		return nil
	}
	ok, err := e.store.GetCounter(ctx, "conv:ok:"+prefix+":"+end.Format(time.RFC3339), now)
	if err != nil {
		return storeErr("get counter", err)
	}
	if float64(ok.Value) < c.Threshold*float64(sent.Value) {
		if _, err := e.store.AddCounter(ctx, "block:prefix:"+prefix, 1, now.Add(c.BlockFor), now); err != nil {
			return storeErr("add counter", err)
		}
		e.log.LogAttrs(ctx, warnLevel, "verify: number prefix blocked for low conversion",
			logStr("prefix", prefix), logInt("sent", sent.Value), logInt("verified", ok.Value))
	}
	return nil
}

// countVerified feeds the conversion monitor after a verification. It
// counts towards the window the verification was sent in.
func (e *Engine) countVerified(ctx context.Context, rec VerificationRecord) {
	c := e.protection.Conversion
	if rec.To.Phone == "" || c.MinSends < 0 {
		return
	}
	end := windowEnd(rec.CreatedAt, c.Window)
	if _, err := e.store.AddCounter(ctx, "conv:ok:"+phonePrefix(rec.To.Phone)+":"+end.Format(time.RFC3339), 1, end, rec.CreatedAt); err != nil {
		e.log.LogAttrs(ctx, warnLevel, "verify: counting a verification", logStr("error", err.Error()))
	}
}

func windowEnd(t time.Time, w time.Duration) time.Time {
	return time.Unix(0, (t.UnixNano()/int64(w)+1)*int64(w)).UTC()
}

// checkLockout returns the recipient's consecutive failures, and refuses a
// check while the recipient must wait after too many, or is locked out.
func (e *Engine) checkLockout(ctx context.Context, to Recipient, now time.Time) (int64, error) {
	p := &e.protection
	c, err := e.store.GetCounter(ctx, "fail:"+recipientKey(to), now)
	if err != nil {
		return 0, storeErr("get counter", err)
	}
	if c.Value >= int64(p.MaxFailures) {
		err := invalid(ErrLocked, "", "too many wrong codes for this recipient; locked until %s", c.ExpiresAt.Format(time.RFC3339))
		err.RetryAfter = c.ExpiresAt.Sub(now)
		return c.Value, err
	}
	if over := c.Value - int64(p.FreeFailures); over >= 0 {
		wait := p.FailureDelay << min(over, 30)
		if wait > p.MaxFailureDelay || wait <= 0 {
			wait = p.MaxFailureDelay
		}
		if next := c.UpdatedAt.Add(wait); now.Before(next) {
			return c.Value, rateLimited("wrong codes for this recipient", next.Sub(now))
		}
	}
	return c.Value, nil
}

// countFailure adds a wrong code to the recipient's consecutive failures.
func (e *Engine) countFailure(ctx context.Context, to Recipient, now time.Time) error {
	_, err := e.store.AddCounter(ctx, "fail:"+recipientKey(to), 1, now.Add(e.protection.LockFor), now)
	return storeErr("add counter", err)
}

// Unlock clears a recipient's consecutive wrong codes, lifting a lockout.
func (e *Engine) Unlock(ctx context.Context, to Recipient) error {
	key := recipientKey(Recipient{Phone: trimSpace(to.Phone), Email: trimSpace(to.Email)})
	if key == "" {
		return invalid(ErrInvalidRecipient, "to", "a recipient (mobile or email) is mandatory")
	}
	return storeErr("delete counter", e.store.DeleteCounter(ctx, "fail:"+key))
}
