package sqlstore_test

import (
	"context"
	"database/sql"
	"encoding/hex"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify/sqlstore"
)

// loadedRows is how many verifications and counters TestHotQueryPlans
// preloads: enough that a plan reading a table or a wrong index costs
// what it would in service. Under the race detector, SQLite (pure Go, so
// instrumented too) gets a tenth, which its planner weighs the same way.
func loadedRows(d sqlstore.Dialect) int {
	if raceEnabled && d == sqlstore.SQLite {
		return 20_000
	}
	return 200_000
}

// hotIndexes names, for each hot statement, the index its PostgreSQL plan
// must use.
var hotIndexes = map[string]string{
	"get":        "verifications_pkey",
	"find-open":  "verifications_open_recipient",
	"count-send": "verifications_pkey",
	"finish":     "verifications_pkey",
	"attempt":    "verifications_pkey",
}

// TestHotQueryPlans checks the plans of the statements every Send and
// Check run, on tables preloaded with 200,000 verifications (one in ten
// still open) and counters and analysed, as a service's are: each finds
// its rows through the index meant for it. (On tables the planner had not
// analysed, PostgreSQL chose the partial index on expires_at for the
// attempt's UPDATE rather than the primary key.)
func TestHotQueryPlans(t *testing.T) {
	want := map[sqlstore.Dialect]map[string]string{
		sqlstore.Postgres: hotIndexes,
		sqlstore.SQLite: {
			"get":        "(id=?)",
			"find-open":  "verifications_open_recipient",
			"count-send": "(id=?)",
			"finish":     "(id=?)",
			"attempt":    "(id=?)",
		},
	}
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t, b.newDSN(t))
			preload(t, st)
			conn, err := st.DB().Conn(ctx)
			require.NoError(t, err)
			defer conn.Close()
			for name, stmt := range st.HotQueries("v00000042", start) {
				index, ok := want[st.Dialect()][name]
				if !ok {
					continue
				}
				plan := queryPlan(t, conn, st.Dialect(), stmt.SQL, stmt.Args...)
				assert.Contains(t, plan, index, "plan of %s:\n%s", name, plan)
				assert.NotRegexp(t, `Seq Scan on (verifications|counters)|\bSCAN (v|verifications|counters)\b`, plan,
					"plan of %s reads a whole table:\n%s", name, plan)
			}
		})
	}
}

// preload fills the verifications and counters tables with loadedRows
// rows each, in one statement apiece, and analyses them.
func preload(t *testing.T, st *sqlstore.Store) { fill(t, st, true) }

// fill is preload, analysing the tables only if analyze is set.
func fill(t *testing.T, st *sqlstore.Store, analyze bool) {
	t.Helper()
	ctx := context.Background()
	now := start
	var stmts []string
	if st.Dialect() == sqlstore.Postgres {
		stmts = []string{
			`INSERT INTO verifications (id, flow_id, foreign_id, status, to_phone, to_email, ip_address, brand, language,
				fallback_language, code_hash, charset, code_length, attempts, max_attempts, sends, steps, allowed_ips,
				created_at, expires_at, ended_at, last_sent_at)
			SELECT 'v' || lpad(i::text, 8, '0'), 'flow', '', CASE WHEN i % 10 = 0 THEN 'sent' ELSE 'verified' END,
				'+47' || (40000000 + i), '', '10.0.0.1', '', 'en', 'en', decode(md5(i::text), 'hex'), 0, 6, 0, 5, 1,
				'[{"channel":"sms"}]', '[]',
				$1::timestamptz - (i || ' seconds')::interval, $1::timestamptz - (i || ' seconds')::interval + interval '5 minutes',
				CASE WHEN i % 10 = 0 THEN NULL ELSE $1::timestamptz - (i || ' seconds')::interval END,
				$1::timestamptz - (i || ' seconds')::interval
			FROM generate_series(1, $2::int) AS i`,
			`INSERT INTO counters (name, value, updated_at, expires_at)
			SELECT 'recipient:+47' || (40000000 + i), 1, $1::timestamptz, $1::timestamptz + interval '1 hour'
			FROM generate_series(1, $2::int) AS i`,
			`ANALYZE`,
		}
	} else {
		stmts = []string{
			`WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < $2)
			INSERT INTO verifications (id, flow_id, foreign_id, status, to_phone, to_email, ip_address, brand, language,
				fallback_language, code_hash, charset, code_length, attempts, max_attempts, sends, steps, allowed_ips,
				created_at, expires_at, ended_at, last_sent_at)
			SELECT 'v' || substr('00000000' || i, -8), 'flow', '', CASE WHEN i % 10 = 0 THEN 'sent' ELSE 'verified' END,
				'+47' || (40000000 + i), '', '10.0.0.1', '', 'en', 'en', randomblob(32), 0, 6, 0, 5, 1,
				'[{"channel":"sms"}]', '[]', $1 - i * 1000000, $1 - i * 1000000 + 300000000,
				CASE WHEN i % 10 = 0 THEN NULL ELSE $1 - i * 1000000 END, $1 - i * 1000000
			FROM seq`,
			`WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < $2)
			INSERT INTO counters (name, value, updated_at, expires_at)
			SELECT 'recipient:+47' || (40000000 + i), 1, $1, $1 + 3600000000 FROM seq`,
			`ANALYZE`,
		}
	}
	arg := any(now)
	if st.Dialect() == sqlstore.SQLite {
		arg = now.UnixMicro()
	}
	for _, q := range stmts {
		var err error
		if q == `ANALYZE` && !analyze {
			continue
		}
		if q == `ANALYZE` {
			_, err = st.DB().ExecContext(ctx, q)
		} else {
			_, err = st.DB().ExecContext(ctx, q, arg, loadedRows(st.Dialect()))
		}
		require.NoError(t, err, q)
	}
	var n int
	require.NoError(t, st.DB().QueryRowContext(ctx, `SELECT count(*) FROM verifications`).Scan(&n))
	require.Equal(t, loadedRows(st.Dialect()), n)
}

