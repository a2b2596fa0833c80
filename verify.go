// Package verify generates one-time codes, delivers them over an ordered
// list of channels with timed fallback, and checks them — what hosted Verify
// APIs (Kaleyra, Twilio, Vonage, ...) sell as a service, inside the host's
// own process and database.
//
// Build an Engine from a Store (memstore for tests and single processes,
// sqlstore for SQLite or PostgreSQL) and some Channels, create a Flow, then
// call Send and Check:
//
//	eng, err := verify.New(store, verify.WithChannels(sms, email), verify.WithSecret(secret))
//	flow, err := eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{
//		{Channel: "sms"},
//		{Channel: "email", After: 30 * time.Second},
//	}})
//	v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}})
//	_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: input})
//	go eng.Run(ctx) // sends fallback steps when they are due
//
// Errors the engine returns for refused requests are *Error values with
// Kaleyra-style codes (E800–E917); see errors.go for the table. Codes are
// never stored in plain text and never appear in errors, logs or String
// output.
package verify

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/benbjohnson/clock"
)

// Engine sends and checks one-time codes. It keeps no state of its own:
// every verification lives in the Store, so engines in several processes
// that share a Store and a secret act as one. An Engine is safe for
// concurrent use.
type Engine struct {
	store       Store
	channels    map[string]Channel
	clock       clock.Clock
	keys        *keyring
	log         *slog.Logger
	lease       time.Duration
	sendTimeout time.Duration
	poll        time.Duration
	retention   time.Duration
	maxSends    int
	batch       int
	concurrency int
}

// Option configures an Engine.
type Option func(*config) error

type config struct {
	channels    []Channel
	clock       clock.Clock
	secrets     [][]byte
	logger      *slog.Logger
	lease       time.Duration
	sendTimeout time.Duration
	poll        time.Duration
	retention   time.Duration
	maxSends    int
	batch       int
	concurrency int
}

// WithChannels registers channels; flows refer to them by Name. Names must
// be unique.
func WithChannels(chs ...Channel) Option {
	return func(c *config) error {
		c.channels = append(c.channels, chs...)
		return nil
	}
}

// WithClock sets the clock the engine reads time from. Defaults to the
// wall clock (clock.New()); tests pass clock.NewMock() to drive expiry and
// fallback without sleeping.
func WithClock(cl clock.Clock) Option {
	return func(c *config) error {
		if cl == nil {
			return errors.New("verify: WithClock(nil): pass clock.New() or clock.NewMock()")
		}
		c.clock = cl
		return nil
	}
}

// WithSecret sets the secrets that protect codes at rest: the first key
// hashes and seals new codes, every key checks and unseals, so a secret can
// be rotated by putting the new one first and keeping the old one until its
// verifications have ended. Each key must be at least 16 random bytes (32
// recommended). Every engine sharing a Store needs the same keys.
//
// Without WithSecret, New makes a random secret and logs a warning: codes
// then do not survive a restart and do not work across instances.
func WithSecret(keys ...[]byte) Option {
	return func(c *config) error {
		if len(keys) == 0 {
			return errors.New("verify: WithSecret needs at least one key")
		}
		c.secrets = nil // a later WithSecret replaces an earlier one
		for _, k := range keys {
			c.secrets = append(c.secrets, append([]byte(nil), k...))
		}
		return nil
	}
}

// WithLogger sets the logger. Defaults to slog.Default(). The engine logs
// IDs, channels and errors, never codes.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("verify: WithLogger(nil): pass a *slog.Logger")
		}
		c.logger = l
		return nil
	}
}

// WithMaxSends sets how many times one verification's code may be sent by
// Send and Resend together; fallback steps do not count. Defaults to 5.
func WithMaxSends(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("verify: WithMaxSends(%d): must be at least 1", n)
		}
		c.maxSends = n
		return nil
	}
}

// WithLease sets how long ProcessDue holds a claimed step before another
// engine may claim it again (after a crash mid-send). It must exceed the
// send timeout. Defaults to 2 minutes.
func WithLease(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("verify: WithLease(%s): must be positive", d)
		}
		c.lease = d
		return nil
	}
}

