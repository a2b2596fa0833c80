package sqlstore

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/combine"
)

// ReportQuery is one SQL statement with its arguments.
type ReportQuery struct {
	SQL  string
	Args []any
}

// ReportQueries returns the statements ListVerifications (its first page)
// and Stats run for q, by name, for the query-plan tests.
func (s *Store) ReportQueries(q verify.Query) map[string]ReportQuery {
	list, args := s.listQuery(q, verify.Cursor{}, 51)
	next, nextArgs := s.listQuery(q, verify.Cursor{CreatedAt: q.From, ID: "x"}, 51)
	out := map[string]ReportQuery{
		"list":      {list, args},
		"list-next": {next, nextArgs},
	}
	if s.pg() {
		sq := s.pgStatsQueries(q)
		out["stats-statuses"] = ReportQuery{sq.statuses, sq.args}
		out["stats-channels"] = ReportQuery{sq.channels, sq.args}
		out["stats-medians"] = ReportQuery{sq.medians, sq.args}
		return out
	}
	f := s.filter(q)
	out["stats-summaries"] = ReportQuery{sqliteSummaries(f), f.args}
	medians, margs := sqliteMedians(f, &verify.Stats{Flows: map[string]verify.FlowStats{"f": {Verified: 1}}})
	out["stats-medians"] = ReportQuery{medians, margs}
	return out
}

// SummarizeDeliveries sets every verification's delivery summary from its
// deliveries on SQLite, as RecordDelivery keeps it, for fixtures inserted
// straight into the tables.
func (s *Store) SummarizeDeliveries(ctx context.Context) error {
	if s.pg() {
		return nil
	}
	_, err := s.db.ExecContext(ctx, `UPDATE verifications SET delivery_summary = `+
		strings.ReplaceAll(deliverySummary, "$1", "verifications.id"))
	return err
}

// MigrateTo applies the migrations up to version only, as a release that
// knew no later ones would, for the tests of a later migration.
func (s *Store) MigrateTo(ctx context.Context, version int) error {
	ms, err := loadMigrations(s.dialect)
	if err != nil {
		return err
	}
	var upTo []migration
	for _, m := range ms {
		if m.version <= version {
			upTo = append(upTo, m)
		}
	}
	if s.pg() {
		return s.migratePostgres(ctx, upTo)
	}
	return s.migrateSQLite(ctx, upTo)
}

// HotQueries returns the statements a Send and a Check run on every call,
// with sample arguments, by name, for the query-plan tests on loaded
// tables: the verification's read, the recipient's open verifications,
// the attempt, a counted send and an ending. (A counter's take is an
// upsert, which finds its row through the primary key whatever the plan.)
func (s *Store) HotQueries(id string, now time.Time) map[string]ReportQuery {
	t := s.tv(now)
	cond := func(c conditional) string {
		if s.pg() {
			return c.pg
		}
		return c.sqlite
	}
	out := map[string]ReportQuery{
		"get":        {getVerificationQuery, []any{id}},
		"find-open":  {findOpenQuery, []any{"flow", "+4740000001", "", t}},
		"count-send": {cond(countSendUpdate), []any{id, t, 5, true, t}},
		"finish":     {cond(finishUpdate), []any{id, t, "canceled"}},
	}
	out["attempt"] = ReportQuery{cond(attemptUpdates[1]), []any{id, t, "1764150000123456", []byte("0123456789abcdef0123456789abcdef")}}
	return out
}

// GroupCommits returns how many batches the SQLite group commit has run,
// and how many writes they held; ok is false for a Store without group
// commit (PostgreSQL).
func (s *Store) GroupCommits() (batches, writes int64, ok bool) {
	if s.batch == nil {
		return 0, 0, false
	}
	return s.batch.batches.Load(), s.batch.writes.Load(), true
}

// Write runs fn as one write: on SQLite in a group commit.
func (s *Store) Write(ctx context.Context, fn func(exec func(query string, args ...any) error) error) error {
	return s.inTx(ctx, func(q querier) error {
		return fn(func(query string, args ...any) error {
			_, err := q.ExecContext(ctx, query, args...)
			return err
		})
	})
}

// WriteOne runs fn as a write of one statement: on SQLite in a group
// commit, without a savepoint of its own.
func (s *Store) WriteOne(ctx context.Context, fn func(exec func(query string, args ...any) error) error) error {
	return s.write(ctx, func(q querier) error {
		return fn(func(query string, args ...any) error {
			_, err := q.ExecContext(ctx, query, args...)
			return err
		})
	})
}

// PGWriteCounters is PostgreSQL's write-back of a Take's counters.
var PGWriteCounters = pgWriteCounters

