package verify

import (
	"context"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// AuditEntry is one thing an operator did through an admin surface (the
// console, the admin API): who, when, what, to what. Hosts record them
// with Engine.Audit and read them with Engine.AuditLog; Engine.Purge
// deletes them after the retention period, as it does verifications.
type AuditEntry struct {
	// ID is assigned by Audit: a UUIDv7, so that entries of one instant
	// list in the order one instance recorded them.
	ID string `json:"id"`
	// At is set by Audit, from the engine's clock.
	At time.Time `json:"at"`
	// Actor is who did it: an operator's name, or the label of the admin
	// key or identity that made the request. Mandatory, at most 64
	// characters.
	Actor string `json:"actor"`
	// Action is what was done, such as "flow.update" or
	// "verification.cancel". Mandatory, at most 64 characters.
	Action string `json:"action"`
	// Target is what it was done to, such as a flow's or a verification's
	// ID; may be empty. At most 256 characters.
	Target string `json:"target,omitempty"`
	// Detail is free text about it, at most 1,024 characters. It must
	// never hold a code.
	Detail string `json:"detail,omitempty"`
}

// AuditQuery selects audit entries for AuditLog.
type AuditQuery struct {
	// Actor, Action and Target keep the entries equal to them, when set.
	Actor, Action, Target string
	// Limit is the page size, 1..1000. Defaults to 50.
	Limit int
	// Cursor continues from the previous AuditPage's Next.
	Cursor string
}

// AuditPage is one page of AuditLog's entries, newest first.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	// Next is the Cursor of the following page; "" on the last page.
	Next string `json:"next,omitempty"`
}

// AuditStore is the optional Store ability behind Audit and AuditLog.
// memstore and sqlstore have it; the engine answers ErrAuditUnsupported
// for stores that do not.
type AuditStore interface {
	// AppendAudit stores an entry, with its ID and At as given.
	AppendAudit(ctx context.Context, e AuditEntry) error
	// ListAudit returns up to limit entries matching q (ignoring q.Limit
	// and q.Cursor), newest At first, ties by ID descending, strictly
	// after the cursor position when after.ID is not empty (after's
	// CreatedAt is the entry's At).
	ListAudit(ctx context.Context, q AuditQuery, after Cursor, limit int) ([]AuditEntry, error)
	// PurgeAudit deletes up to limit entries whose At is before before,
	// oldest first, and returns how many it deleted.
	PurgeAudit(ctx context.Context, before time.Time, limit int) (int, error)
}

// ErrAuditUnsupported is returned by Audit and AuditLog when the Store does
// not implement AuditStore.
var ErrAuditUnsupported = errors.New("verify: the store does not implement verify.AuditStore (use memstore or sqlstore)")

// Longest audit fields, in characters.
const (
	maxAuditName   = 64
	maxAuditTarget = 256
	maxAuditDetail = 1024
)

func (e *Engine) audits() (AuditStore, error) {
	as, ok := e.store.(AuditStore)
	if !ok {
		return nil, ErrAuditUnsupported
	}
	return as, nil
}

// Audit records what an operator did: it checks the entry, gives it an ID
// and the time, and stores it. Actor and Action are mandatory (E802);
// a field too long, or not UTF-8, is E809 naming it. Control characters
// other than tab and newline are dropped from every field.
func (e *Engine) Audit(ctx context.Context, a AuditEntry) (AuditEntry, error) {
	as, err := e.audits()
	if err != nil {
		return AuditEntry{}, err
	}
	id, err := uuid.NewV7() // time-ordered: entries of one instant keep their order
	if err != nil {
		return AuditEntry{}, internalErr("append audit entry", err)
	}
	a.ID, a.At = id.String(), e.now()
	fields := []struct {
		name string
		v    *string
		max  int
	}{{"actor", &a.Actor, maxAuditName}, {"action", &a.Action, maxAuditName}, {"target", &a.Target, maxAuditTarget}, {"detail", &a.Detail, maxAuditDetail}}
	for _, f := range fields {
		if !utf8.ValidString(*f.v) {
			return AuditEntry{}, invalid(ErrInvalidParameter, f.name, "%s is not UTF-8", f.name)
		}
		*f.v = strings.TrimSpace(strings.Map(func(r rune) rune {
			if r < 0x20 && r != '\t' && r != '\n' || r == 0x7f {
				return -1
			}
			return r
		}, *f.v))
		if n := utf8.RuneCountInString(*f.v); n > f.max {
			return AuditEntry{}, invalid(ErrInvalidParameter, f.name, "%s is at most %d characters, got %d", f.name, f.max, n)
		}
	}
	if a.Actor == "" {
		return AuditEntry{}, invalid(ErrMissingField, "actor", "actor field is mandatory")
	}
	if a.Action == "" {
		return AuditEntry{}, invalid(ErrMissingField, "action", "action field is mandatory")
	}
	if err := as.AppendAudit(ctx, a); err != nil {
		return AuditEntry{}, storeErr(ctx, "append audit entry", err)
	}
	return a, nil
}

// AuditLog returns a page of audit entries matching q, newest first. Pass
// the returned Next as q.Cursor for the next page.
func (e *Engine) AuditLog(ctx context.Context, q AuditQuery) (AuditPage, error) {
	as, err := e.audits()
	if err != nil {
		return AuditPage{}, err
	}
	if q.Limit == 0 {
		q.Limit = defaultPageSize
	}
	if q.Limit < 1 || q.Limit > maxPageSize {
		return AuditPage{}, invalid(ErrInvalidParameter, "limit", "limit must be 1 to %d, got %d", maxPageSize, q.Limit)
	}
	after, err := decodeCursor(q.Cursor)
	if err != nil {
		return AuditPage{}, err
	}
	entries, err := as.ListAudit(ctx, q, after, q.Limit+1)
	if err != nil {
		return AuditPage{}, storeErr(ctx, "list audit entries", err)
	}
	page := AuditPage{Entries: entries}
	if len(entries) > q.Limit {
		last := entries[q.Limit-1]
		page.Entries, page.Next = entries[:q.Limit], encodeCursor(Cursor{CreatedAt: last.At, ID: last.ID})
	}
	return page, nil
}

// purgeAudit deletes the audit entries from before before, in batches,
// when the store keeps them.
func (e *Engine) purgeAudit(ctx context.Context, before time.Time) error {
	as, ok := e.store.(AuditStore)
	if !ok {
		return nil
	}
	for {
		n, err := as.PurgeAudit(ctx, before, e.batch)
		if err != nil {
			return storeErr(ctx, "purge audit entries", err)
		}
		if n < e.batch {
			return nil
		}
	}
}
