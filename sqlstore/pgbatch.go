package sqlstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/combine"
)

// Under load a PostgreSQL statement's fixed cost (the protocol messages,
// binding, starting the executor, the commit) outweighs the rows it
// writes, and the database's CPU runs out before the round trips do. So
// the Store merges concurrent calls of one kind into one statement over
// arrays, or for Take one transaction (see package combine), and answers
// each caller with its own outcome after the commit that holds its call.
//
// pgBatches are the PostgreSQL Store's combiners: the hot calls of a Send
// and a Check. A batch of one runs the call's own statement. Each batched
// statement does for every call what that one does, and in the same lock
// order (the verification's row first, then its counters; verifications
// in ID order, counters in name order).
type pgBatches struct {
	create     combine.Combiner[newVerification, []verify.Counter]
	deliveries combine.Combiner[verify.DeliveryRecord, bool]
	attempts   combine.Combiner[attemptReq, attempted]
	rights     combine.Combiner[rightReq, righted]
	counters   combine.Combiner[counterReq, verify.Counter]
	takes      combine.Combiner[takeReq, verify.Taken]
	// alone counts the batched statements that failed and were run again
	// one call at a time, for tests.
	alone atomic.Int64
	// locking is how many more batched creations with Limits go straight
	// to createLockedBatch, after one whose single statement found a Limit
	// passed (see createBatch); locked counts those that did, for tests.
	locking, locked atomic.Int64
}

// lockingAfterRefusal is how many batched creations with Limits go
// straight to the locking transaction after a batch whose single
// statement found a Limit passed: under a flood that the limits refuse,
// most batches hold a refusal, and trying the single statement first
// would only add a statement to each.
const lockingAfterRefusal = 64

func newPGBatches(s *Store) *pgBatches {
	b := &pgBatches{}
	b.create.Run, b.create.Leave = s.createBatch, leave("create verification")
	b.create.Key = func(nv newVerification) string { return nv.v.ID }
	b.deliveries.Run, b.deliveries.Leave = s.deliveryBatch, leave("record delivery")
	b.deliveries.Key = func(d verify.DeliveryRecord) string { return d.VerificationID }
	b.attempts.Run, b.attempts.Leave = s.attemptBatch, leave("attempt")
	b.attempts.Key = func(a attemptReq) string { return a.id }
	b.rights.Run, b.rights.Leave = s.rightBatch, leave("attempt")
	b.rights.Key = func(r rightReq) string { return r.id }
	b.counters.Run, b.counters.Leave = s.counterBatch, leave("get counter")
	b.takes.Run, b.takes.Leave = s.takeBatch, leave("take counters")
	return b
}

// leave wraps the error of a caller who left a batch, as op's.
func leave(op string) func(error) error {
	return func(err error) error { return wrap(op, err) }
}

// newVerification is a CreateVerification call.
type newVerification struct {
	v      verify.VerificationRecord
	steps  []verify.PendingStep
	guard  verify.Guard   // of a CreateVerificationCounting
	counts []verify.Count // of a CreateVerificationCounting
}

// attemptReq is an Attempt call, and attempted its answer.
type attemptReq struct {
	id     string
	hashes [][]byte
	now    time.Time
	counts []verify.Count // of an AttemptCounting, applied if it verifies
}

type attempted struct {
	rec     verify.VerificationRecord
	counted bool
}

// counterReq is a GetCounter call.
type counterReq struct {
	key string
	now time.Time
}

// takeReq is a Take call, with its keys sorted.
type takeReq struct {
	keys  []string
	takes []verify.Take
	now   time.Time
}

// statementFailed reports whether err is PostgreSQL's refusal of the
// statement (a constraint, a value out of range, a deadlock, ...): an
// ERROR, after which the transaction was rolled back and nothing of it
// was done. A lost connection, a cancellation or a FATAL error (the
// server shutting down) leaves unknown whether it committed.
func statementFailed(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && cmp.Or(pe.SeverityUnlocalized, pe.Severity) == "ERROR" && !strings.HasPrefix(pe.Code, "57P")
}

// pgProbesOnly makes the rest of its transaction plan every table access
// as index probes. PostgreSQL plans for the table sizes it believes, and
// believes a table never analysed to be ten pages; a prepared statement
// keeps the plan it first made for the connection's life. For one row a
// primary-key probe wins whatever the belief, but for a batch of rows a
// scan of "ten pages" and a hash join beat one probe each, and that plan,
// kept while the table grows to millions of rows, reads all of them on
// every call. A batch is at most maxCombined rows, for which probes are
// always right, so its statement runs with sequential scans, hash joins
// and merge joins off: for its own transaction only (set_config's third
// argument), so the plan it makes, and keeps, is made that way.
const pgProbesOnly = `SELECT set_config('enable_seqscan', 'off', true), set_config('enable_hashjoin', 'off', true),
	set_config('enable_mergejoin', 'off', true)`

