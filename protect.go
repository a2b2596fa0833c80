package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
// Failure lockouts and pumping blocks always live in the engine's Counters
// (the Store's, unless WithCounters names another backend).
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
	err := invalid(ErrRateLimited, "", "too many %s; retry after %ds", what, retrySeconds(retryAfter))
	err.RetryAfter = retryAfter
	return err
}

// retrySeconds is a wait in whole seconds, rounded up, as a message and an
// HTTP Retry-After header state it: a caller told "retry after 1s" who
// waits 1s finds the limit open.
func retrySeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
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

// sendLimit is one of the send limits, with what a refusal names.
type sendLimit struct {
	prefix, what string
	r            Rate
}

// The send limits, in the order Send applies them; sendLimits keys them.
func (p *Protection) sendLimitTable() [6]sendLimit {
	return [6]sendLimit{
		{"send:to:", "codes sent to this recipient", p.RecipientSends},
		{"send:ip:", "codes requested from this IP address", p.IPSends},
		{"send:flow:", "codes sent on this flow", p.FlowSends},
		{"send:", "codes sent", p.GlobalSends},
		{"send:prefix:", "codes sent to this number range", p.PrefixSends},
		{"send:country:", "codes sent to this country", p.CountrySends},
	}
}

// sendLimits lists the send limits that apply to a, and for each the index
// of its row in sendLimitTable; limits that are off or have nothing to key
// by (no IP, no phone, ...) are left out.
func (e *Engine) sendLimits(flowID string, a SendAttempt) ([]Limit, [6]uint8) {
	table := e.protection.sendLimitTable()
	values := [6]string{recipientKey(a.To), a.IPAddress, flowID, "all", a.Prefix, a.Country}
	var rows [6]uint8
	var limits []Limit
	for i, l := range table {
		if l.r.off() || values[i] == "" {
			continue
		}
		if limits == nil {
			limits = make([]Limit, 0, len(table)-i)
		}
		rows[len(limits)] = uint8(i)
		limits = append(limits, Limit{Key: l.prefix + values[i], Rate: l.r})
	}
	return limits, rows
}

// admitSend applies the pumping guard's prefix block and then every send
// limit, in that order: the block counts nothing, and the limits are
// counted all or nothing by the Limiter, so a refused Send spends nothing.
// With a CountingStore, the block is checked by the step that stores the
// verification and counts the send (see create), and the limits are given
// back if it refuses; with a StoreLimiter on that Store too, the limits
// are left to that step (p.limits), which decides them after the block
// and counts them with the verification. Otherwise the block's check is a
// Take that counts the send too, given back if the Send fails (see
// uncountSent), and the limits of a StoreLimiter on those counters join
// it: one call for three.
// The caller refunds the returned Allowance if it refuses the Send later
// (a reused verification in its resend cooldown, say).
func (e *Engine) admitSend(ctx context.Context, p *sendPlan, now time.Time) (Allowance, error) {
	a := p.attempt
	limits, rows := e.sendLimits(p.flow.ID, a)
	if e.counting != nil && e.shared != nil && storeCountable(limits) {
		// The Store decides the limits with the block, in the write that
		// stores the verification (see create): nothing to count here.
		p.limits, p.rows = limits, rows
		return Allowance{}, nil
	}
	if e.counting == nil {
		if cnt, ok := e.sentCount(a.Prefix, now); ok {
			// Max 0 refuses while the block is set, and then counts
			// nothing; with a StoreLimiter on the same counters, the
			// limits join the same Take. (With a CountingStore, the Store
			// checks the block when it stores the verification, see
			// create, and the limits below are given back if it refuses.)
			takes := []Take{{Key: blockKey(a.Prefix), Delta: 0, Max: 0}, cnt.Take()}
			var (
				allowed      Allowance
				res          Taken
				refusedFirst bool
				err          error
			)
			shared := e.shared != nil && len(limits) > 0
			if shared {
				allowed, res, refusedFirst, err = e.shared.allowWith(ctx, now, limits, takes, nil)
			} else {
				res, err = takeAll(ctx, e.counters, now, takes)
			}
			if err != nil {
				return Allowance{}, storeErr(ctx, "check prefix block", err)
			}
			if block := res.Counters[0]; block.Value > 0 {
				return Allowance{}, e.prefixBlocked(ctx, a, block, now)
			}
			if res.OK {
				p.sent = max(res.Counters[1].Value, 1)
			}
			if shared && !refusedFirst { // the limits were decided with the Take
				if !allowed.OK {
					return Allowance{}, e.sendLimited(ctx, p, rows[allowed.Refused], allowed.RetryAfter, now)
				}
				return allowed, nil
			}
		}
	}
	if len(limits) == 0 {
		return Allowance{OK: true, Refused: -1, Now: now}, nil
	}
	allowed, err := e.allowLimits(ctx, p, limits, rows, now)
	if err != nil {
		e.uncountSent(ctx, p, now)
	}
	return allowed, err
}