// TestHotQueryPlansPreparedEmpty: PostgreSQL caches the generic plan of a
// prepared statement (pgx prepares every statement), and a plan made while
// the tables were empty is still used after they have grown, until an
// ANALYZE. Each hot statement, planned on empty tables, must still find
// its rows through its index on 200,000 rows the planner has not
// analysed.
func TestHotQueryPlansPreparedEmpty(t *testing.T) {
	ctx := context.Background()
	st, conn := genericPlans(t)
	want := hotIndexes
	queries := st.HotQueries("v00000042", start)
	execute := func(name string) string {
		args := make([]string, len(queries[name].Args))
		for i, a := range queries[name].Args {
			args[i] = sqlLiteral(t, a)
		}
		return "EXECUTE hot_" + strings.ReplaceAll(name, "-", "_") + " (" + strings.Join(args, ", ") + ")"
	}
	for name := range want {
		_, err := conn.ExecContext(ctx, "PREPARE hot_"+strings.ReplaceAll(name, "-", "_")+" AS "+queries[name].SQL)
		require.NoError(t, err, name)
		_, err = conn.ExecContext(ctx, execute(name)) // the plan is made now, on empty tables
		require.NoError(t, err, name)
	}
	fill(t, st, false)
	for name, index := range want {
		plan := queryPlan(t, conn, st.Dialect(), execute(name))
		assert.Contains(t, plan, index, "plan of %s:\n%s", name, plan)
		assert.NotRegexp(t, `Seq Scan on (verifications|counters)`, plan, "plan of %s reads a whole table:\n%s", name, plan)
	}
}

