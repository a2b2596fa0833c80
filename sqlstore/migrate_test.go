package sqlstore_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
)

func migrationVersions(t *testing.T, db *sql.DB) []int {
	t.Helper()
	rows, err := db.Query(`SELECT version FROM schema_migrations ORDER BY version`)
	require.NoError(t, err)
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v int
		require.NoError(t, rows.Scan(&v))
		out = append(out, v)
	}
	require.NoError(t, rows.Err())
	return out
}

// TestMigrateConcurrently starts several instances at once against an
// empty database, each migrating, then another against the migrated one:
// every Migrate succeeds and each migration is applied once.
func TestMigrateConcurrently(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			dsn := b.newDSN(t)
			stores := make([]*sqlstore.Store, 4)
			for i := range stores {
				stores[i] = open(t, dsn, sqlstore.WithoutMigrate())
			}
			errs := make([]error, len(stores))
			var wg sync.WaitGroup
			for i, st := range stores {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = st.Migrate(ctx)
				}()
			}
			wg.Wait()
			for _, err := range errs {
				require.NoError(t, err)
			}
			versions := migrationVersions(t, stores[0].DB())
			want := map[sqlstore.Dialect][]int{sqlstore.SQLite: {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, sqlstore.Postgres: {1, 2, 3, 4, 5, 6, 7, 8, 9}}
			require.Equal(t, want[stores[0].Dialect()], versions, "each migration applied once")

			// A second instance starting later finds nothing to do, and the
			// schema works.
			late := open(t, dsn)
			require.NoError(t, late.Migrate(ctx), "Migrate is idempotent")
			assert.Equal(t, versions, migrationVersions(t, late.DB()))
			require.NoError(t, late.CreateTemplate(ctx, verify.Template{ID: "t1", Name: "n", Channel: "sms", Body: "{code}"}))
			_, err := stores[1].GetTemplate(ctx, "t1")
			require.NoError(t, err)
		})
	}
}

func TestOpenSQLitePragmas(t *testing.T) {
	ctx := context.Background()
	pragma := func(st *sqlstore.Store, name string) string {
		var v string
		require.NoError(t, st.DB().QueryRowContext(ctx, `PRAGMA `+name).Scan(&v))
		return v
	}
	dir := t.TempDir()
	st := open(t, "sqlite:"+filepath.Join(dir, "a.db"))
	assert.Equal(t, "wal", pragma(st, "journal_mode"))
	assert.Equal(t, "1", pragma(st, "foreign_keys"))
	assert.Equal(t, "10000", pragma(st, "busy_timeout"))
	assert.Equal(t, "1", pragma(st, "synchronous"), "NORMAL")
	assert.Equal(t, 1, st.DB().Stats().MaxOpenConnections)

	// The DSN's own pragmas win; "sqlite://" and "file:" work too.
	st = open(t, "sqlite://"+filepath.Join(dir, "b.db")+"?_pragma=busy_timeout(2500)&_pragma=synchronous(FULL)")
	assert.Equal(t, "2500", pragma(st, "busy_timeout"))
	assert.Equal(t, "2", pragma(st, "synchronous"), "FULL")
	assert.Equal(t, "wal", pragma(st, "journal_mode"))
	st = open(t, "file:"+filepath.Join(dir, "c.db"), sqlstore.WithMaxConns(3))
	assert.Equal(t, "wal", pragma(st, "journal_mode"))
	assert.Equal(t, 3, st.DB().Stats().MaxOpenConnections)

	// An in-memory database works through Open: one connection holds it.
	st = open(t, "sqlite::memory:")
	require.NoError(t, st.CreateTemplate(ctx, verify.Template{ID: "t1", Name: "n", Channel: "sms", Body: "{code}"}))
	_, err := st.GetTemplate(ctx, "t1")
	require.NoError(t, err)
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	_, err := sqlstore.Open(ctx, "mysql://root:hunter2@localhost/x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "sqlstore: ")
	assert.NotContains(t, err.Error(), "hunter2", "passwords are not echoed")

	_, err = sqlstore.New(nil, sqlstore.SQLite)
	require.Error(t, err)
	db, err := sql.Open("sqlite", ":memory:")
	require.NoError(t, err)
	defer db.Close()
	_, err = sqlstore.New(db, sqlstore.Dialect(0))
	require.Error(t, err)

	// Close on a Store from New leaves the caller's *sql.DB open.
	st, err := sqlstore.New(db, sqlstore.SQLite)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	require.NoError(t, db.Ping())

	// Before Migrate, calls fail with a wrapped driver error.
	_, err = st.GetFlow(ctx, "x")
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), "sqlstore: get flow: "), err.Error())
	assert.NotErrorIs(t, err, verify.ErrNotFound)

	// Finish only takes an ended status.
	require.NoError(t, st.Migrate(ctx))
	_, _, err = st.Finish(ctx, "x", verify.StatusSent, start)
	require.Error(t, err)
}