// allowLimits counts a Send against limits (their rows in the send limit
// table) with the Limiter, all or nothing: E918 if one refuses.
func (e *Engine) allowLimits(ctx context.Context, p *sendPlan, limits []Limit, rows [6]uint8, now time.Time) (Allowance, error) {
	allowed, err := e.limiter.Allow(ctx, now, limits)
	if err != nil {
		return Allowance{}, storeErr(ctx, "rate limit", err)
	}
	if !allowed.OK {
		return Allowance{}, e.sendLimited(ctx, p, rows[allowed.Refused], allowed.RetryAfter, now)
	}
	return allowed, nil
}

// storeCountable reports whether limits are some, each of which a Count's
// Limit can state.
func storeCountable(limits []Limit) bool {
	return len(limits) > 0 && !slices.ContainsFunc(limits, func(l Limit) bool { return l.Rate.Limit <= 0 })
}

// allowDeferred counts with the Limiter the limits admitSend left to the
// write that stores the verification (p.limits), for a Send that must do
// more than that write (reuse, or replace, an open verification): as
// p.allowed, which Send gives back if nothing goes out, and which the
// Send's later writes count no more.
func (e *Engine) allowDeferred(ctx context.Context, p *sendPlan, now time.Time) error {
	if p.limits == nil {
		return nil
	}
	allowed, err := e.allowLimits(ctx, p, p.limits, p.rows, now)
	if err == nil {
		p.allowed, p.limits = allowed, nil
	}
	return err
}

// limitCounts are the Counts that decide and count limits at now as a
// StoreLimiter's Allow does, in the order of limits (countable ones).
func limitCounts(now time.Time, limits []Limit) []Count {
	takes, _ := storeTakes(now, limits, 1)
	counts := make([]Count, len(takes))
	for i, t := range takes {
		counts[i] = Count{Key: t.Key, Delta: t.Delta, ExpiresAt: t.ExpiresAt, Limit: t.Max}
	}
	return counts
}

// sendLimited records and answers a Send refused by the limit of the send
// limit table's row.
func (e *Engine) sendLimited(ctx context.Context, p *sendPlan, row uint8, retryAfter time.Duration, now time.Time) error {
	what := e.protection.sendLimitTable()[row].what
	e.refused(limitReason(what), now)
	err := rateLimited(what, retryAfter)
	e.emit(ctx, Event{Type: EventRateLimited, FlowID: p.flow.ID, Time: now, ErrorCode: err.Code, Reason: what})
	return err
}

// refund gives back what an Allowance counted, for a request refused
// after it was admitted. A failure is logged: the request's answer stands.
func (e *Engine) refund(ctx context.Context, a Allowance) {
	if !a.OK || len(a.Limits) == 0 {
		return
	}
	ctx, cancel := givingBack(ctx)
	defer cancel()
	if err := e.limiter.Refund(ctx, a); err != nil {
		e.log.LogAttrs(ctx, warnLevel, "verify: refunding rate limits", logStr("error", err.Error()))
	}
}

