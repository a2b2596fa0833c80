package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/openverify/verify"
)

const counterCols = `name, value, updated_at, expires_at, not_before`

// Take implements verify.Counters, all or nothing, in one transaction that
// locks every named counter before it reads them:
//
//  1. one statement locks the counters, creating the missing ones, and
//     returns them: an upsert whose conflict branch changes nothing. A
//     created row has expires_at = now, so it counts as the zero Counter.
//     On PostgreSQL it locks the rows in the order of the keys, sorted,
//     so that Takes sharing counters wait for each other rather than
//     deadlock (PurgeCounters skips locked rows and DeleteCounter locks
//     one). On SQLite it is the transaction's first statement, a write, so
//     the transaction holds the database's write lock before it reads,
//     whatever the connection's _txlock;
//  2. verify.ApplyTakes decides, in Go;
//  3. if every take is allowed, one statement writes back the counters of
//     the takes with a non-zero Delta, and the transaction commits.
//     Otherwise (or if there is nothing to write) it rolls back, and the
//     rows created only to be locked are gone again.
//
// On PostgreSQL the statements are pipelined on one connection (see
// pgTake), so the transaction costs two round trips rather than four, and
// concurrent Takes share one (see takeBatch).
//
// A Take of one counter first runs countOne's upsert, which locks the
// counter's row where it exists and settles an allowed count; a refused
// count, and a check (Delta 0), which that statement never changes, then
// take the transaction above, and a Take of more counters takes it
// whatever its Deltas. So a refusal is the same statements, and the same
// locks, for a check of a counter and a count on it: an engine whose
// Counters these are refuses a right code and a wrong one for a
// locked-out recipient alike.
func (s *Store) Take(ctx context.Context, now time.Time, takes []verify.Take) (verify.Taken, error) {
	if len(takes) == 0 {
		return verify.ApplyTakes(nil, nil, now), nil
	}
	keys := make([]string, len(takes))
	for i, t := range takes {
		keys[i] = t.Key
	}
	// Sorted, the order in which the counters are locked.
	slices.Sort(keys)
	for i := 1; i < len(keys); i++ {
		if keys[i] == keys[i-1] {
			return verify.Taken{}, wrap("take counters", fmt.Errorf("counter %q is named by more than one take", keys[i]))
		}
	}
	if s.pgBatches != nil {
		return s.pgBatches.takes.Do(ctx, takeReq{keys: keys, takes: takes, now: now})
	}
	return s.takeOne(ctx, keys, takes, now)
}

// takeOne is Take's own statement or transaction, for takes whose keys
// are sorted.
func (s *Store) takeOne(ctx context.Context, keys []string, takes []verify.Take, now time.Time) (verify.Taken, error) {
	q := s.takeQueries(len(keys))
	var (
		res verify.Taken
		err error
	)
	if len(takes) == 1 && takes[0].Delta >= 0 {
		// The engine's hot path (a failure slot, a per-IP check, a
		// failure check): one statement, which settles an allowed count;
		// a refused count, and any check, are decided in the transaction
		// below, after the same statement.
		var settled bool
		if res, settled, err = s.countOne(ctx, takes[0], now); err != nil {
			return verify.Taken{}, wrap("take counters", err)
		} else if settled {
			return res, nil
		}
	}
	if s.pg() {
		res, err = s.pgTake(ctx, keys, takes, now)
	} else {
		err = s.inTx(ctx, func(tx querier) error {
			cur, err := readCounters(ctx, tx, q.lock, append([]any{s.tv(now)}, stringArgs(keys)...)...)
			if err != nil {
				return err
			}
			if res = decide(cur, takes, now); !res.OK {
				return errRollback
			}
			query, args := s.writeCounters(takes, res.Counters)
			if query == "" {
				return errRollback
			}
			_, err = tx.ExecContext(ctx, query, args...)
			return err
		})
	}
	if err != nil {
		return verify.Taken{}, wrap("take counters", err)
	}
	return res, nil
}

// decide is verify.ApplyTakes over the counters read under the lock, with
// the changed counters' times as the Store keeps them.
func decide(cur map[string]verify.Counter, takes []verify.Take, now time.Time) verify.Taken {
	res := verify.ApplyTakes(ordered(cur, takes), takes, now)
	if res.OK {
		for i := range res.Counters {
			res.Counters[i] = storedCounter(res.Counters[i])
		}
	}
	return res
}

