package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/openverify/verify"
)

// AddCounter implements verify.Store with one upsert: the row lock (or, on
// SQLite, the write lock) makes every racing delta count once.
func (s *Store) AddCounter(ctx context.Context, key string, delta int64, expiresAt, now time.Time) (verify.Counter, error) {
	var c verify.Counter
	err := s.run().QueryRowContext(ctx, `INSERT INTO counters (name, value, updated_at, expires_at)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (name) DO UPDATE SET
			value = CASE WHEN counters.expires_at <= $3 THEN excluded.value ELSE counters.value + excluded.value END,
			updated_at = excluded.updated_at, expires_at = excluded.expires_at
		RETURNING value, updated_at, expires_at`,
		key, delta, s.tv(now), s.tv(expiresAt)).Scan(&c.Value, timeDest{&c.UpdatedAt}, timeDest{&c.ExpiresAt})
	if err != nil {
		return verify.Counter{}, wrap("add counter", err)
	}
	return c, nil
}

// GetCounter implements verify.Store.
func (s *Store) GetCounter(ctx context.Context, key string, now time.Time) (verify.Counter, error) {
	var c verify.Counter
	err := s.run().QueryRowContext(ctx, `SELECT value, updated_at, expires_at FROM counters
		WHERE name = $1 AND expires_at > $2`, key, s.tv(now)).Scan(&c.Value, timeDest{&c.UpdatedAt}, timeDest{&c.ExpiresAt})
	if errors.Is(err, sql.ErrNoRows) {
		return verify.Counter{}, nil
	}
	if err != nil {
		return verify.Counter{}, wrap("get counter", err)
	}
	return c, nil
}

// DeleteCounter implements verify.Store.
func (s *Store) DeleteCounter(ctx context.Context, key string) error {
	_, err := s.run().ExecContext(ctx, `DELETE FROM counters WHERE name = $1`, key)
	return wrap("delete counter", err)
}