// TestQueryPlans checks that the queries that grow with the data use the
// indexes made for them.
func TestQueryPlans(t *testing.T) {
	queries := []struct{ query, index string }{
		{`SELECT id FROM verifications WHERE ended_at IS NULL AND expires_at <= $1 ORDER BY expires_at LIMIT 10`, "verifications_expiry"},
		{`SELECT id FROM verifications WHERE flow_id = 'f' AND to_phone = 'p' AND to_email = '' AND ended_at IS NULL ORDER BY created_at DESC`, "verifications_open_recipient"},
		{`SELECT id FROM verifications WHERE ended_at < $1 ORDER BY ended_at LIMIT 10`, "verifications_ended"},
		{`SELECT verification_id, step FROM pending_steps WHERE ready_at <= $1 ORDER BY due_at, verification_id, step LIMIT 10`, "pending_steps_ready"},
		{`SELECT MIN(ready_at) FROM pending_steps`, "pending_steps_ready"},
		{`SELECT id FROM deliveries WHERE verification_id = 'x' ORDER BY created_at, seq`, "deliveries_verification"},
		{`SELECT id FROM flows WHERE is_default`, "flows_default"},
		{`SELECT name FROM counters WHERE expires_at < $1 LIMIT 10`, "counters_expiry"},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t, b.newDSN(t))
			conn, err := st.DB().Conn(ctx)
			require.NoError(t, err)
			defer conn.Close()
			now := any(int64(1))
			if st.Dialect() == sqlstore.Postgres {
				now = start
				// The tables are empty: make the planner show what it would
				// do with data in them.
				_, err := conn.ExecContext(ctx, `SET enable_seqscan = off`)
				require.NoError(t, err)
				defer conn.ExecContext(ctx, `RESET enable_seqscan`)
			}
			for _, q := range queries {
				var args []any
				if strings.Contains(q.query, "$1") {
					args = append(args, now)
				}
				plan := queryPlan(t, conn, st.Dialect(), q.query, args...)
				assert.Contains(t, plan, q.index, "plan of %s:\n%s", q.query, plan)
			}
		})
	}
}

// queryPlan returns the plan of query: EXPLAIN QUERY PLAN on SQLite,
// EXPLAIN on PostgreSQL.
func queryPlan(t *testing.T, conn *sql.Conn, d sqlstore.Dialect, query string, args ...any) string {
	t.Helper()
	explain := "EXPLAIN QUERY PLAN "
	if d == sqlstore.Postgres {
		explain = "EXPLAIN "
	}
	rows, err := conn.QueryContext(context.Background(), explain+query, args...)
	require.NoError(t, err, query)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	var plan strings.Builder
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		for _, v := range vals {
			switch x := v.(type) {
			case string:
				plan.WriteString(x + "\n")
			case []byte:
				plan.WriteString(string(x) + "\n")
			}
		}
	}
	require.NoError(t, rows.Err())
	return plan.String()
}
