package sqlstore_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
	"github.com/openverify/verify/storetest"
)

func TestConformanceSQLiteFile(t *testing.T) {
	storetest.Run(t, func(t *testing.T) verify.Store {
		return open(t, "sqlite:"+filepath.Join(t.TempDir(), "verify.db"))
	})
}

// TestConformanceSQLiteMemory runs the suite on an in-memory database made
// with New rather than Open. A :memory: database lives and dies with its
// connection, so the pool must hold exactly one connection that is never
// closed while idle.
func TestConformanceSQLiteMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) verify.Store {
		st, _ := newMemorySQLite(t, ":memory:?_pragma=foreign_keys(1)")
		return st
	})
}

// newMemorySQLite returns a migrated Store that New made over an in-memory
// SQLite database opened with dsn, on one connection, and the database.
func newMemorySQLite(t *testing.T, dsn string) (*sqlstore.Store, *sql.DB) {
	t.Helper()
	db, err := sql.Open("sqlite", dsn)
	require.NoError(t, err)
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	st, err := sqlstore.New(db, sqlstore.SQLite)
	require.NoError(t, err)
	require.NoError(t, st.Migrate(context.Background()))
	return st, db
}

func TestConformancePostgres(t *testing.T) {
	postgresDSN(t)
	storetest.Run(t, func(t *testing.T) verify.Store {
		return open(t, freshSchema(t))
	})
}

// TestSQLiteDeferredTransactions: two Stores made with New over one SQLite
// file, whose connections begin transactions DEFERRED (the driver's
// default, not Open's IMMEDIATE), record deliveries and take counters at
// once without "database is locked": every write transaction writes before
// it reads, so SQLite's busy timeout applies instead of a failed lock
// upgrade.
func TestSQLiteDeferredTransactions(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "verify.db")
	stores := make([]*sqlstore.Store, 2)
	for i := range stores {
		db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=deferred")
		require.NoError(t, err)
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		st, err := sqlstore.New(db, sqlstore.SQLite)
		require.NoError(t, err)
		require.NoError(t, st.Migrate(ctx))
		stores[i] = st
	}
	const verifications = 100
	ids := make([]string, verifications)
	for i := range ids {
		ids[i] = fmt.Sprintf("v-%03d", i)
		require.NoError(t, stores[0].CreateVerification(ctx, verify.VerificationRecord{
			ID: ids[i], FlowID: "f", Status: verify.StatusPending, To: verify.Recipient{Phone: "+4712345678"},
			MaxAttempts: 5, CreatedAt: start, ExpiresAt: start.Add(time.Hour),
		}, []verify.PendingStep{{Step: 0, DueAt: start}}))
	}
	errs := make(chan error, 2*verifications)
	runConcurrently(2*verifications, func(i int) {
		id := ids[i/2]
		_, err := stores[i%2].RecordDelivery(ctx, verify.DeliveryRecord{ID: fmt.Sprintf("%s-%d", id, i%2), VerificationID: id,
			Step: i % 2, Channel: "sms", Status: verify.DeliverySent, CreatedAt: start, UpdatedAt: start})
		errs <- err
	})
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	var allowed atomic.Int32
	errs = make(chan error, 2*verifications)
	runConcurrently(2*verifications, func(i int) {
		res, err := stores[i%2].Take(ctx, start, []verify.Take{
			{Key: "rate", Delta: 1, Max: verifications, ExpiresAt: start.Add(time.Hour)},
			{Key: fmt.Sprintf("fail-%d", i%10), Delta: 1, Max: verify.NoLimit, ExpiresAt: start.Add(time.Hour)},
		})
		if res.OK {
			allowed.Add(1)
		}
		errs <- err
	})
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, int32(verifications), allowed.Load())

	// Takes of one counter, checks and counts mixed: each first runs the
	// count's upsert (a write first), then, when it did not count, the
	// transaction.
	// Ten counters, each taken 40 times from both stores, checks and
	// counts in turn, with a Max of 15: each ends at 15.
	errs = make(chan error, 4*verifications)
	runConcurrently(4*verifications, func(i int) {
		tk := verify.Take{Key: fmt.Sprintf("mix-%d", (i/2)%10), Delta: int64(i % 2), Max: 15, ExpiresAt: start.Add(time.Hour)}
		_, err := stores[(i/4)%2].Take(ctx, start, []verify.Take{tk})
		errs <- err
	})
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for k := range 10 {
		c, err := stores[0].GetCounter(ctx, fmt.Sprintf("mix-%d", k), start)
		require.NoError(t, err)
		require.Equal(t, int64(15), c.Value, "mix-%d", k)
	}
}