// genericPlans returns a Store on a fresh PostgreSQL schema and one of its
// connections, which plans every prepared statement once, generically, as
// PostgreSQL does for a statement after its first few runs.
func genericPlans(t *testing.T) (*sqlstore.Store, *sql.Conn) {
	t.Helper()
	ctx := context.Background()
	st := open(t, freshSchema(t))
	conn, err := st.DB().Conn(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = conn.ExecContext(ctx, `SET plan_cache_mode = force_generic_plan`)
	require.NoError(t, err)
	return st, conn
}

// sqlLiteral writes v as a PostgreSQL literal.
func sqlLiteral(t *testing.T, v any) string {
	t.Helper()
	switch x := v.(type) {
	case string:
		return "'" + strings.ReplaceAll(x, "'", "''") + "'"
	case time.Time:
		return "'" + x.UTC().Format(time.RFC3339Nano) + "'::timestamptz"
	case []byte:
		return "'\\x" + hex.EncodeToString(x) + "'::bytea"
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case bool:
		return strconv.FormatBool(x)
	case *time.Time:
		if x == nil {
			return "NULL::timestamptz"
		}
		return sqlLiteral(t, *x)
	case *string:
		if x == nil {
			return "NULL::text"
		}
		return sqlLiteral(t, *x)
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice {
		if rv.Len() == 0 {
			return "'{}'" // typed by the statement's cast
		}
		elems := make([]string, rv.Len())
		for i := range elems {
			e := rv.Index(i).Interface()
			if b, ok := e.([]byte); ok && b == nil {
				elems[i] = "NULL::bytea"
			} else {
				elems[i] = sqlLiteral(t, e)
			}
		}
		return "ARRAY[" + strings.Join(elems, ", ") + "]"
	}
	t.Fatalf("no literal for %T", v)
	return ""
}

// TestBatchedStatementPlans: the statements that carry many callers'
// calls at once (see pgbatch.go), planned generically on empty tables as
// they run (after pgProbesOnly, in their transaction), still reach each
// row through an index on 200,000 verifications and counters the planner
// has not analysed. Without pgProbesOnly their plans hash-joined a
// sequential scan of the verifications with the batch.
func TestBatchedStatementPlans(t *testing.T) {
	ctx := context.Background()
	st, conn := genericPlans(t)
	queries, probesOnly := st.BatchQueries([]string{"v00000042", "v00000043", "v00000044"}, start)
	execute := func(name string) string {
		args := make([]string, len(queries[name].Args))
		for i, a := range queries[name].Args {
			args[i] = sqlLiteral(t, a)
		}
		return "EXECUTE batch_" + name + " (" + strings.Join(args, ", ") + ")"
	}
	// Each in a transaction of its own after pgProbesOnly, as the Store
	// runs them, rolled back.
	inTx := func(f func() error) {
		t.Helper()
		for _, stmt := range []string{"BEGIN", probesOnly} {
			_, err := conn.ExecContext(ctx, stmt)
			require.NoError(t, err)
		}
		err := f()
		_, rerr := conn.ExecContext(ctx, "ROLLBACK")
		require.NoError(t, err)
		require.NoError(t, rerr)
	}
	for name, q := range queries {
		_, err := conn.ExecContext(ctx, "PREPARE batch_"+name+" AS "+q.SQL)
		require.NoError(t, err, name)
		// The plan is made now, on the empty tables; rolled back, so that
		// the rows do not clash with those filled in below.
		inTx(func() error {
			_, err := conn.ExecContext(ctx, execute(name))
			return err
		})
	}
	fill(t, st, false)
	for name := range queries {
		inTx(func() error {
			plan := queryPlan(t, conn, st.Dialect(), execute(name))
			assert.NotRegexp(t, `Seq Scan on (verifications|counters|deliveries|pending_steps)`, plan,
				"plan of %s reads a whole table:\n%s", name, plan)
			assert.NotRegexp(t, `Hash Join|Merge Join`, plan, "plan of %s joins the batch to a table as a whole:\n%s", name, plan)
			return nil
		})
	}
}

// TestCounterWriteBackPlanOnAGrowingTable: PostgreSQL caches the generic
// plan of a prepared statement, and a plan made while the counters table
// was empty, before any ANALYZE, is still used once the table has grown.
// The write-back of a Take's counters must reach its rows through the
// primary key whatever the plan was made on (an UPDATE ... FROM
// unnest(...) scanned the whole table: 1.9 ms a call at 20,000 counters).
func TestCounterWriteBackPlanOnAGrowingTable(t *testing.T) {
	ctx := context.Background()
	_, conn := genericPlans(t)
	for _, stmt := range []string{
		`PREPARE w (text[], bigint[], timestamptz[], timestamptz[], timestamptz[]) AS ` + sqlstore.PGWriteCounters,
		// The plan is made now, on the empty table.
		`EXECUTE w (ARRAY['k0'], ARRAY[1], ARRAY[now()], ARRAY[now()], ARRAY[NULL]::timestamptz[])`,
		`INSERT INTO counters (name, value, updated_at, expires_at)
			SELECT 'k' || g, 1, now(), now() + interval '1 hour' FROM generate_series(1, 20000) AS g`,
	} {
		_, err := conn.ExecContext(ctx, stmt)
		require.NoError(t, err, stmt)
	}
	plan := queryPlan(t, conn, sqlstore.Postgres, `EXECUTE w (ARRAY['k1', 'k2'], ARRAY[1, 2], ARRAY[now(), now()],
		ARRAY[now(), now()], ARRAY[NULL, NULL]::timestamptz[])`)
	t.Logf("plan:\n%s", plan)
	assert.NotContains(t, plan, "Seq Scan", "the write-back reads the whole table")
	assert.Contains(t, plan, "counters_pkey")
}
