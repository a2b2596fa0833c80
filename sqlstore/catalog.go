package sqlstore

import (
	"context"
	"database/sql"
	"errors"

	"github.com/openverify/verify"
)

const flowCols = `id, name, description, brand, code_length, charset, ttl_ns, max_attempts, steps, is_default, created_at`

func flowDest(f *verify.Flow) []any {
	return []any{&f.ID, &f.Name, &f.Description, &f.Brand, &f.CodeLength, &f.Charset, &f.TTL,
		&f.MaxAttempts, stepsDest{&f.Steps}, &f.Default, timeDest{&f.CreatedAt}}
}

// unsetDefault clears every other flow's Default flag, inside the
// transaction that sets f's. On PostgreSQL it first locks the flows table
// against other writers (readers go on), so that two flows made default at
// once end with one default rather than a unique-index violation.
func (s *Store) unsetDefault(ctx context.Context, tx *sql.Tx, id string) error {
	if s.pg() {
		if _, err := tx.ExecContext(ctx, `LOCK TABLE flows IN EXCLUSIVE MODE`); err != nil {
			return err
		}
	}
	_, err := tx.ExecContext(ctx, `UPDATE flows SET is_default = FALSE WHERE is_default AND id <> $1`, id)
	return err
}

// CreateFlow implements verify.Store.
func (s *Store) CreateFlow(ctx context.Context, f verify.Flow) error {
	steps, err := encodeSteps(f.Steps)
	if err != nil {
		return wrap("create flow", err)
	}
	insert := func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `INSERT INTO flows (`+flowCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			f.ID, f.Name, f.Description, f.Brand, f.CodeLength, int(f.Charset), int64(f.TTL),
			f.MaxAttempts, steps, f.Default, s.tv(f.CreatedAt))
		return err
	}
	if !f.Default {
		return wrap("create flow", insert(ctx, s.db))
	}
	return wrap("create flow", s.inTx(ctx, func(tx *sql.Tx) error {
		if err := s.unsetDefault(ctx, tx, f.ID); err != nil {
			return err
		}
		return insert(ctx, tx)
	}))
}

// UpdateFlow implements verify.Store.
func (s *Store) UpdateFlow(ctx context.Context, f verify.Flow) error {
	steps, err := encodeSteps(f.Steps)
	if err != nil {
		return wrap("update flow", err)
	}
	errNoFlow := notFound("update flow", "flow", f.ID)
	update := func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `UPDATE flows SET name = $2, description = $3, brand = $4,
			code_length = $5, charset = $6, ttl_ns = $7, max_attempts = $8, steps = $9,
			is_default = $10, created_at = $11
			WHERE id = $1`,
			f.ID, f.Name, f.Description, f.Brand, f.CodeLength, int(f.Charset), int64(f.TTL),
			f.MaxAttempts, steps, f.Default, s.tv(f.CreatedAt))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return errNoFlow
		}
		return nil
	}
	if !f.Default {
		err = update(ctx, s.db)
	} else {
		err = s.inTx(ctx, func(tx *sql.Tx) error {
			if err := s.unsetDefault(ctx, tx, f.ID); err != nil {
				return err
			}
			return update(ctx, tx) // not found rolls the unsetting back
		})
	}
	if errors.Is(err, errNoFlow) {
		return errNoFlow
	}
	return wrap("update flow", err)
}

// DeleteFlow implements verify.Store.
func (s *Store) DeleteFlow(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM flows WHERE id = $1`, id)
	if err != nil {
		return wrap("delete flow", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap("delete flow", err)
	}
	if n == 0 {
		return notFound("delete flow", "flow", id)
	}
	return nil
}

// GetFlow implements verify.Store.
func (s *Store) GetFlow(ctx context.Context, id string) (verify.Flow, error) {
	var f verify.Flow
	err := s.db.QueryRowContext(ctx, `SELECT `+flowCols+` FROM flows WHERE id = $1`, id).Scan(flowDest(&f)...)
	if errors.Is(err, sql.ErrNoRows) {
		return verify.Flow{}, notFound("get flow", "flow", id)
	}
	if err != nil {
		return verify.Flow{}, wrap("get flow", err)
	}
	return f, nil
}

// DefaultFlow implements verify.Store.
func (s *Store) DefaultFlow(ctx context.Context) (verify.Flow, error) {
	var f verify.Flow
	err := s.db.QueryRowContext(ctx, `SELECT `+flowCols+` FROM flows WHERE is_default`).Scan(flowDest(&f)...)
	if errors.Is(err, sql.ErrNoRows) {
		return verify.Flow{}, wrap("default flow", verify.ErrNotFound)
	}
	if err != nil {
		return verify.Flow{}, wrap("default flow", err)
	}
	return f, nil
}

// ListFlows implements verify.Store.
func (s *Store) ListFlows(ctx context.Context) ([]verify.Flow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+flowCols+` FROM flows ORDER BY created_at, id`)
	if err != nil {
		return nil, wrap("list flows", err)
	}
	defer rows.Close()
	var out []verify.Flow
	for rows.Next() {
		var f verify.Flow
		if err := rows.Scan(flowDest(&f)...); err != nil {
			return nil, wrap("list flows", err)
		}
		out = append(out, f)
	}
	return out, wrap("list flows", rows.Err())
}

const templateCols = `id, name, channel, body, language, status, reason, created_at`

func templateDest(t *verify.Template) []any {
	return []any{&t.ID, &t.Name, &t.Channel, &t.Body, &t.Language, &t.Status, &t.Reason, timeDest{&t.CreatedAt}}
}

// CreateTemplate implements verify.Store.
func (s *Store) CreateTemplate(ctx context.Context, t verify.Template) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO templates (`+templateCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		t.ID, t.Name, t.Channel, t.Body, t.Language, string(t.Status), t.Reason, s.tv(t.CreatedAt))
	return wrap("create template", err)
}

// SetTemplateStatus implements verify.Store.
func (s *Store) SetTemplateStatus(ctx context.Context, id string, status verify.TemplateStatus, reason string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE templates SET status = $2, reason = $3 WHERE id = $1`,
		id, string(status), reason)
	if err != nil {
		return wrap("set template status", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap("set template status", err)
	}
	if n == 0 {
		return notFound("set template status", "template", id)
	}
	return nil
}

// GetTemplate implements verify.Store.
func (s *Store) GetTemplate(ctx context.Context, id string) (verify.Template, error) {
	var t verify.Template
	err := s.db.QueryRowContext(ctx, `SELECT `+templateCols+` FROM templates WHERE id = $1`, id).Scan(templateDest(&t)...)
	if errors.Is(err, sql.ErrNoRows) {
		return verify.Template{}, notFound("get template", "template", id)
	}
	if err != nil {
		return verify.Template{}, wrap("get template", err)
	}
	return t, nil
}

// ListTemplates implements verify.Store.
func (s *Store) ListTemplates(ctx context.Context) ([]verify.Template, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+templateCols+` FROM templates ORDER BY created_at, id`)
	if err != nil {
		return nil, wrap("list templates", err)
	}
	defer rows.Close()
	var out []verify.Template
	for rows.Next() {
		var t verify.Template
		if err := rows.Scan(templateDest(&t)...); err != nil {
			return nil, wrap("list templates", err)
		}
		out = append(out, t)
	}
	return out, wrap("list templates", rows.Err())
}