// pgBatch runs query with args after pgProbesOnly, both in one round trip
// and one transaction, and hands its rows to scan. It returns once the
// transaction has committed, or with the error that ended it.
func (s *Store) pgBatch(ctx context.Context, query string, args []any, scan func(rows pgx.Rows) error) error {
	return s.withPgx(ctx, func(c *pgx.Conn) error {
		// One pipeline with one Sync: PostgreSQL runs it as one implicit
		// transaction, which commits at the Sync that Close waits for.
		var b pgx.Batch
		b.Queue(pgProbesOnly)
		b.Queue(query, args...)
		br := c.SendBatch(ctx, &b)
		_, err := br.Exec()
		if err == nil {
			var rows pgx.Rows
			if rows, err = br.Query(); err == nil {
				err = scan(rows)
				rows.Close()
				err = cmp.Or(err, rows.Err())
			}
		}
		return errors.Join(err, br.Close())
	})
}

// failed answers a batch whose statement ended with err, and reports
// whether it did: after an ERROR, which rolled everything back, each call
// runs again alone and gets its own answer; after any other error, whose
// outcome is unknown, every call gets it. With no error the caller answers
// the calls from the statement's rows.
func failed[Req, Res any](s *Store, ctx context.Context, batch []*combine.Call[Req, Res], err error, op string,
	one func(context.Context, Req) (Res, error)) bool {
	switch {
	case err == nil:
		return false
	case statementFailed(err):
		s.pgBatches.alone.Add(1)
		combine.EachAlone(ctx, batch, one)
	default:
		combine.Fail(batch, wrap(op, err))
	}
	return true
}

// withPgx runs f on one of the pool's connections as pgx's own.
func (s *Store) withPgx(ctx context.Context, f func(c *pgx.Conn) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(driverConn any) error {
		dc, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("the PostgreSQL connection is a %T, not pgx's *stdlib.Conn", driverConn)
		}
		return f(dc.Conn())
	})
}

// distinct reports whether no two calls of a batch name one verification.
// The Combiners' keys keep such calls apart; in one statement they would
// be answered as one (a verification created, or an attempt counted,
// once for both), so a batch that holds them anyway runs call by call.
func distinct[Req, Res any](batch []*combine.Call[Req, Res], id func(Req) string) bool {
	seen := make(map[string]bool, len(batch))
	for _, cl := range batch {
		k := id(cl.Req)
		if seen[k] {
			return false
		}
		seen[k] = true
	}
	return true
}

// byVerification orders a batch by the verification each call changes,
// the order in which its statement locks their rows: two statements that
// lock rows of one table in one order cannot deadlock on them.
func byVerification[Req, Res any](batch []*combine.Call[Req, Res], id func(Req) string) {
	slices.SortFunc(batch, func(a, b *combine.Call[Req, Res]) int { return strings.Compare(id(a.Req), id(b.Req)) })
}

// createBatch stores a batch of verifications and their pending steps in
// one statement. A verification that clashes with a stored one (its ID,
// its idempotency key, an exclusive verification open for its flow and
// recipient) is skipped by ON CONFLICT DO NOTHING, and its call then runs
// alone, which answers the clash as CreateVerification does.
func (s *Store) createBatch(ctx context.Context, batch []*combine.Call[newVerification, []verify.Counter]) {
	one := func(ctx context.Context, nv newVerification) ([]verify.Counter, error) {
		return s.createOne(ctx, nv.v, nv.steps, nv.guard, nv.counts)
	}
	if len(batch) == 1 {
		combine.EachAlone(ctx, batch, one)
		return
	}
	if !distinct(batch, func(nv newVerification) string { return nv.v.ID }) {
		combine.EachAlone(ctx, batch, one)
		return
	}
	reqs := combine.Reqs(batch)
	args, err := createArgs(reqs)
	if err != nil {
		// Steps that cannot be encoded: each call alone answers its own.
		combine.EachAlone(ctx, batch, one)
		return
	}
	// With counts or guards, the statement that applies them: a guarded
	// verification whose guard refuses is not stored, and runs again
	// alone, which answers the refusal. With Limits, the statement that
	// also fails if a counter ends past the least Limit a count on it
	// has: when it does not, no call passed its Limit in any order of
	// the batch, and every call is answered as the counting statement
	// answers it; when it does, the batch is decided again under the
	// counters' locks (createLockedBatch), call by call.
	query, counting := pgCreateBatch, false
	limits := slices.ContainsFunc(reqs, func(nv newVerification) bool { return limited(nv.counts) })
	verifications := args[:len(args):len(args)] // what the appends below leave alone
	switch {
	case limits && s.pgBatches.locking.Load() > 0:
		s.pgBatches.locking.Add(-1)
		s.createLockedBatch(ctx, batch, verifications, one)
		return
	case limits:
		query, counting = pgCreateBatchLimited, true
		args = append(append(args, createCountArgs(reqs)...), limitArgs(reqs))
	case slices.ContainsFunc(reqs, func(nv newVerification) bool { return len(nv.counts) > 0 || nv.guard.Key != "" }):
		query, counting = pgCreateBatchCounting, true
		args = append(args, createCountArgs(reqs)...)
	}
	var created createdRows
	err = s.pgBatch(ctx, query, args, created.scan(counting))
	if pe := (*pgconn.PgError)(nil); limits && errors.As(err, &pe) && pe.Code == pgDivisionByZero {
		s.pgBatches.locking.Store(lockingAfterRefusal)
		s.createLockedBatch(ctx, batch, verifications, one)
		return
	}
	if failed(s, ctx, batch, err, "create verification", one) {
		return
	}
	created.answer(ctx, batch, one)
}

