package verify

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// catalogCache keeps what Send reads from the Store's catalog (flows,
// templates) for a short time, so that Send does not read it on every
// call: entries by ID, and one more value (the default flow, the list of
// templates). Changes made through this engine take effect at once (it
// invalidates the cache); changes made by another instance within the TTL.
type catalogCache[T, X any] struct {
	ttl time.Duration

	mu      sync.RWMutex
	byID    map[string]cached[T]
	extra   cached[X] // extra.at zero: not cached
	version uint64    // bumped by every change, so a racing read is not cached
}

type cached[T any] struct {
	v  T
	at time.Time
}

// fresh reports whether an entry cached at at (zero: none) may be used
// at now.
func (c *catalogCache[T, X]) fresh(at, now time.Time) bool {
	return c.ttl > 0 && !at.IsZero() && now.Sub(at) < c.ttl && !now.Before(at)
}

func (c *catalogCache[T, X]) get(id string, now time.Time) (T, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.byID[id]
	return e.v, c.fresh(e.at, now)
}

func (c *catalogCache[T, X]) getExtra(now time.Time) (X, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.extra.v, c.fresh(c.extra.at, now)
}

func (c *catalogCache[T, X]) snapshot() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version
}

// put caches an entry read at now as id, and the extra value if x is not
// nil, unless the cache changed since snapshot v was taken.
func (c *catalogCache[T, X]) put(id string, t *T, x *X, now time.Time, v uint64) {
	if c.ttl == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != v {
		return
	}
	if x != nil {
		c.extra = cached[X]{*x, now}
	}
	if t == nil {
		return
	}
	if c.byID == nil || len(c.byID) > 10000 {
		c.byID = make(map[string]cached[T])
	}
	c.byID[id] = cached[T]{*t, now}
}

// invalidate forgets everything cached.
func (c *catalogCache[T, X]) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version++
	c.byID, c.extra = nil, cached[X]{}
}

// WithFlowCache sets how long Send may use a flow it read, or a template
// its steps render, before reading it again. Flows and templates changed
// through this engine are seen at once; changes made through another
// engine on the same Store are seen within this time (a template rejected
// there may still be sent here until then). Defaults to 5 seconds; 0 reads
// them on every Send.
func WithFlowCache(ttl time.Duration) Option {
	return func(c *config) error {
		if ttl < 0 {
			return fmt.Errorf("verify: WithFlowCache(%s): must not be negative", ttl)
		}
		c.flowTTL = ttl
		return nil
	}
}

// resolveFlow returns the flow a Send names ("" is the default flow),
// from the cache when it is fresh.
func (e *Engine) resolveFlow(ctx context.Context, id string) (Flow, error) {
	now := e.clock.Now()
	var (
		f  Flow
		ok bool
	)
	if id == "" {
		f, ok = e.flows.getExtra(now)
	} else {
		f, ok = e.flows.get(id, now)
	}
	if ok {
		return f, nil
	}
	v := e.flows.snapshot()
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
	if err != nil {
		return Flow{}, storeErr(ctx, "get flow", err)
	}
	def := &f // the default flow is cached as the extra value too
	if id != "" {
		def = nil
	}
	e.flows.put(f.ID, &f, def, now, v)
	return f, nil
}

// sendTemplate returns the template id for a message, from the cache
// when it is fresh.
func (e *Engine) sendTemplate(ctx context.Context, id string) (Template, error) {
	now := e.clock.Now()
	if t, ok := e.templates.get(id, now); ok {
		return t, nil
	}
	v := e.templates.snapshot()
	t, err := e.store.GetTemplate(ctx, id)
	if err != nil {
		return Template{}, err
	}
	e.templates.put(t.ID, &t, nil, now, v)
	return t, nil
}

// sendTemplates returns every template, for picking one in another
// language, from the cache when it is fresh. The slice is shared: the
// caller must not change it.
func (e *Engine) sendTemplates(ctx context.Context) ([]Template, error) {
	now := e.clock.Now()
	if all, ok := e.templates.getExtra(now); ok {
		return all, nil
	}
	v := e.templates.snapshot()
	all, err := e.store.ListTemplates(ctx)
	if err != nil {
		return nil, err
	}
	e.templates.put("", nil, &all, now, v)
	return all, nil
}

// recipientCache remembers the parts of recent verifications that never
// change (recipient, flow, IP allow-list), so that Check can apply its
// protections before counting the attempt without first reading the
// verification. It holds at most max entries and drops expired ones first.
type recipientCache struct {
	mu  sync.Mutex
	m   map[string]fixedParts
	max int
}

type fixedParts struct {
	to         Recipient
	flowID     string
	allowedIPs []string
	expiresAt  time.Time
	// createdAt (Unix nanoseconds) places a verification in the conversion
	// monitor's window. Not a time.Time: the parts fit a map's slot (at
	// most 128 bytes) and cost no allocation of their own.
	createdAt int64
	codeHash  []byte // the code's HMAC, as stored (never changes)
}

func (c *recipientCache) put(id string, p fixedParts, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]fixedParts)
	}
	if len(c.m) >= c.max {
		for k, v := range c.m {
			if !now.Before(v.expiresAt) {
				delete(c.m, k)
			}
		}
		for k := range c.m { // still full: drop arbitrary entries
			if len(c.m) < c.max*3/4 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[id] = p
}

func (c *recipientCache) get(id string) (fixedParts, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[id]
	return p, ok
}

func (c *recipientCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

func partsOf(r *VerificationRecord) fixedParts {
	return fixedParts{to: r.To, flowID: r.FlowID, allowedIPs: r.AllowedIPs, expiresAt: r.ExpiresAt, createdAt: r.CreatedAt.UnixNano(), codeHash: r.CodeHash}
}