// countOne is one take of one counter, in one statement: an upsert whose
// conflict branch counts only where the take is allowed (the value stays
// within Max and NotBefore has passed, or the counter has expired) and
// computes the new NotBefore from the Backoff in SQL, exactly as
// Backoff.Delay does. The row lock of the upsert makes it atomic. A
// check (Delta 0), or a Delta above Max, runs the same statement, which
// locks an existing counter's row as it does for a refused count and
// changes nothing. counted is false when it did not count; the caller
// then decides again in Take's transaction, which reads the counter under
// its lock to say why.
func (s *Store) countOne(ctx context.Context, t verify.Take, now time.Time) (verify.Taken, bool, error) {
	b := t.Backoff
	limit := max(b.Max, b.Base)
	shift := 0 // the least k with Base << k >= limit: from there on, Delay is limit
	for d := b.Base; d > 0 && d < limit && shift < 62; d <<= 1 {
		shift++
	}
	query := sqliteCountOneQuery
	if s.pg() {
		query = pgCountOneQuery
	}
	var c verify.Counter
	err := s.write(ctx, func(q querier) error {
		return q.QueryRowContext(ctx, query, t.Key, t.Delta, s.tv(now), s.tv(t.ExpiresAt), t.Max,
			b.Free, b.Base.Microseconds(), shift, limit.Microseconds()).
			Scan(counterDest(&c)...)
	})
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (t.Delta <= 0 || t.Delta > t.Max)) {
		return verify.Taken{}, false, nil // refused, or a check (see pgCountOneQuery)
	}
	if err != nil {
		return verify.Taken{}, false, err
	}
	return verify.Taken{OK: true, Refused: -1, Counters: []verify.Counter{storedCounter(c)}}, true, nil
}

// pgNotBefore is now ($3) + Backoff.Delay(n) for the Backoff in $6 (Free),
// $7 (Base, µs), $8 (the shift from which Delay is the limit) and $9 (the
// limit, µs); NULL for no wait.
func pgNotBefore(n string) string {
	return `CASE WHEN $7::bigint <= 0 OR ` + n + ` < $6::bigint THEN NULL
		WHEN ` + n + ` - $6::bigint >= $8::bigint THEN $3::timestamptz + $9::bigint * interval '1 microsecond'
		ELSE $3::timestamptz + ($7::bigint << (` + n + ` - $6::bigint)::int) * interval '1 microsecond' END`
}

// pgCountOneQuery counts $2 on counter $1 at $3 if allowed, setting
// expires_at $4, within Max $5 (see countOne). A $2 of 0, or above $5,
// counts nothing: its row goes to the conflict branch only where the
// counter exists, to lock it there as a count does, and is refused
// there; should the counter be deleted meanwhile, the row inserted holds
// 0 and has expired, the zero Counter, and countOne answers that it did
// not count.
var pgCountOneQuery = `INSERT INTO counters AS c (` + counterCols + `)
	SELECT $1::text, CASE WHEN ` + pgCounts1 + ` THEN $2::bigint ELSE 0 END, $3::timestamptz,
		CASE WHEN ` + pgCounts1 + ` THEN $4::timestamptz ELSE $3::timestamptz END,
		CASE WHEN ` + pgCounts1 + ` THEN ` + pgNotBefore("$2::bigint") + ` END
	WHERE ` + pgCounts1 + ` OR EXISTS (SELECT 1 FROM counters WHERE name = $1::text)
	ON CONFLICT (name) DO UPDATE SET
		value = CASE WHEN c.expires_at <= $3 THEN 0 ELSE c.value END + $2,
		updated_at = $3, expires_at = $4,
		not_before = ` + pgNotBefore("(CASE WHEN c.expires_at <= $3 THEN 0 ELSE c.value END + $2)") + `
	WHERE ` + pgCounts1 + `
		AND (c.expires_at <= $3 OR (c.value <= $5::bigint - $2 AND (c.not_before IS NULL OR c.not_before <= $3)))
	RETURNING value, updated_at, expires_at, not_before`

// pgCounts1 is whether countOne's take counts anything: a positive Delta
// ($2) within Max ($5).
const pgCounts1 = `($2::bigint > 0 AND $2::bigint <= $5::bigint)`

// sqliteNotBefore is pgNotBefore for SQLite, whose times are integer
// microseconds.
func sqliteNotBefore(n string) string {
	return `CASE WHEN $7 <= 0 OR ` + n + ` < $6 THEN NULL
		WHEN ` + n + ` - $6 >= $8 THEN $3 + $9
		ELSE $3 + ($7 << (` + n + ` - $6)) END`
}