// pgDivisionByZero is the SQLSTATE of pgCreateBatchLimited's failure when
// a counter passes a Limit.
const pgDivisionByZero = "22012"

// limitArgs is pgCreateBatchLimited's last argument: the Limit of each
// count, in countArgs' order (0 for none).
func limitArgs(reqs []newVerification) []int64 {
	var limits []int64
	for _, nv := range reqs {
		for _, c := range nv.counts {
			limits = append(limits, c.Limit)
		}
	}
	return limits
}

// createCountArgs are pgCreateBatchCounting's arguments beyond
// pgCreateBatch's: the counts and the guards.
func createCountArgs(reqs []newVerification) []any {
	c, _ := countArgs(reqs, func(nv newVerification) (string, time.Time, []verify.Count) {
		return nv.v.ID, nv.v.CreatedAt, nv.counts
	})
	return append(c, guardArgs(reqs)...)
}

// createdRows is what a batched creation's statement returned: the IDs
// it stored, and (counting) each counter after the batch's counts.
type createdRows struct {
	stored map[string]bool
	final  map[string]verify.Counter
}

// scan reads the statement's rows.
func (cr *createdRows) scan(counting bool) func(rows pgx.Rows) error {
	cr.stored, cr.final = make(map[string]bool), make(map[string]verify.Counter)
	return func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				id string
				c  counterRow
			)
			dest := []any{&id}
			if counting {
				dest = append(dest, &c.counter, &c.value, &c.updatedAt, &c.expiresAt, &c.notBefore)
			}
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			if c.counter {
				cr.final[id] = c.Counter()
			} else {
				cr.stored[id] = true
			}
		}
		return nil
	}
}

// answer answers the calls of batch the statement ran: each stored one
// with its counters, the final ones less what the stored calls after it
// in the batch added (the values a serial run in batch order gives); each
// one it did not store runs again alone, which answers why.
func (cr *createdRows) answer(ctx context.Context, batch []*combine.Call[newVerification, []verify.Counter],
	one func(context.Context, newVerification) ([]verify.Counter, error)) {
	later := make(map[string]int64)
	for i := len(batch) - 1; i >= 0; i-- {
		cl := batch[i]
		if !cr.stored[cl.Req.v.ID] || len(cl.Req.counts) == 0 {
			continue
		}
		res := make([]verify.Counter, len(cl.Req.counts))
		for j, cnt := range cl.Req.counts {
			c := cr.final[cnt.Key]
			c.Value -= later[cnt.Key]
			c.UpdatedAt = asStored(cl.Req.v.CreatedAt)
			res[j] = c
			later[cnt.Key] += cnt.Delta
		}
		cl.Res = res
	}
	for _, cl := range batch {
		if !cr.stored[cl.Req.v.ID] {
			cl.Res, cl.Err = one(ctx, cl.Req)
		}
	}
}

