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
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/benbjohnson/clock"
)

// Engine sends and checks one-time codes. It keeps no state of its own:
// every verification lives in the Store, so engines in several processes
// that share a Store and a secret act as one. An Engine is safe for
// concurrent use.
type Engine struct {
	config
	refusals refusalTally
	store    Store
	channels map[string]Channel
	keys     *keyring
	// flows caches flows by ID, and the default flow; templates caches
	// templates by ID, and the list of all of them.
	flows     catalogCache[Flow, Flow]
	templates catalogCache[Template, []Template]
	fixed     recipientCache
	// counting is the Store as a CountingStore when it also keeps the
	// engine's Counters (no WithCounters) and has that ability; nil
	// otherwise.
	counting CountingStore
	// guarded is the Store as a GuardedStore, under the same conditions as
	// counting.
	guarded GuardedStore
	// shared is the Limiter when it is a StoreLimiter on the engine's
	// Counters, whose takes can join the engine's own; nil otherwise.
	shared *StoreLimiter
}

// Option configures an Engine.
type Option func(*config) error

// config holds what the options set; the Engine embeds it.
type config struct {
	channelList []Channel
	clock       clock.Clock
	secrets     [][]byte
	log         *slog.Logger
	lease       time.Duration
	sendTimeout time.Duration
	poll        time.Duration
	retention   time.Duration
	maxSends    int
	batch       int
	concurrency int
	tries       int
	protection  Protection
	limiter     Limiter
	counters    Counters
	sendHook    SendHook
	observers   []Observer
	phones      PhoneParser
	flowTTL     time.Duration
}

// WithChannels registers channels; flows refer to them by Name. Names must
// be unique.
func WithChannels(chs ...Channel) Option {
	return func(c *config) error {
		c.channelList = append(c.channelList, chs...)
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
		c.log = l
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

// WithDeliveryTries caps how many times a step is tried when its delivery
// cannot be recorded (the store refused the write after the channel was
// called, or an engine died mid-send). Each claim of a step counts a try,
// the first delivery included; a claim that hands the step to no channel
// (its lease ran short, the store failed before the send) gives its try
// back. The count lives with the pending step, so it holds across engines
// and restarts. A step whose delivery could not be recorded is kept from
// every claim for the lease (WithLease), then twice that, four times, ...
// (at most an hour) before its next try. A step claimed once more after
// its last try is not sent again: it is recorded as a failed delivery
// (where the store accepts that), an EventDeliveryFailed is emitted, and
// the flow moves on to its next step as for any failed step; since an
// earlier try may have reached the recipient, the verification is not
// ended as failed for it. Defaults to 5.
func WithDeliveryTries(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("verify: WithDeliveryTries(%d): must be at least 1", n)
		}
		c.tries = n
		return nil
	}
}

// WithCounters takes the protection counters (failure lockouts and delays,
// number-prefix blocks, and the limits of a StoreLimiter built on them)
// from c instead of the Store, for deployments that keep them on another
// backend while verifications stay in the Store. Every engine that shares
// the Store must share c too.
func WithCounters(c Counters) Option {
	return func(cfg *config) error {
		if c == nil {
			return errors.New("verify: WithCounters(nil): pass a Counters backend, or leave the option out to use the Store's")
		}
		cfg.counters = c
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
		tries:       5,
		protection:  DefaultProtection(),
		phones:      shapeParser{},
		flowTTL:     5 * time.Second,
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
	if c.log == nil {
		c.log = slog.Default()
	}
	var (
		counting CountingStore
		guarded  GuardedStore
	)
	if c.counters == nil {
		c.counters = store
		counting, _ = store.(CountingStore)
		guarded, _ = store.(GuardedStore)
	}
	if c.limiter == nil {
		c.limiter = NewLocalLimiter()
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
		c.log.Warn("verify: no secret configured; using a random one, so codes do not survive a restart or work across instances (use verify.WithSecret)")
	}
	kr, err := newKeyring(c.secrets)
	if err != nil {
		return nil, err
	}
	e := &Engine{config: c, store: store, keys: kr, channels: make(map[string]Channel, len(c.channelList)),
		flows: catalogCache[Flow, Flow]{ttl: c.flowTTL}, templates: catalogCache[Template, []Template]{ttl: c.flowTTL}, fixed: recipientCache{max: 100000}, counting: counting, guarded: guarded}
	if sl, ok := c.limiter.(*StoreLimiter); ok && sameCounters(sl.counters, c.counters) {
		e.shared = sl
	}
	e.secrets, e.channelList = nil, nil // held in keys and channels
	for _, ch := range c.channelList {
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

// now reads the engine's clock in UTC, truncated to the microsecond, the
// precision SQL stores keep, so that what Send returns equals what a later
// Get reads.
func (e *Engine) now() time.Time { return e.clock.Now().UTC().Truncate(time.Microsecond) }

// Now reads the engine's clock (WithClock), in UTC to the microsecond, as
// the engine stamps records: handlers built on the engine use it to say
// how long a code has left, and move with a mock clock in tests.
func (e *Engine) Now() time.Time { return e.now() }

// Channels returns the names of the registered channels, sorted.
func (e *Engine) Channels() []string {
	names := make([]string, 0, len(e.channels))
	for n := range e.channels {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Addressing returns which part of a Recipient the named channel uses, and
// false if no channel has that name.
func (e *Engine) Addressing(channel string) (Addressing, bool) {
	ch, ok := e.channels[channel]
	if !ok {
		return ByPhone, false
	}
	return addressingOf(ch), true
}