// BatchQueries returns PostgreSQL's batched statements (see pgbatch.go),
// with arguments for a batch of the verifications ids (at least two) at
// now, by name, for the query-plan tests; and pgProbesOnly, which runs
// before each in its transaction.
func (s *Store) BatchQueries(ids []string, now time.Time) (map[string]ReportQuery, string) {
	var (
		vs     []newVerification
		ds     []verify.DeliveryRecord
		as     []attemptReq
		cs     []counterReq
		rights []rightReq
	)
	for i, id := range ids {
		v := verify.VerificationRecord{ID: id, FlowID: "flow", Status: verify.StatusPending,
			To: verify.Recipient{Phone: "+4740000001"}, CodeHash: []byte("0123456789abcdef0123456789abcdef"),
			CreatedAt: now, ExpiresAt: now.Add(5 * time.Minute), MaxAttempts: 5}
		vs = append(vs, newVerification{v, []verify.PendingStep{{Step: 0, DueAt: now, LeaseUntil: now.Add(time.Minute)}}, verify.Guard{}, nil})
		ds = append(ds, verify.DeliveryRecord{ID: id + "-d", VerificationID: id, Status: verify.DeliverySent,
			Channel: "sms", CreatedAt: now, UpdatedAt: now})
		rights = append(rights, rightReq{id, [][]byte{[]byte("0123456789abcdef0123456789abcdef")}, now, verify.Guard{Key: "fail:+4740000" + strconv.Itoa(i), Max: 5}, nil})
		as = append(as, attemptReq{id, [][]byte{[]byte("0123456789abcdef0123456789abcdef")}, now, nil})
		cs = append(cs, counterReq{"recipient:+4740000" + strconv.Itoa(i), now})
	}
	create, err := createArgs(vs)
	if err != nil {
		panic(err)
	}
	guarded := slices.Clone(vs)
	for i := range guarded {
		guarded[i].guard = verify.Guard{Key: "block:+4740" + strconv.Itoa(i), Max: 1}
	}
	limitedVs := slices.Clone(vs)
	for i := range limitedVs {
		limitedVs[i].counts = []verify.Count{{Key: "conv:sent:+4740:" + limitedVs[i].v.ID, Delta: 1, ExpiresAt: now.Add(time.Hour)},
			{Key: "rate:+4740:" + limitedVs[i].v.ID, Delta: 1, ExpiresAt: now.Add(time.Hour), Limit: 5}}
	}
	args := func(a []any, _ bool) []any { return a }
	return map[string]ReportQuery{
		"create":   {pgCreateBatch, create},
		"delivery": {pgDeliveryBatch, deliveryArgs(ds)},
		"attempt":  {pgAttemptBatch, attemptArgs(as)},
		"counters": {pgCounterBatch, counterArgs(cs)},
		"create_counting": {pgCreateBatchCounting, append(append(create, args(countArgs(vs, func(nv newVerification) (string, time.Time, []verify.Count) {
			return nv.v.ID, nv.v.CreatedAt, []verify.Count{{Key: "conv:sent:+4740:" + nv.v.ID, Delta: 1, ExpiresAt: now.Add(time.Hour)}}
		}))...), guardArgs(guarded)...)},
		"create_limited": {pgCreateBatchLimited, append(append(append(create, args(countArgs(limitedVs, func(nv newVerification) (string, time.Time, []verify.Count) {
			return nv.v.ID, nv.v.CreatedAt, nv.counts
		}))...), guardArgs(guarded)...), limitArgs(limitedVs))},
		"right": {pgRightBatch, rightArgs(rights)},
		"right_counting": {pgRightBatchCounting, append(rightArgs(rights), args(countArgs(rights, func(r rightReq) (string, time.Time, []verify.Count) {
			return r.id, r.now, []verify.Count{{Key: "conv:ok:+4740:" + r.id, Delta: 1, ExpiresAt: now.Add(time.Hour)}}
		}))...)},
		"attempt_counting": {pgAttemptBatchCounting, append(attemptArgs(as), args(countArgs(as, func(a attemptReq) (string, time.Time, []verify.Count) {
			return a.id, a.now, []verify.Count{{Key: "conv:ok:+4740:" + a.id, Delta: 1, ExpiresAt: now.Add(time.Hour)}}
		}))...)},
	}, pgProbesOnly
}

// Batched runs calls as one batch of PostgreSQL's combined statements, as
// concurrent callers' calls would be, and returns each call's answer; it
// is the batch's only user while it runs.
type Batched struct{ s *Store }

// Batched returns the Store's batches; nil on SQLite.
func (s *Store) Batched() *Batched {
	if s.pgBatches == nil {
		return nil
	}
	return &Batched{s}
}

func runBatch[Req, Res any](ctx context.Context, run func(context.Context, []*combine.Call[Req, Res]), rs []Req) ([]Res, []error) {
	batch := make([]*combine.Call[Req, Res], len(rs))
	for i, r := range rs {
		batch[i] = &combine.Call[Req, Res]{Ctx: ctx, Req: r}
	}
	// Answers in the order of rs, whatever order run leaves the batch in.
	order := slices.Clone(batch)
	run(ctx, batch)
	res, errs := make([]Res, len(rs)), make([]error, len(rs))
	for i, cl := range order {
		res[i], errs[i] = cl.Res, cl.Err
	}
	return res, errs
}

