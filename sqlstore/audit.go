package sqlstore

import (
	"context"
	"time"

	"github.com/openverify/verify"
)

var _ verify.AuditStore = (*Store)(nil)

const auditCols = `id, at, actor, action, target, detail`

// AppendAudit implements verify.AuditStore.
func (s *Store) AppendAudit(ctx context.Context, e verify.AuditEntry) error {
	_, err := s.run().ExecContext(ctx, `INSERT INTO audit_log (`+auditCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		e.ID, s.tv(e.At), e.Actor, e.Action, e.Target, e.Detail)
	return wrap("append audit entry", err)
}

// ListAudit implements verify.AuditStore: newest first down the (at, id)
// index, from the cursor on.
func (s *Store) ListAudit(ctx context.Context, q verify.AuditQuery, after verify.Cursor, limit int) ([]verify.AuditEntry, error) {
	query := `SELECT ` + auditCols + ` FROM audit_log WHERE TRUE`
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return placeholders(len(args), len(args))
	}
	for _, f := range []struct{ col, v string }{{"actor", q.Actor}, {"action", q.Action}, {"target", q.Target}} {
		if f.v != "" {
			query += ` AND ` + f.col + ` = ` + arg(f.v)
		}
	}
	if after.ID != "" {
		at, id := arg(s.tv(after.CreatedAt)), arg(after.ID)
		query += ` AND (at < ` + at + ` OR (at = ` + at + ` AND id < ` + id + `))`
	}
	query += ` ORDER BY at DESC, id DESC LIMIT ` + arg(limit)
	rows, err := s.run().QueryContext(ctx, query, args...)
	if err != nil {
		return nil, wrap("list audit entries", err)
	}
	defer rows.Close()
	var out []verify.AuditEntry
	for rows.Next() {
		var e verify.AuditEntry
		if err := rows.Scan(&e.ID, timeDest{&e.At}, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, wrap("list audit entries", err)
		}
		out = append(out, e)
	}
	return out, wrap("list audit entries", rows.Err())
}

// PurgeAudit implements verify.AuditStore.
func (s *Store) PurgeAudit(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	res, err := s.run().ExecContext(ctx, `DELETE FROM audit_log WHERE id IN
		(SELECT id FROM audit_log WHERE at < $1 ORDER BY at, id LIMIT $2)`, s.tv(before), limit)
	if err != nil {
		return 0, wrap("purge audit entries", err)
	}
	n, err := res.RowsAffected()
	return int(n), wrap("purge audit entries", err)
}