// sqliteCountOneQuery is pgCountOneQuery for SQLite.
var sqliteCountOneQuery = `INSERT INTO counters AS c (` + counterCols + `)
	SELECT $1, CASE WHEN ` + sqliteCounts1 + ` THEN $2 ELSE 0 END, $3,
		CASE WHEN ` + sqliteCounts1 + ` THEN $4 ELSE $3 END,
		CASE WHEN ` + sqliteCounts1 + ` THEN ` + sqliteNotBefore("$2") + ` END
	WHERE ` + sqliteCounts1 + ` OR EXISTS (SELECT 1 FROM counters WHERE name = $1)
	ON CONFLICT (name) DO UPDATE SET
		value = CASE WHEN c.expires_at <= $3 THEN 0 ELSE c.value END + $2,
		updated_at = $3, expires_at = $4,
		not_before = ` + sqliteNotBefore("(CASE WHEN c.expires_at <= $3 THEN 0 ELSE c.value END + $2)") + `
	WHERE ` + sqliteCounts1 + `
		AND (c.expires_at <= $3 OR (c.value <= $5 - $2 AND (c.not_before IS NULL OR c.not_before <= $3)))
	RETURNING value, updated_at, expires_at, not_before`

// sqliteCounts1 is pgCounts1 for SQLite.
const sqliteCounts1 = `($2 > 0 AND $2 <= $5)`

// countQuery applies one verify.Count ($1 the key, $2 the Delta, $3 the
// time, $4 ExpiresAt): an upsert that always counts, starting from zero a
// counter that has expired, and clears NotBefore, as Take.Apply does for a
// take with no Backoff. Its parameters take the types of the columns they
// are inserted into, so one text serves both databases.
const countQuery = `INSERT INTO counters AS c (` + counterCols + `)
	VALUES ($1, $2, $3, $4, NULL)
	ON CONFLICT (name) DO UPDATE SET
		value = CASE WHEN c.expires_at <= $3 THEN 0 ELSE c.value END + $2,
		updated_at = $3, expires_at = $4, not_before = NULL
	RETURNING value, updated_at, expires_at, not_before`

// applyCounts applies counts at now in q's transaction and returns the
// counters after them.
func (s *Store) applyCounts(ctx context.Context, q querier, counts []verify.Count, now time.Time) ([]verify.Counter, error) {
	out := make([]verify.Counter, len(counts))
	for i, c := range counts {
		var got verify.Counter
		if err := q.QueryRowContext(ctx, countQuery, c.Key, c.Delta, s.tv(now), s.tv(c.ExpiresAt)).
			Scan(&got.Value, timeDest{&got.UpdatedAt}, timeDest{&got.ExpiresAt}, timeDest{&got.NotBefore}); err != nil {
			return nil, err
		}
		out[i] = storedCounter(got)
	}
	return out, nil
}

// pgTake is Take's transaction on PostgreSQL (see pgLocked).
func (s *Store) pgTake(ctx context.Context, keys []string, takes []verify.Take, now time.Time) (verify.Taken, error) {
	var res verify.Taken
	err := s.pgLocked(ctx, keys, now, func(cur map[string]verify.Counter) (string, []any) {
		if res = decide(cur, takes, now); !res.OK {
			return "", nil
		}
		return s.writeCounters(takes, res.Counters)
	})
	return res, err
}

// pgLocked is the transaction of Take on PostgreSQL: it locks the
// counters named by keys (sorted), creating the missing ones as expired at
// now, hands them to decide, and runs the write-back decide returns and
// commits, or rolls back if it returns "". database/sql would spend a
// round trip on each of BEGIN, the lock statement, the write-back and
// COMMIT; pgTx pipelines them on one connection instead, two at a time:
// BEGIN with the lock statement, then the write-back with COMMIT (or
// ROLLBACK alone).
func (s *Store) pgLocked(ctx context.Context, keys []string, now time.Time, decide func(cur map[string]verify.Counter) (string, []any)) error {
	var cur map[string]verify.Counter
	return s.pgTx(ctx, []pgStep{s.pgLockStep(keys, now, &cur)}, func() (pgStep, bool) {
		query, args := decide(cur)
		return pgStep{query: query, args: args}, query != ""
	})
}

// pgLockStep is the pgTx statement that locks the counters named by keys
// (sorted), creating the missing ones as expired at now, and reads them
// into *cur.
func (s *Store) pgLockStep(keys []string, now time.Time, cur *map[string]verify.Counter) pgStep {
	return pgStep{query: pgTakeQueries.lock, args: []any{keys, s.tv(now)}, scan: func(rows pgx.Rows) (err error) {
		*cur, err = scanCounters(rows)
		return err
	}}
}

