package memstore

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/openverify/verify"
)

var _ verify.AuditStore = (*Store)(nil)

// auditCmp orders audit entries oldest first: by At, then by ID.
func auditCmp(a, b verify.AuditEntry) int {
	return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.ID, b.ID))
}

// AppendAudit implements verify.AuditStore.
func (s *Store) AppendAudit(ctx context.Context, e verify.AuditEntry) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	// Entries come with the engine's clock, so almost always after the
	// last one.
	i, _ := slices.BinarySearchFunc(s.audit, e, auditCmp)
	s.audit = slices.Insert(s.audit, i, e)
	return nil
}

// ListAudit implements verify.AuditStore.
func (s *Store) ListAudit(ctx context.Context, q verify.AuditQuery, after verify.Cursor, limit int) ([]verify.AuditEntry, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	end := len(s.audit)
	if after.ID != "" {
		end, _ = slices.BinarySearchFunc(s.audit, verify.AuditEntry{At: after.CreatedAt, ID: after.ID}, auditCmp)
	}
	var out []verify.AuditEntry
	for i := end - 1; i >= 0 && len(out) < limit; i-- {
		e := s.audit[i]
		if (q.Actor == "" || e.Actor == q.Actor) && (q.Action == "" || e.Action == q.Action) && (q.Target == "" || e.Target == q.Target) {
			out = append(out, e)
		}
	}
	return out, nil
}

// PurgeAudit implements verify.AuditStore.
func (s *Store) PurgeAudit(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctxErr(ctx); err != nil {
		return 0, err
	}
	if limit <= 0 {
		return 0, nil
	}
	s.auditMu.Lock()
	defer s.auditMu.Unlock()
	n := 0
	for n < len(s.audit) && n < limit && s.audit[n].At.Before(before) {
		n++
	}
	s.audit = slices.Delete(s.audit, 0, n)
	return n, nil
}
