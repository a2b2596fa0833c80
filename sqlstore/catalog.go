package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/openverify/verify"
)

// Flows keep their ID, name, default flag and creation time in columns and
// the whole verify.Flow as JSON in definition, so that flow settings added
// to package verify need no schema change. The columns win on read.
const flowCols = `id, name, is_default, created_at, definition`

// flowScan is one row of flowCols.
type flowScan struct {
	f          verify.Flow
	definition []byte
}

func (r *flowScan) dest() []any {
	return []any{&r.f.ID, &r.f.Name, &r.f.Default, timeDest{&r.f.CreatedAt}, bytesDest{&r.definition}}
}

func (r *flowScan) flow() (verify.Flow, error) {
	var f verify.Flow
	if err := json.Unmarshal(r.definition, &f); err != nil {
		return verify.Flow{}, fmt.Errorf("decode flow %s: %w", r.f.ID, err)
	}
	f.ID, f.Name, f.Default, f.CreatedAt = r.f.ID, r.f.Name, r.f.Default, r.f.CreatedAt
	return f, nil
}

func flowArgs(f verify.Flow) ([]any, error) {
	def, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode flow: %w", err)
	}
	return []any{f.ID, f.Name, f.Default, string(def)}, nil
}

// unsetDefault clears every other flow's Default flag, inside the
// transaction that sets f's. On PostgreSQL it first locks the flows table
// against other writers (readers go on), so that two flows made default at
// once end with one default rather than a unique-index violation.
func (s *Store) unsetDefault(ctx context.Context, tx querier, id string) error {
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
	args, err := flowArgs(f)
	if err != nil {
		return wrap("create flow", err)
	}
	args = append(args, s.tv(f.CreatedAt))
	insert := func(ctx context.Context, q querier) error {
		_, err := q.ExecContext(ctx, `INSERT INTO flows (id, name, is_default, definition, created_at)
			VALUES ($1, $2, $3, $4, $5)`, args...)
		return err
	}
	if !f.Default {
		return wrap("create flow", insert(ctx, s.run()))
	}
	return wrap("create flow", s.inTx(ctx, func(tx querier) error {
		if err := s.unsetDefault(ctx, tx, f.ID); err != nil {
			return err
		}
		return insert(ctx, tx)
	}))
}

// UpdateFlow implements verify.Store.
func (s *Store) UpdateFlow(ctx context.Context, f verify.Flow) error {
	args, err := flowArgs(f)
	if err != nil {
		return wrap("update flow", err)
	}
	args = append(args, s.tv(f.CreatedAt))
	errNoFlow := notFound("update flow", "flow", f.ID)
	update := func(ctx context.Context, q querier) error {
		res, err := q.ExecContext(ctx, `UPDATE flows SET name = $2, is_default = $3, definition = $4, created_at = $5
			WHERE id = $1`, args...)
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
		err = update(ctx, s.run())
	} else {
		err = s.inTx(ctx, func(tx querier) error {
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
	res, err := s.run().ExecContext(ctx, `DELETE FROM flows WHERE id = $1`, id)
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
	var r flowScan
	err := s.run().QueryRowContext(ctx, `SELECT `+flowCols+` FROM flows WHERE id = $1`, id).Scan(r.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return verify.Flow{}, notFound("get flow", "flow", id)
	}
	if err != nil {
		return verify.Flow{}, wrap("get flow", err)
	}
	f, err := r.flow()
	return f, wrap("get flow", err)
}

// DefaultFlow implements verify.Store.
func (s *Store) DefaultFlow(ctx context.Context) (verify.Flow, error) {
	var r flowScan
	err := s.run().QueryRowContext(ctx, `SELECT `+flowCols+` FROM flows WHERE is_default`).Scan(r.dest()...)
	if errors.Is(err, sql.ErrNoRows) {
		return verify.Flow{}, wrap("default flow", verify.ErrNotFound)
	}
	if err != nil {
		return verify.Flow{}, wrap("default flow", err)
	}
	f, err := r.flow()
	return f, wrap("default flow", err)
}

// ListFlows implements verify.Store.
func (s *Store) ListFlows(ctx context.Context) ([]verify.Flow, error) {
	rows, err := s.run().QueryContext(ctx, `SELECT `+flowCols+` FROM flows ORDER BY created_at, id`)
	if err != nil {
		return nil, wrap("list flows", err)
	}
	defer rows.Close()
	var out []verify.Flow
	for rows.Next() {
		var r flowScan
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, wrap("list flows", err)
		}
		f, err := r.flow()
		if err != nil {
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
	_, err := s.run().ExecContext(ctx, `INSERT INTO templates (`+templateCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		t.ID, t.Name, t.Channel, t.Body, t.Language, string(t.Status), t.Reason, s.tv(t.CreatedAt))
	return wrap("create template", err)
}

// SetTemplateStatus implements verify.Store.
func (s *Store) SetTemplateStatus(ctx context.Context, id string, status verify.TemplateStatus, reason string) error {
	res, err := s.run().ExecContext(ctx, `UPDATE templates SET status = $2, reason = $3 WHERE id = $1`,
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
	err := s.run().QueryRowContext(ctx, `SELECT `+templateCols+` FROM templates WHERE id = $1`, id).Scan(templateDest(&t)...)
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
	rows, err := s.run().QueryContext(ctx, `SELECT `+templateCols+` FROM templates ORDER BY created_at, id`)
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