// pgStep is a statement of pgTx, and what reads its rows (nil for none).
type pgStep struct {
	query string
	args  []any
	scan  func(pgx.Rows) error
}

// pgTx runs a transaction on one of the pool's connections in two round
// trips: BEGIN and the statements of first, in one pipeline, each one's
// rows handed to its scan; then, if decide (which sees what they read)
// returns a statement and true, that statement and COMMIT in another,
// else ROLLBACK. A statement that fails skips the COMMIT queued after it:
// the transaction is rolled back, and its error returned.
func (s *Store) pgTx(ctx context.Context, first []pgStep, decide func() (pgStep, bool)) error {
	return s.withPgx(ctx, func(c *pgx.Conn) error {
		run := func(steps []pgStep, end string) error {
			var b pgx.Batch
			for _, st := range steps {
				b.Queue(st.query, st.args...)
			}
			if end != "" {
				b.Queue(end)
			}
			br := c.SendBatch(ctx, &b)
			var err error
			for _, st := range steps {
				if st.scan == nil {
					if _, err = br.Exec(); err != nil {
						break
					}
					continue
				}
				var rows pgx.Rows
				if rows, err = br.Query(); err != nil {
					break
				}
				err = st.scan(rows)
				rows.Close()
				if err = cmp.Or(err, rows.Err()); err != nil {
					break
				}
			}
			return errors.Join(err, br.Close())
		}
		if err := run(append([]pgStep{{query: `BEGIN`}}, first...), ""); err != nil {
			return pgRollback(ctx, c, err)
		}
		last, ok := decide()
		if !ok { // refused, or nothing to write
			return pgRollback(ctx, c, nil)
		}
		if err := run([]pgStep{last}, `COMMIT`); err != nil {
			return pgRollback(ctx, c, err)
		}
		return nil
	})
}

// pgRollback rolls back the transaction open on c and returns err. If the
// ROLLBACK fails too, the connection still has a transaction open:
// database/sql discards it before reuse (pgx's ResetSession refuses a
// connection that is not idle).
func pgRollback(ctx context.Context, c *pgx.Conn, err error) error {
	if _, rerr := c.Exec(ctx, `ROLLBACK`); rerr != nil && err == nil {
		return rerr
	}
	return err
}

// scannedRows is what the scanners need of *sql.Rows and pgx.Rows.
type scannedRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// scanCounters reads rows of counterCols into counters by name.
func scanCounters(rows scannedRows) (map[string]verify.Counter, error) {
	out := make(map[string]verify.Counter)
	for rows.Next() {
		var (
			name string
			c    verify.Counter
		)
		if err := rows.Scan(counterDest(&c, &name)...); err != nil {
			return nil, err
		}
		out[name] = c
	}
	return out, rows.Err()
}

// errRollback, returned by an inTx function, rolls the transaction back
// without an error.
var errRollback = errors.New("sqlstore: roll back")

// takeQueries are Take's statements for n keys.
type takeQueries struct {
	// lock upserts and returns the counters: PostgreSQL's takes the keys
	// as $1 (text[]) and now as $2; SQLite's now as $1 and the keys as $2
	// to $n+1.
	lock string
	// read is SQLite's read of n counters, the keys as $1 to $n, for the
	// Limits of a creation (decideLimits).
	read string
	// write is SQLite's write-back of n counters, five parameters each
	// (counterCols). PostgreSQL's is pgWriteCounters, for any number.
	write string
}

// lockConflict is the lock statement's conflict branch: an update that
// changes nothing, but locks the row (PostgreSQL) and returns it as it is.
const lockConflict = ` ON CONFLICT (name) DO UPDATE SET value = counters.value RETURNING ` + counterCols

