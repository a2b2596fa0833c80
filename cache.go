package verify

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// flowCache keeps flows read from the Store for a short time, so that Send
// does not read its flow on every call. Changes made through this engine
// take effect at once; changes made by another instance within the TTL.
type flowCache struct {
	ttl time.Duration

	mu      sync.RWMutex
	byID    map[string]cachedFlow
	def     cachedFlow // the default flow; def.at zero: not cached
	version uint64     // bumped by every change, so a racing read is not cached
}

type cachedFlow struct {
	f  Flow
	at time.Time
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

func (c *flowCache) get(id string, now time.Time) (Flow, bool) {
	if c.ttl == 0 {
		return Flow{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.def
	if id != "" {
		e = c.byID[id]
	}
	if e.at.IsZero() || now.Sub(e.at) >= c.ttl || now.Before(e.at) {
		return Flow{}, false
	}
	return e.f, true
}

func (c *flowCache) snapshot() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version
}

// put caches a flow read as id ("" for the default) unless the cache
// changed since snapshot v was taken.
func (c *flowCache) put(id string, f Flow, now time.Time, v uint64) {
	if c.ttl == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != v {
		return
	}
	if c.byID == nil || len(c.byID) > 10000 {
		c.byID = make(map[string]cachedFlow)
	}
	if id == "" {
		c.def = cachedFlow{f, now}
	}
	c.byID[f.ID] = cachedFlow{f, now}
}

// invalidate forgets every cached flow.
func (c *flowCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version++
	c.byID, c.def = nil, cachedFlow{}
}

// resolveFlow returns the flow a Send names ("" is the default flow),
// from the cache when it is fresh.
func (e *Engine) resolveFlow(ctx context.Context, id string) (Flow, error) {
	now := e.clock.Now()
	if f, ok := e.flows.get(id, now); ok {
		return f, nil
	}
	v := e.flows.snapshot()
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
	if err != nil {
		return Flow{}, storeErr(ctx, "get flow", err)
	}
	e.flows.put(id, f, now, v)
	return f, nil
}

// templateCache keeps the templates Send renders, read from the Store,
// for the flow cache's TTL (WithFlowCache): each template read by ID, and
// the list that picking a template in another language searches. Like
// the flows, changes made through this engine are seen at once, changes
// made by another instance within the TTL.
type templateCache struct {
	ttl time.Duration

	mu      sync.RWMutex
	byID    map[string]cachedTemplate
	all     []Template // shared with callers: never written into
	allAt   time.Time  // zero: all is not cached
	version uint64     // bumped by every change, so a racing read is not cached
}

type cachedTemplate struct {
	t  Template
	at time.Time
}

// fresh reports whether something cached at at may be used at now.
func (c *templateCache) fresh(at, now time.Time) bool {
	return !at.IsZero() && now.Sub(at) < c.ttl && !now.Before(at)
}

func (c *templateCache) get(id string, now time.Time) (Template, bool) {
	if c.ttl == 0 {
		return Template{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.byID[id]
	return e.t, c.fresh(e.at, now)
}

func (c *templateCache) list(now time.Time) ([]Template, bool) {
	if c.ttl == 0 {
		return nil, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.all, c.fresh(c.allAt, now)
}

func (c *templateCache) snapshot() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version
}

// put caches a template read at now, or, with t nil, the list all,
// unless the cache changed since snapshot v was taken.
func (c *templateCache) put(t *Template, all []Template, now time.Time, v uint64) {
	if c.ttl == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != v {
		return
	}
	if t == nil {
		c.all, c.allAt = all, now
		return
	}
	if c.byID == nil || len(c.byID) > 10000 {
		c.byID = make(map[string]cachedTemplate)
	}
	c.byID[t.ID] = cachedTemplate{*t, now}
}

// invalidate forgets every cached template.
func (c *templateCache) invalidate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version++
	c.byID, c.all, c.allAt = nil, nil, time.Time{}
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
	e.templates.put(&t, nil, now, v)
	return t, nil
}

// sendTemplates returns every template, for picking one in another
// language, from the cache when it is fresh. The caller must not change
// the slice.
func (e *Engine) sendTemplates(ctx context.Context) ([]Template, error) {
	now := e.clock.Now()
	if all, ok := e.templates.list(now); ok {
		return all, nil
	}
	v := e.templates.snapshot()
	all, err := e.store.ListTemplates(ctx)
	if err != nil {
		return nil, err
	}
	e.templates.put(nil, all, now, v)
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
