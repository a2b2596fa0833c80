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

// WithFlowCache sets how long Send may use a flow it read before reading it
// again. Flows changed through this engine are seen at once; changes made
// through another engine on the same Store are seen within this time.
// Defaults to 5 seconds; 0 reads the flow on every Send.
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