// allowOne applies a single limit, as an Allowance to refund if the
// request is refused later.
func (e *Engine) allowOne(ctx context.Context, key, what string, r Rate, now time.Time) (Allowance, error) {
	if r.off() {
		return Allowance{OK: true, Refused: -1, Now: now}, nil
	}
	a, err := e.limiter.Allow(ctx, now, []Limit{{Key: key, Rate: r}})
	if err != nil {
		return Allowance{}, storeErr(ctx, "rate limit", err)
	}
	if !a.OK {
		e.refused(limitReason(what), now)
		return Allowance{}, rateLimited(what, a.RetryAfter)
	}
	return a, nil
}

func blockKey(prefix string) string { return blockPrefix + prefix }

// prefixBlocked records and answers a Send to a prefix whose block, c at
// now, refuses it.
func (e *Engine) prefixBlocked(ctx context.Context, a SendAttempt, c Counter, now time.Time) error {
	return e.blocked(ctx, a, RefusalPrefix, fmt.Sprintf("number prefix %s is blocked for low conversion until %s", a.Prefix, c.ExpiresAt.Format(time.RFC3339)), c.ExpiresAt.Sub(now))
}

// blockGuard is the guard of a prefix's block: a block counter above zero
// refuses a Send.
func blockGuard(prefix string) Guard { return Guard{Key: blockKey(prefix), Max: 1} }

// blocked records and answers a blocked Send.
func (e *Engine) blocked(ctx context.Context, a SendAttempt, category, reason string, retryAfter time.Duration) error {
	now := e.now()
	e.refused(category, now)
	e.log.LogAttrs(ctx, warnLevel, "verify: send blocked",
		logStr("flow", a.FlowID), logStr("prefix", a.Prefix), logStr("country", a.Country), logStr("reason", reason))
	e.emit(ctx, Event{Type: EventBlocked, FlowID: a.FlowID, Time: now, ErrorCode: ErrBlocked.Code, Reason: reason})
	err := invalid(ErrBlocked, "to", "send blocked: %s", reason)
	err.RetryAfter = retryAfter
	return err
}

// count adds delta to a counter with no limit and returns its new value.
func (e *Engine) count(ctx context.Context, key string, delta int64, expiresAt, now time.Time) (int64, error) {
	res, err := e.counters.Take(ctx, now, []Take{{Key: key, Delta: delta, Max: NoLimit, ExpiresAt: expiresAt}})
	if err != nil {
		return 0, err
	}
	return res.Counters[0].Value, nil
}

// sentCount is the conversion monitor's count of a code sent to prefix at
// now; false when the monitor is off or there is no prefix.
func (e *Engine) sentCount(prefix string, now time.Time) (Count, bool) {
	c := e.protection.Conversion
	if prefix == "" || c.MinSends < 0 {
		return Count{}, false
	}
	end := windowEnd(now, c.Window)
	return Count{Key: "conv:sent:" + prefix + ":" + end.Format(time.RFC3339), Delta: 1, ExpiresAt: end}, true
}

// verifiedCount is the conversion monitor's count of rec verified: it
// counts towards the window rec was sent in. false when the monitor is off
// or rec has no phone number.
func (e *Engine) verifiedCount(to Recipient, createdAt time.Time) (Count, bool) {
	c := e.protection.Conversion
	if to.Phone == "" || c.MinSends < 0 {
		return Count{}, false
	}
	end := windowEnd(createdAt, c.Window)
	return Count{Key: "conv:ok:" + phonePrefix(to.Phone) + ":" + end.Format(time.RFC3339), Delta: 1, ExpiresAt: end}, true
}

