package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"sort"
	"time"

	"github.com/openverify/verify"
)

// ClaimDue implements verify.Store. On PostgreSQL the due rows are locked
// with FOR UPDATE SKIP LOCKED, so instances claiming at once take disjoint
// rows without waiting for each other; on SQLite the single UPDATE runs
// under the database's one write lock. Either way a claimed row's ready_at
// moves to its lease's end, so it is not due again until the lease runs
// out.
func (s *Store) ClaimDue(ctx context.Context, now, leaseUntil time.Time, limit int) ([]verify.PendingStep, error) {
	if limit <= 0 {
		return nil, nil
	}
	var query string
	if s.pg() {
		// The claimed rows are chosen once (MATERIALIZED): a plan that
		// scanned the locking subquery again would skip the rows this
		// statement has just updated and claim more than limit.
		query = `WITH c AS MATERIALIZED (SELECT verification_id, step FROM pending_steps
				WHERE ready_at <= $1
				ORDER BY due_at, verification_id, step LIMIT $3
				FOR UPDATE SKIP LOCKED)
			UPDATE pending_steps p
			SET lease_until = $2, ready_at = CASE WHEN p.due_at > $2 THEN p.due_at ELSE $2 END, tries = p.tries + 1
			FROM c
			WHERE p.verification_id = c.verification_id AND p.step = c.step
			RETURNING p.verification_id, p.step, p.due_at, p.lease_until, p.tries`
	} else {
		query = `UPDATE pending_steps
			SET lease_until = $2, ready_at = CASE WHEN due_at > $2 THEN due_at ELSE $2 END, tries = tries + 1
			WHERE rowid IN (SELECT rowid FROM pending_steps
				WHERE ready_at <= $1
				ORDER BY due_at, verification_id, step LIMIT $3)
			RETURNING verification_id, step, due_at, lease_until, tries`
	}
	var out []verify.PendingStep
	err := s.write(ctx, func(q querier) error {
		rows, err := q.QueryContext(ctx, query, s.tv(now), s.tv(leaseUntil), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p verify.PendingStep
			if err := rows.Scan(&p.VerificationID, &p.Step, timeDest{&p.DueAt}, timeDest{&p.LeaseUntil}, &p.Tries); err != nil {
				return err
			}
			out = append(out, p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, wrap("claim due", err)
	}
	// RETURNING does not keep the subquery's order.
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.DueAt.Equal(b.DueAt) {
			return a.DueAt.Before(b.DueAt)
		}
		if a.VerificationID != b.VerificationID {
			return a.VerificationID < b.VerificationID
		}
		return a.Step < b.Step
	})
	return out, nil
}

// Reschedule implements verify.Store. Each step is one conditional UPDATE
// (not leased at now), so a step another instance has claimed is left
// alone; a claim (a lease after now) counts a try in the same statement. On
// SQLite the updates share one transaction, for speed only.
func (s *Store) Reschedule(ctx context.Context, now time.Time, steps []verify.PendingStep) ([]verify.PendingStep, error) {
	const query = `UPDATE pending_steps SET due_at = $3, lease_until = $4, ready_at = $5,
			tries = CASE WHEN $7 THEN tries + 1 ELSE tries END
		WHERE verification_id = $1 AND step = $2 AND (lease_until IS NULL OR lease_until <= $6)
		RETURNING tries`
	var out []verify.PendingStep
	run := func(q querier) error {
		out = out[:0]
		for _, p := range steps {
			claim := p.LeaseUntil.After(now)
			err := q.QueryRowContext(ctx, query, p.VerificationID, p.Step,
				s.tv(p.DueAt), s.tn(p.LeaseUntil), s.tv(readyAt(p)), s.tv(now), claim).Scan(&p.Tries)
			if errors.Is(err, sql.ErrNoRows) {
				continue // gone, or claimed by another caller
			}
			if err != nil {
				return err
			}
			p.DueAt = asStored(p.DueAt)
			if !p.LeaseUntil.IsZero() {
				p.LeaseUntil = asStored(p.LeaseUntil)
			}
			out = append(out, p)
		}
		return nil
	}
	var err error
	if s.pg() || len(steps) < 2 {
		err = run(s.run())
	} else {
		err = s.inTx(ctx, func(tx querier) error { return run(tx) })
	}
	if err != nil {
		return nil, wrap("reschedule", err)
	}
	return out, nil
}

// ReleaseStep implements verify.Store: one conditional UPDATE, matched on
// the caller's lease.
func (s *Store) ReleaseStep(ctx context.Context, p verify.PendingStep, until time.Time, sent bool) (bool, error) {
	var n int64
	err := s.write(ctx, func(q querier) error {
		res, err := q.ExecContext(ctx, `UPDATE pending_steps SET lease_until = $4,
				ready_at = CASE WHEN COALESCE($4, due_at) > due_at THEN COALESCE($4, due_at) ELSE due_at END,
				tries = CASE WHEN $5 OR tries = 0 THEN tries ELSE tries - 1 END
			WHERE verification_id = $1 AND step = $2 AND lease_until = $3`,
			p.VerificationID, p.Step, s.tv(p.LeaseUntil), s.tn(until), sent)
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	if err != nil {
		return false, wrap("release step", err)
	}
	return n > 0, nil
}

// CompleteStep implements verify.Store.
func (s *Store) CompleteStep(ctx context.Context, verificationID string, step int) error {
	return wrap("complete step", s.write(ctx, func(q querier) error {
		_, err := q.ExecContext(ctx, `DELETE FROM pending_steps WHERE verification_id = $1 AND step = $2`,
			verificationID, step)
		return err
	}))
}

// NextDue implements verify.Store.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	var raw any
	if err := s.run().QueryRowContext(ctx, `SELECT MIN(ready_at) FROM pending_steps`).Scan(&raw); err != nil {
		return time.Time{}, false, wrap("next due", err)
	}
	if raw == nil {
		return time.Time{}, false, nil
	}
	var t time.Time
	if err := (timeDest{&t}).Scan(raw); err != nil {
		return time.Time{}, false, wrap("next due", err)
	}
	return t, true, nil
}