var (
	// unnest returns the keys in the order of the array, and the INSERT
	// locks the rows in that order.
	pgTakeQueries = takeQueries{
		lock: `INSERT INTO counters (name, value, updated_at, expires_at)
			SELECT k.name, 0, $2::timestamptz, $2::timestamptz FROM unnest($1::text[]) AS k (name)` + lockConflict,
	}
	// pgWriteCounters writes back counters whose rows the transaction has
	// locked, from one array per column ($5, not_before, may hold NULLs).
	// It is an upsert whose rows all conflict, rather than an UPDATE ...
	// FROM unnest(...): a conflict is found through the primary key
	// whatever the statistics say, where the join's plan, prepared while
	// the table was small and not yet analysed, scanned the whole table
	// on every Take once it had grown (1.9 ms a call at 20,000 counters).
	pgWriteCounters = `INSERT INTO counters (` + counterCols + `)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[])
		ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
			expires_at = excluded.expires_at, not_before = excluded.not_before`
	// sqliteTakes holds SQLite's statements for up to 8 keys, the most the
	// engine names in one Take; more are built when needed.
	sqliteTakes = func() (qs [9]takeQueries) {
		for n := 1; n < len(qs); n++ {
			qs[n] = sqliteTake(n)
		}
		return qs
	}()
)

// sqliteTake returns SQLite's Take statements for n keys.
func sqliteTake(n int) takeQueries {
	var lock, write strings.Builder
	lock.WriteString(`INSERT INTO counters (name, value, updated_at, expires_at) VALUES `)
	write.WriteString(`INSERT INTO counters (` + counterCols + `) VALUES `)
	for i := range n {
		if i > 0 {
			lock.WriteString(", ")
			write.WriteString(", ")
		}
		fmt.Fprintf(&lock, "($%d, 0, $1, $1)", i+2)
		write.WriteString("(" + placeholders(5*i+1, 5*i+5) + ")")
	}
	lock.WriteString(lockConflict)
	// The rows exist (the lock statement made them), so this updates them.
	write.WriteString(` ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
		expires_at = excluded.expires_at, not_before = excluded.not_before`)
	return takeQueries{
		lock:  lock.String(),
		read:  `SELECT ` + counterCols + ` FROM counters WHERE name IN (` + placeholders(1, n) + `)`,
		write: write.String(),
	}
}

func (s *Store) takeQueries(n int) takeQueries {
	switch {
	case s.pg():
		return pgTakeQueries
	case n < len(sqliteTakes):
		return sqliteTakes[n]
	}
	return sqliteTake(n)
}

func stringArgs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// counterDest is the scan destinations of a counter's columns (value,
// updated_at, expires_at, not_before), after lead's.
func counterDest(c *verify.Counter, lead ...any) []any {
	return append(lead, &c.Value, timeDest{&c.UpdatedAt}, timeDest{&c.ExpiresAt}, timeDest{&c.NotBefore})
}

// readCounters runs a query that returns counterCols, and returns the
// counters by name.
func readCounters(ctx context.Context, q querier, query string, args ...any) (map[string]verify.Counter, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanCounters(rows)
}

// ordered returns the counters of the takes, in their order; a missing
// one is the zero Counter.
func ordered(byName map[string]verify.Counter, takes []verify.Take) []verify.Counter {
	out := make([]verify.Counter, len(takes))
	for i, t := range takes {
		out[i] = byName[t.Key]
	}
	return out
}

// storedCounter returns c with its times as the Store keeps them: UTC,
// microseconds.
func storedCounter(c verify.Counter) verify.Counter {
	for _, t := range []*time.Time{&c.UpdatedAt, &c.ExpiresAt, &c.NotBefore} {
		if !t.IsZero() {
			*t = asStored(*t)
		}
	}
	return c
}

// writeCounters returns the statement that writes back, in one go, the
// counters of the takes with a non-zero Delta (a take with Delta 0
// changes nothing), and its arguments; "" if there are none.
func (s *Store) writeCounters(takes []verify.Take, counters []verify.Counter) (string, []any) {
	n := 0
	for _, t := range takes {
		if t.Delta != 0 {
			n++
		}
	}
	if n == 0 {
		return "", nil
	}
	if s.pg() {
		names, changed := make([]string, 0, n), make([]verify.Counter, 0, n)
		for i, t := range takes {
			if t.Delta != 0 {
				names, changed = append(names, t.Key), append(changed, counters[i])
			}
		}
		return pgWriteCounters, pgCounterArgs(names, changed)
	}
	args := make([]any, 0, 5*n)
	for i, t := range takes {
		if t.Delta == 0 {
			continue
		}
		c := counters[i]
		args = append(args, t.Key, c.Value, s.tv(c.UpdatedAt), s.tv(c.ExpiresAt), s.tn(c.NotBefore))
	}
	return s.takeQueries(n).write, args
}