// createLockedBatch is createBatch for a batch with counts that have a
// Limit, one of which the batch passes, in one transaction (pgTx): the
// first round trip stores the batch's verifications without their counts
// (pgCreateBatchCounting with none: a clash, or a guard that refuses,
// leaves one out) and locks the counters of all their counts, in sorted
// order; Go then decides the stored calls in batch order, each on the
// counters as the calls before it left them, as ApplyCounts does; the
// second deletes again the verifications a Limit refused, applies the
// counts of the others and commits. The verifications are written before
// the counters, as every creation's statement writes them, so that racing
// creations of one exclusive verification never deadlock. A call not
// stored runs again alone, which answers why. args are createArgs' for
// the batch.
func (s *Store) createLockedBatch(ctx context.Context, batch []*combine.Call[newVerification, []verify.Counter],
	args []any, one func(context.Context, newVerification) ([]verify.Counter, error)) {
	s.pgBatches.locked.Add(1)
	reqs := combine.Reqs(batch)
	var keys []string
	oldest := batch[0].Req.v.CreatedAt
	for _, cl := range batch {
		keys = countKeys(keys, cl.Req.counts)
		if cl.Req.v.CreatedAt.Before(oldest) {
			oldest = cl.Req.v.CreatedAt
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	uncounted, _ := countArgs(reqs, func(nv newVerification) (string, time.Time, []verify.Count) {
		return nv.v.ID, nv.v.CreatedAt, nil
	})
	var (
		stored  createdRows
		cur     map[string]verify.Counter
		allowed []*combine.Call[newVerification, []verify.Counter]
		final   = make(map[string]verify.Counter)
	)
	insert := pgStep{query: pgCreateBatchCounting, args: append(append(args, uncounted...), guardArgs(reqs)...), scan: stored.scan(true)}
	err := s.pgTx(ctx, []pgStep{{query: pgProbesOnly}, insert, s.pgLockStep(keys, oldest, &cur)}, func() (pgStep, bool) {
		var refused []string
		for _, cl := range batch {
			nv := cl.Req
			if !stored.stored[nv.v.ID] {
				continue
			}
			after, err := verify.ApplyCounts(orderedCounts(cur, nv.counts), nv.counts, nv.v.CreatedAt)
			if err != nil {
				cl.Err = err
				refused = append(refused, nv.v.ID)
				continue
			}
			for i, c := range nv.counts {
				cur[c.Key] = after[i]
			}
			allowed = append(allowed, cl)
		}
		counts, _ := countArgs(combine.Reqs(allowed), func(nv newVerification) (string, time.Time, []verify.Count) {
			return nv.v.ID, nv.v.CreatedAt, nv.counts
		})
		return pgStep{query: pgCreateFinish, args: append([]any{refused}, counts...), scan: func(rows pgx.Rows) error {
			for rows.Next() {
				var (
					name string
					c    verify.Counter
				)
				if err := rows.Scan(counterDest(&c, &name)...); err != nil {
					return err
				}
				final[name] = c
			}
			return nil
		}}, true
	})
	if failed(s, ctx, batch, err, "create verification", one) {
		return
	}
	done := createdRows{stored: make(map[string]bool, len(allowed)), final: final}
	for _, cl := range allowed {
		done.stored[cl.Req.v.ID] = true
	}
	done.answer(ctx, allowed, one)
	for _, cl := range batch {
		if !stored.stored[cl.Req.v.ID] {
			cl.Res, cl.Err = one(ctx, cl.Req)
		}
	}
}

// pgCreateFinish ends createLockedBatch's transaction: it deletes the
// verifications whose IDs are in $1 (their steps with them) and applies
// the counts in $2 to $6 (see pgCounts) of the others, returning the
// counters after them.
var pgCreateFinish = `WITH d AS (DELETE FROM verifications WHERE id = ANY ($1::text[])),
` + pgCounts(2, `SELECT unnest($2::text[])`) + `
SELECT ` + counterCols + ` FROM k`

// counterRow is a counter as a batched statement returns it beside other
// rows: counter is set for the counter's rows.
type counterRow struct {
	counter                         bool
	value                           *int64
	updatedAt, expiresAt, notBefore *time.Time
}

// Counter returns the row's counter.
func (r counterRow) Counter() verify.Counter {
	var c verify.Counter
	if r.value != nil {
		c.Value = *r.value
	}
	for _, t := range []struct {
		dst *time.Time
		src *time.Time
	}{{&c.UpdatedAt, r.updatedAt}, {&c.ExpiresAt, r.expiresAt}, {&c.NotBefore, r.notBefore}} {
		if t.src != nil {
			*t.dst = t.src.UTC()
		}
	}
	return c
}

// guardArgs are pgCreateBatchCounting's guards: each verification's
// guard's counter (NULL for none) and Max.
func guardArgs(vs []newVerification) []any {
	keys, maxes := make([]*string, len(vs)), make([]int64, len(vs))
	for i, nv := range vs {
		if nv.guard.Key != "" {
			keys[i] = &nv.guard.Key
		}
		maxes[i] = nv.guard.Max
	}
	return []any{keys, maxes}
}

// countArgs are the arguments of pgCounts for the calls' counts, each
// call's given by of as its verification's ID, its time and its counts,
// and whether any call counts.
func countArgs[Req any](reqs []Req, of func(Req) (string, time.Time, []verify.Count)) (args []any, counting bool) {
	var (
		ids, names      []string
		deltas          []int64
		times, expiries []time.Time
	)
	for _, r := range reqs {
		id, at, counts := of(r)
		for _, c := range counts {
			ids, names, deltas = append(ids, id), append(names, c.Key), append(deltas, c.Delta)
			times, expiries = append(times, asStored(at)), append(expiries, asStored(c.ExpiresAt))
		}
	}
	return []any{ids, names, deltas, times, expiries}, ids != nil
}

// pgCounts is a CTE, named k, that applies as upserts the counts of the
// verifications that source (an SQL query of IDs) returns. The counts are
// arrays from $n: the verification ID, the counter's name, the Delta, the
// time and ExpiresAt. The counts of one counter are summed into one row,
// with the latest time and ExpiresAt, and counters are locked in byte
// order of their names, as Take's batches lock them. It returns the
// counters after the counts.
func pgCounts(n int, source string) string {
	p := func(i int) string { return "$" + strconv.Itoa(n+i) }
	return `k AS (INSERT INTO counters AS c (` + counterCols + `)
	SELECT n.name, sum(n.delta), max(n.at), max(n.expires_at), NULL
	FROM unnest(` + p(0) + `::text[], ` + p(1) + `::text[], ` + p(2) + `::bigint[], ` + p(3) + `::timestamptz[], ` + p(4) + `::timestamptz[])
		AS n(vid, name, delta, at, expires_at)
	WHERE n.vid IN (` + source + `)
	GROUP BY n.name ORDER BY n.name COLLATE "C"
	ON CONFLICT (name) DO UPDATE SET
		value = CASE WHEN c.expires_at <= EXCLUDED.updated_at THEN 0 ELSE c.value END + EXCLUDED.value,
		updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at, not_before = NULL
	RETURNING ` + counterCols + `)`
}

// createArgs are pgCreateBatch's arguments for vs.
func createArgs(vs []newVerification) ([]any, error) {
	n := len(vs)
	var (
		ids, flows, foreign, status, phones, emails, ips, keys = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		brands, langs, fallbacks, stepsJSON, ipsJSON           = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		requestHashes, codeHashes, sealed                      = make([][]byte, n), make([][]byte, n), make([][]byte, n)
		charsets, lengths, attempts, maxAttempts, sends        = make([]int, n), make([]int, n), make([]int, n), make([]int, n), make([]int, n)
		created, expires                                       = make([]time.Time, n), make([]time.Time, n)
		lastSent, verified, ended                              = make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
		exclusive                                              = make([]bool, n)
		stepIDs                                                []string
		stepNums, stepTries                                    []int
		stepDue, stepReady                                     []time.Time
		stepLease                                              []*time.Time
		encodeErr                                              error
	)
	for i, nv := range vs {
		v := nv.v
		var err error
		if stepsJSON[i], err = encodeJSON(v.Steps); err == nil {
			ipsJSON[i], err = encodeJSON(v.AllowedIPs)
		}
		encodeErr = cmp.Or(encodeErr, err)
		ids[i], flows[i], foreign[i], status[i] = v.ID, v.FlowID, v.ForeignID, string(v.Status)
		phones[i], emails[i], ips[i], keys[i] = v.To.Phone, v.To.Email, v.IPAddress, v.IdempotencyKey
		brands[i], langs[i], fallbacks[i] = v.Brand, v.Language, v.FallbackLanguage
		requestHashes[i], codeHashes[i], sealed[i] = v.RequestHash, v.CodeHash, v.SealedCode
		charsets[i], lengths[i], attempts[i], maxAttempts[i], sends[i] = int(v.Charset), v.CodeLength, v.Attempts, v.MaxAttempts, v.Sends
		created[i], expires[i] = asStored(v.CreatedAt), asStored(v.ExpiresAt)
		lastSent[i], verified[i] = asStoredOrNil(v.LastSentAt), asStoredOrNil(v.VerifiedAt)
		if !v.Status.Open() { // as endedAt
			t := asStored(v.EndedAt)
			ended[i] = &t
		}
		exclusive[i] = v.Exclusive
		for _, p := range nv.steps {
			stepIDs = append(stepIDs, v.ID)
			stepNums, stepTries = append(stepNums, p.Step), append(stepTries, p.Tries)
			stepDue, stepReady = append(stepDue, asStored(p.DueAt)), append(stepReady, asStored(readyAt(p)))
			stepLease = append(stepLease, asStoredOrNil(p.LeaseUntil))
		}
	}
	if encodeErr != nil {
		return nil, encodeErr
	}
	return []any{
		ids, flows, foreign, status, phones, emails, ips, keys, requestHashes, brands, langs, fallbacks,
		codeHashes, sealed, charsets, lengths, attempts, maxAttempts, sends, lastSent, stepsJSON, ipsJSON,
		created, expires, verified, ended, exclusive,
		stepIDs, stepNums, stepDue, stepLease, stepReady, stepTries,
	}, nil
}

// pgCreateBatch is CreateVerification for arrays of verifications ($1 to
// $27, verificationCols in order) and of pending steps ($28 to $33). It
// returns the IDs of the verifications it stored; a step is stored with
// its verification.
//
// pgCreateBatchCounting is the same with the verifications' counts ($34 to
// $38, see pgCounts) and guards: a verification is stored only if the
// counter its guard names ($39, NULL for none) holds less than Max ($40)
// and its NotBefore has passed at its CreatedAt. Its rows are the stored
// IDs, with false and NULLs, then the counters, with true.
//
// pgCreateBatchLimited is pgCreateBatchCounting with the Limit of each
// count ($41, 0 for none): it fails with a division by zero, storing and
// counting nothing, if a counter ends past the least Limit of the counts
// of the stored verifications on it.
var pgCreateBatch, pgCreateBatchCounting, pgCreateBatchLimited = createBatchSQL(false, false), createBatchSQL(true, false), createBatchSQL(true, true)

func createBatchSQL(counting, limits bool) string {
	guard, counts := "", ""
	final := `SELECT id FROM v`
	if counting {
		guard = `
		JOIN unnest($1::text[], $39::text[], $40::bigint[]) AS g(gid, gkey, gmax) ON g.gid = r.id
	WHERE NOT EXISTS (SELECT 1 FROM counters c WHERE c.name = g.gkey AND c.expires_at > r.created_at
		AND (c.value >= g.gmax OR (c.not_before IS NOT NULL AND c.not_before > r.created_at)))`
		counts = `,
` + pgCounts(34, `SELECT id FROM v`)
		final = `SELECT id, FALSE, NULL::bigint, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz FROM v
UNION ALL SELECT name, TRUE, value, updated_at, expires_at, not_before FROM k`
	}
	if limits {
		// The division is by a value of each row, so that the planner
		// cannot fold it into a constant, and fail every statement.
		final = `SELECT id, FALSE, NULL::bigint, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz FROM v
UNION ALL SELECT k.name, TRUE, k.value / CASE WHEN k.value > l.lim THEN 0 ELSE 1 END, k.updated_at, k.expires_at, k.not_before
	FROM k LEFT JOIN (SELECT n.name, min(n.lim) AS lim FROM unnest($34::text[], $35::text[], $41::bigint[]) AS n(vid, name, lim)
		WHERE n.lim > 0 AND n.vid IN (SELECT id FROM v) GROUP BY n.name) AS l ON l.name = k.name`
	}
	return `WITH v AS (INSERT INTO verifications (` + verificationCols + `)
	SELECT id, flow_id, foreign_id, status, to_phone, to_email, ip_address,
		NULLIF(idempotency_key, ''), request_hash, brand, language, fallback_language,
		code_hash, sealed_code, charset, code_length, attempts, max_attempts, sends, last_sent_at,
		steps::json, allowed_ips::json, created_at, expires_at, verified_at, ended_at, NULLIF(exclusive, FALSE)
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::bytea[], $10::text[], $11::text[], $12::text[],
		$13::bytea[], $14::bytea[], $15::integer[], $16::integer[], $17::integer[], $18::integer[], $19::integer[],
		$20::timestamptz[], $21::text[], $22::text[],
		$23::timestamptz[], $24::timestamptz[], $25::timestamptz[], $26::timestamptz[], $27::boolean[])
		AS r(id, flow_id, foreign_id, status, to_phone, to_email, ip_address,
			idempotency_key, request_hash, brand, language, fallback_language,
			code_hash, sealed_code, charset, code_length, attempts, max_attempts, sends, last_sent_at,
			steps, allowed_ips, created_at, expires_at, verified_at, ended_at, exclusive)` + guard + `
	ON CONFLICT DO NOTHING
	RETURNING id),
s AS (INSERT INTO pending_steps (verification_id, step, due_at, lease_until, ready_at, tries)
	SELECT p.* FROM unnest($28::text[], $29::integer[], $30::timestamptz[], $31::timestamptz[], $32::timestamptz[], $33::integer[])
		AS p(verification_id, step, due_at, lease_until, ready_at, tries)
	WHERE p.verification_id IN (SELECT id FROM v))` + counts + `
` + final
}

// deliveryBatch records a batch of deliveries, for distinct
// verifications, in one statement.
func (s *Store) deliveryBatch(ctx context.Context, batch []*combine.Call[verify.DeliveryRecord, bool]) {
	if len(batch) == 1 {
		combine.EachAlone(ctx, batch, s.recordOne)
		return
	}
	if !distinct(batch, func(d verify.DeliveryRecord) string { return d.VerificationID }) {
		combine.EachAlone(ctx, batch, s.recordOne)
		return
	}
	byVerification(batch, func(d verify.DeliveryRecord) string { return d.VerificationID })
	n := len(batch)
	type outcome struct{ found, changed bool }
	out := make([]outcome, 0, n)
	err := s.pgBatch(ctx, pgDeliveryBatch, deliveryArgs(combine.Reqs(batch)),
		func(rows pgx.Rows) error {
			for rows.Next() {
				var o outcome
				if err := rows.Scan(&o.found, &o.changed); err != nil {
					return err
				}
				out = append(out, o)
			}
			return nil
		})
	if err == nil && len(out) != n {
		err = fmt.Errorf("sqlstore: record deliveries: the statement answered for %d of %d", len(out), n)
	}
	if failed(s, ctx, batch, err, "record delivery", s.recordOne) {
		return
	}
	for i, cl := range batch {
		if !out[i].found {
			cl.Err = notFound("record delivery", "verification", cl.Req.VerificationID)
		}
		cl.Res = out[i].changed
	}
}

// deliveryArgs are pgDeliveryBatch's arguments for ds.
func deliveryArgs(ds []verify.DeliveryRecord) []any {
	n := len(ds)
	var (
		vids, statuses, ids, channels, senders, providerIDs, errs = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		steps                                                     = make([]int, n)
		created, updated                                          = make([]time.Time, n), make([]time.Time, n)
	)
	for i, d := range ds {
		vids[i], statuses[i], ids[i], steps[i] = d.VerificationID, string(d.Status), d.ID, d.Step
		channels[i], senders[i], providerIDs[i], errs[i] = d.Channel, d.From, d.ProviderID, d.Error
		created[i], updated[i] = asStored(d.CreatedAt), asStored(d.UpdatedAt)
	}
	return []any{vids, statuses, ids, steps, channels, senders, providerIDs, errs, created, updated}
}

// pgDeliveryBatch is RecordDelivery's statement for arrays of deliveries
// ($1 to $10 as its $1 to $10), each for a different verification. It
// answers, for each in order, whether its verification exists and whether
// the delivery was inserted or moved.
var pgDeliveryBatch = `WITH r AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[],
		$5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])
		WITH ORDINALITY AS r(vid, dstatus, did, step, channel, sender, provider_id, error, created_at, updated_at, i)),
	moved AS (UPDATE verifications SET status = ` + nextStatusOf("r.dstatus", "r.did") + `
		FROM r WHERE verifications.id = r.vid RETURNING verifications.id),
	done AS (DELETE FROM pending_steps USING r
		WHERE pending_steps.verification_id = r.vid AND pending_steps.step = r.step AND r.step >= 0),
	ins AS (INSERT INTO deliveries (` + deliveryCols + `)
		SELECT r.did, r.vid, r.step, r.channel, r.sender, r.dstatus, r.provider_id, r.error, r.created_at, r.updated_at
		FROM r JOIN moved ON moved.id = r.vid` + moveDelivery + ` RETURNING id)
	SELECT EXISTS (SELECT 1 FROM moved WHERE moved.id = r.vid), EXISTS (SELECT 1 FROM ins WHERE ins.id = r.did)
	FROM r ORDER BY r.i`

// attemptBatch counts a batch of attempts, on distinct verifications, in
// one statement. A verification the statement left alone (ended, expired,
// out of attempts, or missing) is read alone, as Attempt answers it.
func (s *Store) attemptBatch(ctx context.Context, batch []*combine.Call[attemptReq, attempted]) {
	one := func(ctx context.Context, a attemptReq) (attempted, error) {
		rec, counted, err := s.attemptOne(ctx, a.id, a.hashes, a.now, a.counts)
		return attempted{rec, counted}, err
	}
	if len(batch) == 1 {
		combine.EachAlone(ctx, batch, one)
		return
	}
	if !distinct(batch, func(a attemptReq) string { return a.id }) {
		combine.EachAlone(ctx, batch, one)
		return
	}
	byVerification(batch, func(a attemptReq) string { return a.id })
	reqs := combine.Reqs(batch)
	query, args := pgAttemptBatch, attemptArgs(reqs)
	if c, ok := countArgs(reqs, func(a attemptReq) (string, time.Time, []verify.Count) { return a.id, a.now, a.counts }); ok {
		query, args = pgAttemptBatchCounting, append(args, c...)
	}
	var recs []verify.VerificationRecord
	err := s.pgBatch(ctx, query, args, func(rows pgx.Rows) (err error) {
		recs, err = scanVerificationRows(rows)
		return err
	})
	if failed(s, ctx, batch, err, "attempt", one) {
		return
	}
	byID := make(map[string]verify.VerificationRecord, len(recs))
	for _, r := range recs {
		byID[r.ID] = r
	}
	for _, cl := range batch {
		if r, ok := byID[cl.Req.id]; ok {
			cl.Res = attempted{r, true}
			continue
		}
		rec, _, err := s.current(ctx, "attempt", cl.Req.id)
		cl.Res, cl.Err = attempted{rec: rec}, err
	}
}

// attemptArgs are pgAttemptBatch's arguments for as.
func attemptArgs(as []attemptReq) []any {
	n := len(as)
	ids, nows, entries := make([]string, n), make([]time.Time, n), make([]string, n)
	for i, a := range as {
		ids[i], nows[i], entries[i] = a.id, asStored(a.now), checkEntry(a.now)
	}
	starts, hashes := hashSpans(as, func(a attemptReq) [][]byte { return a.hashes })
	return []any{ids, nows, starts, hashes, entries}
}

// hashSpans lays out the code hashes of calls for a batched statement:
// every call's hashes, in the order of the calls, in hashes, and in
// starts the index in hashes (from 1, as SQL arrays count) of each call's
// first, then one past the last call's last, so that call i's are
// hashes[starts[i] : starts[i+1]-1] in SQL (pgCallHashes).
func hashSpans[Req any](reqs []Req, of func(Req) [][]byte) (starts []int32, hashes [][]byte) {
	starts = make([]int32, 0, len(reqs)+1)
	hashes = make([][]byte, 0, len(reqs))
	for _, r := range reqs {
		starts = append(starts, int32(len(hashes)+1))
		hashes = append(hashes, of(r)...)
	}
	return append(starts, int32(len(hashes)+1)), hashes
}

// pgCallHashes is the code hashes of the call at r.i, the ordinality of
// the call's row in the arrays of calls: the slice of $4 that $3 gives it
// (see hashSpans). It takes one step a call, where finding a call's
// hashes by its ID among all the batch's took a step for each of them.
const pgCallHashes = `($4::bytea[])[($3::int[])[r.i] : ($3::int[])[r.i + 1] - 1]`

// pgAttemptBatch is Attempt's statement for an array of verification IDs
// ($1) and the times of their attempts ($2), with their code hashes as
// hashSpans gives them ($3, $4), and the checkEntry of each time ($5). It
// returns, as withDeliveries, the verifications it counted an attempt on.
var pgAttemptBatch = func() string {
	set, where := attemptSet(`COALESCE(code_hash = ANY (r.hashes), FALSE)`, "r.at", "r.entry")
	return `WITH r AS (SELECT r.vid, r.at, r.entry, ` + pgCallHashes + ` AS hashes
		FROM unnest($1::text[], $2::timestamptz[], $5::text[]) WITH ORDINALITY AS r(vid, at, entry, i)),
	v AS (UPDATE verifications SET ` + set + ` FROM r WHERE verifications.id = r.vid AND ` + where + `
		RETURNING verifications.*),
	p AS (DELETE FROM pending_steps WHERE verification_id IN (SELECT id FROM v WHERE NOT v.` + isOpen + `))
	` + withDeliveries("v", "", "")
}()

// pgAttemptBatchCounting is pgAttemptBatch with the counts of the
// attempts ($6 to $10, see pgCounts), applied for the verifications the
// statement verified.
var pgAttemptBatchCounting = func() string {
	i := strings.Index(pgAttemptBatch, "\n\t"+withDeliveries("v", "", ""))
	return pgAttemptBatch[:i] + `,
	` + pgCounts(6, `SELECT id FROM v WHERE status = 'verified'`) + pgAttemptBatch[i:]
}()

// counterArgs are pgCounterBatch's arguments for cs.
func counterArgs(cs []counterReq) []any {
	keys, nows := make([]string, len(cs)), make([]time.Time, len(cs))
	for i, c := range cs {
		keys[i], nows[i] = c.key, asStored(c.now)
	}
	return []any{keys, nows}
}

// pgCounterBatch is GetCounter's statement for arrays of keys ($1) and
// times ($2): for each key's counter that exists and has not expired by
// its time, the key's place in the array (from 1) and the counter.
const pgCounterBatch = `SELECT r.i, c.value, c.updated_at, c.expires_at, c.not_before
	FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS r(name, at, i)
	JOIN counters c ON c.name = r.name AND c.expires_at > r.at`

// counterBatch reads a batch of counters in one statement.
func (s *Store) counterBatch(ctx context.Context, batch []*combine.Call[counterReq, verify.Counter]) {
	one := func(ctx context.Context, c counterReq) (verify.Counter, error) {
		return s.getCounter(ctx, c.key, c.now)
	}
	if len(batch) == 1 {
		combine.EachAlone(ctx, batch, one)
		return
	}
	n := len(batch)
	err := s.pgBatch(ctx, pgCounterBatch, counterArgs(combine.Reqs(batch)), func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				i int
				c verify.Counter
			)
			if err := rows.Scan(counterDest(&c, &i)...); err != nil {
				return err
			}
			if i < 1 || i > n {
				return errors.New("sqlstore: get counters: a row for no key")
			}
			batch[i-1].Res = c
		}
		return nil
	})
	failed(s, ctx, batch, err, "get counter", one) // answers every call anew on an error
}