// Create stores verifications, each with its steps, in one batch.
func (b *Batched) Create(ctx context.Context, vs []verify.VerificationRecord, steps [][]verify.PendingStep) []error {
	_, errs := b.CreateCounting(ctx, vs, steps, make([]verify.Guard, len(vs)), make([][]verify.Count, len(vs)))
	return errs
}

// CreateCounting stores verifications, each with its steps, guard and
// counts, in one batch, and returns each call's counters.
func (b *Batched) CreateCounting(ctx context.Context, vs []verify.VerificationRecord, steps [][]verify.PendingStep, guards []verify.Guard, counts [][]verify.Count) ([][]verify.Counter, []error) {
	rs := make([]newVerification, len(vs))
	for i, v := range vs {
		rs[i] = newVerification{v, steps[i], guards[i], counts[i]}
	}
	return runBatch(ctx, b.s.createBatch, rs)
}

// RecordDeliveries records deliveries in one batch.
func (b *Batched) RecordDeliveries(ctx context.Context, ds []verify.DeliveryRecord) ([]bool, []error) {
	return runBatch(ctx, b.s.deliveryBatch, ds)
}

// Attempt is one attempt of a batch.
type Attempt struct {
	ID     string
	Hashes [][]byte
	Now    time.Time
	Counts []verify.Count // applied if the attempt verifies
}

// Attempts counts attempts in one batch.
func (b *Batched) Attempts(ctx context.Context, as []Attempt) ([]verify.VerificationRecord, []bool, []error) {
	rs := make([]attemptReq, len(as))
	for i, a := range as {
		rs[i] = attemptReq{a.ID, a.Hashes, a.Now, a.Counts}
	}
	res, errs := runBatch(ctx, b.s.attemptBatch, rs)
	recs, counted := make([]verify.VerificationRecord, len(res)), make([]bool, len(res))
	for i, r := range res {
		recs[i], counted[i] = r.rec, r.counted
	}
	return recs, counted, errs
}

// Right is one AttemptRight call of a batch.
type Right struct {
	ID     string
	Hashes [][]byte
	Now    time.Time
	Guard  verify.Guard
	Counts []verify.Count
}

// RightAnswer is a Right call's answer.
type RightAnswer struct {
	Rec      verify.VerificationRecord
	Verified bool
	Failures verify.Counter
}

// Rights runs AttemptRight calls in one batch.
func (b *Batched) Rights(ctx context.Context, rs []Right) ([]RightAnswer, []error) {
	reqs := make([]rightReq, len(rs))
	for i, r := range rs {
		reqs[i] = rightReq{r.ID, r.Hashes, r.Now, r.Guard, r.Counts}
	}
	res, errs := runBatch(ctx, b.s.rightBatch, reqs)
	out := make([]RightAnswer, len(res))
	for i, r := range res {
		out[i] = RightAnswer{r.rec, r.verified, r.failures}
	}
	return out, errs
}

// Counters reads counters, each at its time, in one batch.
func (b *Batched) Counters(ctx context.Context, keys []string, nows []time.Time) ([]verify.Counter, []error) {
	rs := make([]counterReq, len(keys))
	for i, k := range keys {
		rs[i] = counterReq{k, nows[i]}
	}
	return runBatch(ctx, b.s.counterBatch, rs)
}

// Takes runs Takes that count, each at its time, in one batch.
func (b *Batched) Takes(ctx context.Context, nows []time.Time, takes [][]verify.Take) ([]verify.Taken, []error) {
	rs := make([]takeReq, len(takes))
	for i, ts := range takes {
		keys := make([]string, len(ts))
		for j, t := range ts {
			keys[j] = t.Key
		}
		slices.Sort(keys)
		rs[i] = takeReq{keys, ts, nows[i]}
	}
	return runBatch(ctx, b.s.takeBatch, rs)
}

// LockedCreates returns how many batched creations with Limits were
// decided under the counters' locks.
func (s *Store) LockedCreates() int64 {
	if s.pgBatches == nil {
		return 0
	}
	return s.pgBatches.locked.Load()
}

// LockNextCreates makes the next n batched creations with Limits go
// straight to the locking transaction.
func (s *Store) LockNextCreates(n int64) { s.pgBatches.locking.Store(n) }

// RunAlone returns how many batched statements failed and had their calls
// run again one at a time.
func (s *Store) RunAlone() int64 {
	if s.pgBatches == nil {
		return 0
	}
	return s.pgBatches.alone.Load()
}

// Combined returns how many batches PostgreSQL's combiners have run, and
// how many calls they held.
func (s *Store) Combined() (batches, calls int64) {
	if s.pgBatches == nil {
		return 0, 0
	}
	b := s.pgBatches
	for _, c := range []interface{ Counts() (int64, int64) }{&b.create, &b.deliveries, &b.attempts, &b.rights, &b.counters, &b.takes} {
		n, m := c.Counts()
		batches, calls = batches+n, calls+m
	}
	return batches, calls
}

// CountOne is countOne, Take's first statement for one counter.
func (s *Store) CountOne(ctx context.Context, t verify.Take, now time.Time) (counted bool, err error) {
	_, counted, err = s.countOne(ctx, t, now)
	return counted, err
}