// pgCounterArgs are pgWriteCounters's arguments for the counters named.
func pgCounterArgs(names []string, counters []verify.Counter) []any {
	var (
		values     = make([]int64, len(names))
		updated    = make([]time.Time, len(names))
		expires    = make([]time.Time, len(names))
		notBefores = make([]*time.Time, len(names)) // nil is NULL
	)
	for i := range names {
		c := counters[i]
		values[i], updated[i], expires[i] = c.Value, c.UpdatedAt.UTC(), c.ExpiresAt.UTC()
		if !c.NotBefore.IsZero() {
			nb := c.NotBefore.UTC()
			notBefores[i] = &nb
		}
	}
	return []any{names, values, updated, expires, notBefores}
}

// GetCounter implements verify.Store. On PostgreSQL concurrent calls
// share one statement (see pgbatch.go).
func (s *Store) GetCounter(ctx context.Context, key string, now time.Time) (verify.Counter, error) {
	if s.pgBatches != nil {
		return s.pgBatches.counters.Do(ctx, counterReq{key, now})
	}
	return s.getCounter(ctx, key, now)
}

// getCounter is GetCounter's own statement.
func (s *Store) getCounter(ctx context.Context, key string, now time.Time) (verify.Counter, error) {
	c, err := readCounter(ctx, s.run(), s.tv, key, now)
	if err != nil {
		return verify.Counter{}, wrap("get counter", err)
	}
	return c, nil
}

// DeleteCounter implements verify.Store.
func (s *Store) DeleteCounter(ctx context.Context, key string) error {
	return wrap("delete counter", s.write(ctx, func(q querier) error {
		_, err := q.ExecContext(ctx, `DELETE FROM counters WHERE name = $1`, key)
		return err
	}))
}

// PurgeCounters implements verify.Store: one bounded batch. On PostgreSQL
// the rows are chosen once (MATERIALIZED, as in ExpireDue), and rows a
// Take holds are skipped rather than waited for, so purging never waits
// on, or deadlocks with, a Take.
func (s *Store) PurgeCounters(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	const expired = `SELECT name FROM counters WHERE expires_at < $1 LIMIT $2`
	query := `DELETE FROM counters WHERE name IN (` + expired + `)`
	if s.pg() {
		query = `WITH old AS MATERIALIZED (` + expired + ` FOR UPDATE SKIP LOCKED)
			DELETE FROM counters WHERE name IN (SELECT name FROM old)`
	}
	var n int64
	err := s.write(ctx, func(q querier) error {
		res, err := q.ExecContext(ctx, query, s.tv(before), limit)
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	if err != nil {
		return 0, wrap("purge counters", err)
	}
	return int(n), nil
}

var _ verify.CounterLister = (*Store)(nil)

// ListCounters implements verify.CounterLister, in byte order of keys (on
// PostgreSQL by the "C" collation, whatever the database's). On SQLite,
// whose keys compare as bytes, the primary key's range [prefix, the next
// string after every key with the prefix) holds them, so it reads only
// those. On PostgreSQL it scans the counters table: under the database's
// collation the keys with a prefix need not be one range of the primary
// key, and another index would cost every Take.
func (s *Store) ListCounters(ctx context.Context, prefix string, now time.Time, after string, limit int) ([]verify.NamedCounter, error) {
	if limit <= 0 {
		return nil, nil
	}
	// substr counts characters, not bytes.
	args := []any{utf8.RuneCountInString(prefix), prefix, s.tv(now), after, limit}
	name, bounds := "name", ""
	if s.pg() {
		name = `name COLLATE "C"`
	} else if upper, ok := prefixEnd(prefix); ok {
		bounds = ` AND name >= $2 AND name < $6`
		args = append(args, upper)
	} else if prefix != "" {
		bounds = ` AND name >= $2`
	}
	rows, err := s.run().QueryContext(ctx, `SELECT `+counterCols+` FROM counters
		WHERE substr(name, 1, $1) = $2`+bounds+` AND expires_at > $3 AND `+name+` > $4
		ORDER BY `+name+` LIMIT $5`, args...)
	if err != nil {
		return nil, wrap("list counters", err)
	}
	defer rows.Close()
	var out []verify.NamedCounter
	for rows.Next() {
		var c verify.NamedCounter
		if err := rows.Scan(counterDest(&c.Counter, &c.Key)...); err != nil {
			return nil, wrap("list counters", err)
		}
		out = append(out, c)
	}
	return out, wrap("list counters", rows.Err())
}

// prefixEnd is the least string greater than every string that starts
// with prefix, in byte order; false when there is none (an empty prefix,
// or one of 0xFF bytes only).
func prefixEnd(prefix string) (string, bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xFF {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}