// countSent feeds the conversion monitor after a successful Send, and blocks
// the prefix if its conversion has fallen below the threshold. When the
// send was counted already (p.sent > 0: by a CountingStore with the
// verification, or by admitSend), only the judgement is left.
func (e *Engine) countSent(ctx context.Context, p *sendPlan, now time.Time) error {
	c := e.protection.Conversion
	sent := p.sent
	switch {
	case sent > 0 && sent < int64(c.MinSends): // counted, and nothing to judge
		return nil
	case sent == 0 && e.counting != nil:
		// A verification this Send did not store (an idempotent retry's):
		// its send was counted when it was stored.
		return nil
	}
	cnt, ok := e.sentCount(p.attempt.Prefix, now)
	if !ok {
		return nil
	}
	if sent == 0 {
		var err error
		if sent, err = e.count(ctx, cnt.Key, cnt.Delta, cnt.ExpiresAt, now); err != nil {
			return storeErr(ctx, "count send", err)
		}
	}
	if sent < int64(c.MinSends) {
		return nil
	}
	prefix := p.attempt.Prefix
	ok2, err := e.counters.GetCounter(ctx, "conv:ok:"+prefix+":"+cnt.ExpiresAt.Format(time.RFC3339), now)
	if err != nil {
		return storeErr(ctx, "get counter", err)
	}
	if float64(ok2.Value) < c.Threshold*float64(sent) {
		if _, err := e.count(ctx, blockKey(prefix), 1, now.Add(c.BlockFor), now); err != nil {
			return storeErr(ctx, "block prefix", err)
		}
		e.log.LogAttrs(ctx, warnLevel, "verify: number prefix blocked for low conversion",
			logStr("prefix", prefix), logInt("sent", sent), logInt("verified", ok2.Value))
	}
	return nil
}

// uncountSent gives back the send counted for a Send that failed or was
// answered without a new verification (with the verification by a
// CountingStore, or with the block's check by admitSend), so that the
// monitor counts the codes that new verifications sent, once each. A
// failure is logged.
func (e *Engine) uncountSent(ctx context.Context, p *sendPlan, now time.Time) {
	cnt, ok := e.sentCount(p.attempt.Prefix, now)
	if !ok || p.sent == 0 {
		return
	}
	e.giveBack(ctx, cnt, now, "send count")
	p.sent = 0
}

// uncountVerified gives back a verification's count (cnt) taken with a
// Check's failures for a right code the Store then did not verify. A
// failure is logged.
func (e *Engine) uncountVerified(ctx context.Context, cnt *Count, now time.Time) {
	if cnt != nil {
		e.giveBack(ctx, *cnt, now, "verification count")
	}
}

// giveBack takes back what cnt counted (what names it in the log, should
// that fail), even once the caller has gone (see givingBack).
func (e *Engine) giveBack(ctx context.Context, cnt Count, now time.Time, what string) {
	ctx, cancel := givingBack(ctx)
	defer cancel()
	if _, err := e.count(ctx, cnt.Key, -cnt.Delta, cnt.ExpiresAt, now); err != nil {
		e.log.LogAttrs(ctx, warnLevel, "verify: giving back a "+what, logStr("error", err.Error()))
	}
}

// givingBack is the context of a give-back (a refund, a failure slot, a
// count): it runs even when the caller has given up (a request cancelled
// while its attempt was out must not leave what it counted counted),
// bounded by releaseTimeout.
func givingBack(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
}

func windowEnd(t time.Time, w time.Duration) time.Time {
	return time.Unix(0, (t.UnixNano()/int64(w)+1)*int64(w)).UTC()
}

// failKey names the counter of a recipient's consecutive wrong codes.
func failKey(to Recipient) string { return failPrefix + recipientKey(to) }