// WithSendTimeout bounds each Channel.Send call. Defaults to 30 seconds.
func WithSendTimeout(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("verify: WithSendTimeout(%s): must be positive", d)
		}
		c.sendTimeout = d
		return nil
	}
}

// WithPollInterval sets how often Run looks for due steps when none is
// known to be due sooner (steps created by other instances are found this
// way). Defaults to 1 second.
func WithPollInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("verify: WithPollInterval(%s): must be positive", d)
		}
		c.poll = d
		return nil
	}
}

// WithRetention sets how long ended verifications are kept (so a late
// Check gets E910/E913/E911 rather than E909) before Purge deletes them.
// Defaults to 30 days.
func WithRetention(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("verify: WithRetention(%s): must be positive", d)
		}
		c.retention = d
		return nil
	}
}

// WithConcurrency sets how many due steps ProcessDue delivers at once.
// Defaults to 8.
func WithConcurrency(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("verify: WithConcurrency(%d): must be at least 1", n)
		}
		c.concurrency = n
		return nil
	}
}

// New returns an Engine over store. It starts no goroutines: call Run (or
// ProcessDue) to deliver fallback steps.
func New(store Store, opts ...Option) (*Engine, error) {
	if store == nil {
		return nil, errors.New("verify: New(nil store): pass memstore.New() or a sqlstore.Store")
	}
	c := config{
		lease:       2 * time.Minute,
		sendTimeout: 30 * time.Second,
		poll:        time.Second,
		retention:   30 * 24 * time.Hour,
		maxSends:    5,
		batch:       100,
		concurrency: 8,
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	if c.clock == nil {
		c.clock = clock.New()
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	if c.sendTimeout >= c.lease {
		return nil, fmt.Errorf("verify: send timeout %s must be shorter than the lease %s (see WithSendTimeout, WithLease)", c.sendTimeout, c.lease)
	}
	if len(c.secrets) == 0 {
		s := make([]byte, 32)
		if _, err := rand.Read(s); err != nil {
			return nil, fmt.Errorf("verify: reading crypto/rand: %w", err)
		}
		c.secrets = [][]byte{s}
		c.logger.Warn("verify: no secret configured; using a random one, so codes do not survive a restart or work across instances (use verify.WithSecret)")
	}
	kr, err := newKeyring(c.secrets)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		store:       store,
		channels:    make(map[string]Channel, len(c.channels)),
		clock:       c.clock,
		keys:        kr,
		log:         c.logger,
		lease:       c.lease,
		sendTimeout: c.sendTimeout,
		poll:        c.poll,
		retention:   c.retention,
		maxSends:    c.maxSends,
		batch:       c.batch,
		concurrency: c.concurrency,
	}
	for _, ch := range c.channels {
		if ch == nil {
			return nil, errors.New("verify: WithChannels got a nil Channel")
		}
		name := ch.Name()
		if name == "" {
			return nil, fmt.Errorf("verify: channel %T has an empty Name", ch)
		}
		if _, dup := e.channels[name]; dup {
			return nil, fmt.Errorf("verify: two channels are named %q; names must be unique", name)
		}
		e.channels[name] = ch
	}
	return e, nil
}

// Send starts a verification: it resolves the flow (FlowID "" is the default
// flow), validates the recipient for every step's channel, generates the
// code (or checks the custom one), stores the verification with all its
// steps, and delivers the first step together with its send-anyway
// companions before returning, with status sent.
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
	to, err := e.checkRecipient(flow.Steps, req.To)
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
	} else if code, err = generateCode(flow.CodeLength, flow.Charset); err != nil {
		return Verification{}, err
	}

	now := e.clock.Now().UTC()
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
		CreatedAt:        now,
		ExpiresAt:        now.Add(flow.TTL),
	}
	// Every step is a pending row, the first group leased to this call, so
	// that a crash before it is delivered loses nothing: another engine
	// claims it when the lease runs out.
	pending := schedule(id, rec.Steps, 0, now, now.Add(e.lease))
	if err := e.store.CreateVerification(ctx, rec, pending); err != nil {
		return Verification{}, storeErr("create verification", err)
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
	if e.log.Enabled(ctx, slog.LevelDebug) {
		e.log.LogAttrs(ctx, slog.LevelDebug, "verify: sent", slog.String("verification", id), slog.String("flow", flow.ID))
	}
	return rec.public(), nil
}

