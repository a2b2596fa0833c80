package verify

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"time"
)

// Lockout is a recipient with consecutive wrong codes counted against it
// (see Protection: FreeFailures, MaxFailures), as the console's protection
// page lists them.
type Lockout struct {
	To Recipient `json:"to"`
	// Failures is the count of consecutive wrong codes.
	Failures int `json:"failures"`
	// Locked is set once Failures has reached MaxFailures: every check is
	// refused until Until.
	Locked bool `json:"locked"`
	// Until is when a lockout ends, or when the next wrong code may be
	// judged after a delay; zero when checks are not held back.
	Until time.Time `json:"until,omitzero"`
	// Expires is when the count starts again from zero.
	Expires time.Time `json:"expires"`
}

// LockoutPage is one page of Lockouts.
type LockoutPage struct {
	Lockouts []Lockout `json:"lockouts"`
	// Next continues the list; "" on the last page.
	Next string `json:"next,omitempty"`
}

// Block is a number prefix the pumping guard blocked for low conversion.
type Block struct {
	Prefix string    `json:"prefix"`
	Until  time.Time `json:"until"`
}

// BlockPage is one page of Blocks.
type BlockPage struct {
	Blocks []Block `json:"blocks"`
	Next   string  `json:"next,omitempty"`
}

// ErrListingUnsupported is returned by Lockouts and Blocks when the
// counters backend does not implement CounterLister.
var ErrListingUnsupported = errors.New("verify: the counters backend does not implement verify.CounterLister (memstore, sqlstore and rediscounters do)")

const (
	failPrefix  = "fail:"
	blockPrefix = "block:prefix:"
)

// listCounters pages through the live counters under prefix: from the
// cursor a previous page returned, up to limit (1..1000, 0 for 50) of those
// keep accepts.
func (e *Engine) listCounters(ctx context.Context, prefix, cursor string, limit int, keep func(NamedCounter) bool) ([]NamedCounter, string, error) {
	l, ok := e.counters.(CounterLister)
	if !ok {
		return nil, "", ErrListingUnsupported
	}
	if limit == 0 {
		limit = defaultPageSize
	}
	if limit < 1 || limit > maxPageSize {
		return nil, "", invalid(ErrInvalidParameter, "limit", "limit must be 1 to %d, got %d", maxPageSize, limit)
	}
	after := ""
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil || !strings.HasPrefix(string(b), prefix) {
			return nil, "", invalid(ErrInvalidParameter, "cursor", "cursor is not one that this list returned")
		}
		after = string(b)
	}
	now := e.now()
	var out []NamedCounter
	for {
		batch, err := l.ListCounters(ctx, prefix, now, after, limit+1)
		if err != nil {
			return nil, "", storeErr(ctx, "list counters", err)
		}
		for i, c := range batch {
			if i == limit {
				break
			}
			after = c.Key
			if keep(c) {
				out = append(out, c)
				if len(out) == limit {
					if i+1 < len(batch) {
						return out, base64.RawURLEncoding.EncodeToString([]byte(c.Key)), nil
					}
					return out, "", nil
				}
			}
		}
		if len(batch) <= limit {
			return out, "", nil
		}
	}
}

// Lockouts lists the recipients with consecutive wrong codes counted
// against them, locked out or not, in key order, limit at a time (0: 50).
// Pass LockoutPage.Next as cursor for the next page. The counters backend
// must implement CounterLister (ErrListingUnsupported); it may scan every
// counter, so this is for operators' screens. Unlock lifts one.
func (e *Engine) Lockouts(ctx context.Context, cursor string, limit int) (LockoutPage, error) {
	now := e.now()
	cs, next, err := e.listCounters(ctx, failPrefix, cursor, limit, func(c NamedCounter) bool { return c.Value > 0 })
	if err != nil {
		return LockoutPage{}, err
	}
	page := LockoutPage{Lockouts: make([]Lockout, 0, len(cs)), Next: next}
	for _, c := range cs {
		key := strings.TrimPrefix(c.Key, failPrefix)
		to := Recipient{Phone: key}
		if strings.Contains(key, "@") {
			to = Recipient{Email: key}
		}
		l := Lockout{To: to, Failures: int(c.Value), Expires: c.ExpiresAt}
		switch {
		case c.Value >= int64(e.protection.MaxFailures):
			l.Locked, l.Until = true, c.ExpiresAt
		case now.Before(c.NotBefore):
			l.Until = c.NotBefore
		}
		page.Lockouts = append(page.Lockouts, l)
	}
	return page, nil
}

// Blocks lists the number prefixes the pumping guard has blocked (see
// Conversion), as Lockouts lists lockouts. Unblock lifts one.
func (e *Engine) Blocks(ctx context.Context, cursor string, limit int) (BlockPage, error) {
	cs, next, err := e.listCounters(ctx, blockPrefix, cursor, limit, func(c NamedCounter) bool { return c.Value > 0 })
	if err != nil {
		return BlockPage{}, err
	}
	page := BlockPage{Blocks: make([]Block, 0, len(cs)), Next: next}
	for _, c := range cs {
		page.Blocks = append(page.Blocks, Block{Prefix: strings.TrimPrefix(c.Key, blockPrefix), Until: c.ExpiresAt})
	}
	return page, nil
}

// Unblock lifts the pumping guard's block of a number prefix, as Blocks
// lists it. Unblocking a prefix that is not blocked is not an error.
func (e *Engine) Unblock(ctx context.Context, prefix string) error {
	prefix = trimSpace(prefix)
	if prefix == "" {
		return invalid(ErrMissingField, "prefix", "prefix field is mandatory")
	}
	return storeErr(ctx, "unblock prefix", e.counters.DeleteCounter(ctx, blockKey(prefix)))
}