// reserveFailure takes one of the recipient's failure slots before a code
// is compared, deciding and counting in one Counters.Take: it is refused
// once MaxFailures consecutive wrong codes are counted (E919, until LockFor
// after the last) or while the growing delay after FreeFailures has not
// passed (E918). However many checks race, at most MaxFailures wrong codes
// are judged, and past FreeFailures none before its delay. A right code
// resets the slots (resetFailures); a check that judged no code gives its
// slot back (refundFailure).
func (e *Engine) reserveFailure(ctx context.Context, key string, now time.Time) error {
	res, err := e.counters.Take(ctx, now, []Take{e.failureSlot(key, now)})
	if err != nil {
		return storeErr(ctx, "reserve failure slot", err)
	}
	if res.OK {
		return nil
	}
	return e.failureRefusal(res.Counters[0], res.RetryAfter, now)
}

// failureSlot is the Take of one of the recipient's failure slots (see
// reserveFailure).
func (e *Engine) failureSlot(key string, now time.Time) Take {
	p := &e.protection
	return Take{Key: key, Delta: 1, Max: int64(p.MaxFailures), ExpiresAt: now.Add(p.LockFor), Backoff: e.failureBackoff()}
}

// failureRefusal answers a check whose Take of the recipient's failures,
// c at now, was refused with retryAfter.
func (e *Engine) failureRefusal(c Counter, retryAfter time.Duration, now time.Time) error {
	if err := e.failuresRefuse(c, now); err != nil {
		return err
	}
	e.refused(RefusalWaiting, now)
	return rateLimited("wrong codes for this recipient", retryAfter)
}

// failuresRefuse answers a check for a recipient whose failures are c at
// now, as a failure slot's Take decides it: E919 once MaxFailures are
// counted, until the counter expires; E918 while the delay after the last
// failure lasts; nil otherwise.
func (e *Engine) failuresRefuse(c Counter, now time.Time) error {
	if c.Value >= int64(e.protection.MaxFailures) {
		e.refused(RefusalLocked, now)
		err := invalid(ErrLocked, "", "too many wrong codes for this recipient; locked until %s", c.ExpiresAt.Format(time.RFC3339))
		err.RetryAfter = c.ExpiresAt.Sub(now)
		return err
	}
	if now.Before(c.NotBefore) {
		e.refused(RefusalWaiting, now)
		return rateLimited("wrong codes for this recipient", c.waitEnds().Sub(now))
	}
	return nil
}

func (e *Engine) failureBackoff() Backoff {
	p := &e.protection
	return Backoff{Free: int64(p.FreeFailures), Base: p.FailureDelay, Max: p.MaxFailureDelay}
}

// refundFailure gives back a failure slot that judged no code. The delay
// the slot set stays if the failures left still owe one (past
// FreeFailures), and is lifted otherwise.
func (e *Engine) refundFailure(ctx context.Context, key string, now time.Time) {
	ctx, cancel := givingBack(ctx)
	defer cancel()
	if _, err := e.counters.Take(ctx, now, []Take{{Key: key, Delta: -1, Max: NoLimit, Backoff: e.failureBackoff()}}); err != nil {
		e.log.LogAttrs(ctx, warnLevel, "verify: giving back a failure slot", logStr("error", err.Error()))
	}
}

// resetFailures clears the recipient's consecutive failures after a right
// code.
func (e *Engine) resetFailures(ctx context.Context, key string) error {
	return storeErr(ctx, "reset failures", e.counters.DeleteCounter(ctx, key))
}

// resetFailuresAfter is resetFailures after a code was verified: like a
// give-back, it runs even when the caller has gone.
func (e *Engine) resetFailuresAfter(ctx context.Context, key string) error {
	ctx, cancel := givingBack(ctx)
	defer cancel()
	return e.resetFailures(ctx, key)
}

// Unlock clears a recipient's consecutive wrong codes, lifting a lockout.
func (e *Engine) Unlock(ctx context.Context, to Recipient) error {
	to = Recipient{Phone: trimSpace(to.Phone), Email: trimSpace(to.Email)}
	if recipientKey(to) == "" {
		return invalid(ErrInvalidRecipient, "to", "a recipient (mobile or email) is mandatory")
	}
	return e.resetFailures(ctx, failKey(to))
}