func (e *Engine) deliveryError(rec VerificationRecord) *Error {
	err := ErrDeliveryFailed.with("channel", "")
	err.Reference = rec.ID
	return err
}

func (e *Engine) resolveFlow(ctx context.Context, id string) (Flow, error) {
	var f Flow
	var err error
	if id == "" {
		f, err = e.store.DefaultFlow(ctx)
	} else {
		f, err = e.store.GetFlow(ctx, id)
	}
	if errors.Is(err, ErrNotFound) {
		if id == "" {
			return Flow{}, ErrNotFound.with("flow_id", "Record not found: no flow_id given and no default flow")
		}
		return Flow{}, ErrNotFound.with("flow_id", "")
	}
	return f, storeErr("get flow", err)
}

// checkRecipient trims the recipient and checks it has what every step's
// channel needs: an E.164 phone number for phone channels, a bare email
// address for email channels.
func (e *Engine) checkRecipient(steps []Step, to Recipient) (Recipient, error) {
	to.Phone = strings.TrimSpace(to.Phone)
	to.Email = strings.TrimSpace(to.Email)
	needPhone, needEmail := false, false
	for _, s := range steps {
		ch, ok := e.channels[s.Channel]
		if !ok {
			return Recipient{}, invalid(ErrUnknownChannel, "channel", "the flow's channel %q is not registered with this engine", s.Channel)
		}
		if addressingOf(ch) == ByEmail {
			needEmail = true
		} else {
			needPhone = true
		}
	}
	if to.Phone == "" && to.Email == "" {
		return Recipient{}, invalid(ErrInvalidRecipient, "to", "a recipient (mobile or email) is mandatory")
	}
	if needPhone || to.Phone != "" {
		if to.Phone == "" {
			return Recipient{}, invalid(ErrInvalidRecipient, "to.mobile", "the flow has a phone channel; a mobile number is mandatory")
		}
		if !isE164(to.Phone) {
			return Recipient{}, invalid(ErrInvalidRecipient, "to.mobile", "mobile must be in E.164 format, such as +4712345678")
		}
	}
	if needEmail || to.Email != "" {
		if to.Email == "" {
			return Recipient{}, invalid(ErrInvalidRecipient, "to.email", "the flow has an email channel; an email address is mandatory")
		}
		a, err := mail.ParseAddress(to.Email)
		if err != nil || a.Name != "" || a.Address != to.Email {
			return Recipient{}, invalid(ErrInvalidRecipient, "to.email", "email must be a bare address, such as ana@example.com")
		}
	}
	return to, nil
}