// takeBatch decides a batch of Takes in one transaction: it locks the
// counters of them all (in the order of their names, as every Take does),
// decides each call in turn on the counters as the calls before it left
// them, as if they ran one after another, and writes back every counter
// that changed in one statement. A call that is refused changes nothing.
func (s *Store) takeBatch(ctx context.Context, batch []*combine.Call[takeReq, verify.Taken]) {
	one := func(ctx context.Context, t takeReq) (verify.Taken, error) {
		return s.takeOne(ctx, t.keys, t.takes, t.now)
	}
	if len(batch) == 1 {
		combine.EachAlone(ctx, batch, one)
		return
	}
	var keys []string
	oldest := batch[0].Req.now
	for _, cl := range batch {
		keys = append(keys, cl.Req.keys...)
		if cl.Req.now.Before(oldest) {
			oldest = cl.Req.now
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	// A counter the lock creates expires at the earliest call's now, so
	// that every call finds it expired: the zero Counter.
	err := s.pgLocked(ctx, keys, oldest, func(cur map[string]verify.Counter) (string, []any) {
		changed := make(map[string]bool)
		for _, cl := range batch {
			res := decide(cur, cl.Req.takes, cl.Req.now)
			cl.Res = res
			if !res.OK {
				continue
			}
			for i, t := range cl.Req.takes {
				if t.Delta != 0 {
					cur[t.Key], changed[t.Key] = res.Counters[i], true
				}
			}
		}
		if len(changed) == 0 {
			return "", nil
		}
		names := slices.Sorted(maps.Keys(changed))
		counters := make([]verify.Counter, len(names))
		for i, n := range names {
			counters[i] = cur[n]
		}
		return pgWriteCounters, pgCounterArgs(names, counters)
	})
	failed(s, ctx, batch, err, "take counters", one)
}
