package sqlstore_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPercentileAggregate checks the openverify_percentile aggregate the
// store registers with SQLite: nearest rank, as percentile_disc.
func TestPercentileAggregate(t *testing.T) {
	ctx := context.Background()
	st := open(t, backends[0].newDSN(t))
	db := st.DB()
	_, err := db.ExecContext(ctx, `CREATE TABLE pct (g INTEGER, x INTEGER)`)
	require.NoError(t, err)
	// Group 1: 1..20; group 2: 7 and NULLs; group 3: only NULLs.
	for i := 1; i <= 20; i++ {
		_, err := db.ExecContext(ctx, `INSERT INTO pct VALUES (1, $1)`, 21-i)
		require.NoError(t, err)
	}
	_, err = db.ExecContext(ctx, `INSERT INTO pct VALUES (2, 7), (2, NULL), (3, NULL)`)
	require.NoError(t, err)
	pct := func(g, p int) sql.NullInt64 {
		t.Helper()
		var v sql.NullInt64
		require.NoError(t, db.QueryRowContext(ctx, `SELECT openverify_percentile(x, $2) FROM pct WHERE g = $1`, g, p).Scan(&v))
		return v
	}
	for p, want := range map[int]int64{1: 1, 5: 1, 6: 2, 50: 10, 51: 11, 95: 19, 96: 20, 100: 20} {
		assert.Equal(t, sql.NullInt64{Int64: want, Valid: true}, pct(1, p), "p%d of 1..20", p)
	}
	assert.Equal(t, sql.NullInt64{Int64: 7, Valid: true}, pct(2, 50), "NULLs are left out")
	assert.False(t, pct(3, 50).Valid, "no values: NULL")
	assert.False(t, pct(4, 50).Valid, "no rows: NULL")
	var v sql.NullInt64
	for _, p := range []any{0, 101, "x"} {
		assert.Error(t, db.QueryRowContext(ctx, `SELECT openverify_percentile(x, $1) FROM pct`, p).Scan(&v), "p %v", p)
	}
	assert.Error(t, db.QueryRowContext(ctx, `SELECT openverify_percentile('a', 50)`).Scan(&v), "x must be an integer")
}