// isE164 reports whether s is "+" followed by 8 to 15 digits, the first not 0.
func isE164(s string) bool {
	if len(s) < 9 || len(s) > 16 || s[0] != '+' || s[1] < '1' || s[1] > '9' {
		return false
	}
	for i := 2; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Check checks a code. It returns the verification and a nil error only
// when this call verified it. Otherwise the error is an *Error, answered in
// this order:
//
//  1. E800 empty VerifyID, E801 empty Code, E803 a code that is not
//     [0-9A-Za-z] — these consume no attempt;
//  2. E909 unknown VerifyID;
//  3. for a verification that has ended: E910 verified, E914 canceled,
//     E915 failed, E911 max_attempts, E913 expired; for an open one whose
//     attempts are used up, E911, and past ExpiresAt, E913 — none of these
//     consume an attempt;
//  4. otherwise the attempt is counted (atomically, before comparing), and a
//     wrong code answers E912 with AttemptsRemaining; the attempt that uses
//     the last try answers E912 with 0 remaining and ends the verification
//     as max_attempts.
//
// Alphanumeric codes are compared case-insensitively. The right code ends
// the verification as verified, sets VerifiedAt and cancels its pending
// steps; of many concurrent right answers exactly one succeeds and the
// others get E910.
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
	now := e.clock.Now().UTC()
	rec, counted, err := e.store.Attempt(ctx, req.VerifyID, now)
	if err != nil {
		return Verification{}, e.lookupErr("count attempt", err)
	}
	if !counted {
		return e.closed(ctx, rec, now)
	}
	if e.keys.matches(rec.CodeHash, rec.ID, code) {
		done, ended, err := e.store.Finish(ctx, rec.ID, StatusVerified, now)
		if err != nil {
			return Verification{}, storeErr("finish verification", err)
		}
		if !ended {
			return e.closed(ctx, done, now)
		}
		if e.log.Enabled(ctx, slog.LevelDebug) {
			e.log.LogAttrs(ctx, slog.LevelDebug, "verify: verified", slog.String("verification", rec.ID))
		}
		return done.public(), nil
	}
	remaining := rec.MaxAttempts - rec.Attempts
	if remaining <= 0 {
		remaining = 0
		done, _, err := e.store.Finish(ctx, rec.ID, StatusMaxAttempts, now)
		if err != nil {
			return Verification{}, storeErr("finish verification", err)
		}
		rec = done
	}
	wrong := *ErrInvalidOTP
	wrong.AttemptsRemaining = remaining
	return rec.public(), &wrong
}

// closed answers for a verification that can take no more attempts, and
// ends it if it is still marked open.
func (e *Engine) closed(ctx context.Context, rec VerificationRecord, now time.Time) (Verification, error) {
	if rec.Status.Open() {
		status := StatusExpired
		if rec.Attempts >= rec.MaxAttempts {
			status = StatusMaxAttempts
		}
		done, _, err := e.store.Finish(ctx, rec.ID, status, now)
		if err != nil {
			return Verification{}, storeErr("finish verification", err)
		}
		rec = done
		if rec.Status.Open() { // cannot happen with a conforming Store
			return rec.public(), fmt.Errorf("verify: store left verification %s open after Finish", rec.ID)
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
	return fmt.Errorf("verify: verification %s has unknown status %q", rec.ID, rec.Status)
}

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
	now := e.clock.Now().UTC()
	if rec.Status.Open() && !now.Before(rec.ExpiresAt) {
		if rec, _, err = e.store.Finish(ctx, id, StatusExpired, now); err != nil {
			return Verification{}, storeErr("finish verification", err)
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
	now := e.clock.Now().UTC()
	rec, err := e.store.GetVerification(ctx, id)
	if err != nil {
		return Verification{}, e.lookupErr("get verification", err)
	}
	if rec.Status.Open() && !now.Before(rec.ExpiresAt) {
		return e.closed(ctx, rec, now)
	}
	rec, ended, err := e.store.Finish(ctx, id, StatusCanceled, now)
	if err != nil {
		return Verification{}, e.lookupErr("finish verification", err)
	}
	if !ended && rec.Status != StatusCanceled {
		return rec.public(), endedError(rec)
	}
	return rec.public(), nil
}

// Resend delivers the same code again on the first step's channel. It
// counts as a send (see WithMaxSends; E916 beyond), never resets the
// attempts, and leaves pending fallback steps as they are. An ended
// verification answers as Check would (E910, E913, ...). If the channel
// fails, Resend returns the verification with an E915 error; the
// verification stays open.
func (e *Engine) Resend(ctx context.Context, id string) (Verification, error) {
	if id == "" {
		return Verification{}, ErrMissingVerifyID
	}
	now := e.clock.Now().UTC()
	rec, counted, err := e.store.CountSend(ctx, id, e.maxSends, now)
	if err != nil {
		return Verification{}, e.lookupErr("count send", err)
	}
	if !counted {
		if rec.Status.Open() && now.Before(rec.ExpiresAt) && rec.Attempts < rec.MaxAttempts {
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
