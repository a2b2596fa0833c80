package sqlstore

import (
	"context"
	"strings"
	"time"

	"github.com/openverify/verify"
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
	out["attempt"] = ReportQuery{cond(attemptUpdates[1]), []any{id, t, []byte("0123456789abcdef0123456789abcdef")}}
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
