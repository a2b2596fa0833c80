package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
)

// gcRecord is a verification for the group-commit tests.
func gcRecord(id string) verify.VerificationRecord {
	return verify.VerificationRecord{ID: id, FlowID: "f", Status: verify.StatusPending,
		To: verify.Recipient{Phone: "+4712345678"}, MaxAttempts: 5, CreatedAt: start, ExpiresAt: start.Add(time.Hour)}
}

// TestGroupCommit releases 64 writers at once on a SQLite file: a quarter
// of them create a verification with an idempotency key already taken
// (ErrDuplicate, as a retried Send meets it), half of them with pending
// steps (a write of several statements, under a savepoint) and half
// without (one statement, without one), and a quarter take a counter past
// its limit (a refusal that rolls back). The writes commit in
// fewer transactions than there are writers; each refused write gets its
// own answer and leaves nothing behind; every other write is in the file,
// as a second Store on it (another connection) reads it.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "verify.db")
	st := open(t, "sqlite:"+path)
	taken := gcRecord("taken")
	taken.IdempotencyKey = "key"
	require.NoError(t, st.CreateVerification(ctx, taken, nil))

	const n = 64
	var created, duplicates, counted, refused atomic.Int64
	// A write holds the lead while the writers queue behind it, so that
	// on a loaded machine too they share commits.
	hold, holding, held := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		held <- st.Write(ctx, func(func(string, ...any) error) error {
			close(holding)
			<-hold
			return nil
		})
	}()
	<-holding
	time.AfterFunc(50*time.Millisecond, func() { close(hold) })
	runConcurrently(n, func(i int) {
		switch i % 4 {
		case 0: // a taken idempotency key
			dup := gcRecord(fmt.Sprintf("v-%02d", i))
			dup.IdempotencyKey = "key"
			var steps []verify.PendingStep
			if i%8 == 0 {
				steps = []verify.PendingStep{{Step: 0, DueAt: start}}
			}
			err := st.CreateVerification(ctx, dup, steps)
			if errors.Is(err, verify.ErrDuplicate) {
				duplicates.Add(1)
			} else {
				t.Errorf("creating with a taken key: %v", err)
			}
		case 1:
			require.NoError(t, st.CreateVerification(ctx, gcRecord(fmt.Sprintf("v-%02d", i)),
				[]verify.PendingStep{{Step: 0, DueAt: start}}))
			created.Add(1)
		case 2: // one statement
			require.NoError(t, st.CreateVerification(ctx, gcRecord(fmt.Sprintf("v-%02d", i)), nil))
			created.Add(1)
		case 3: // eight of sixteen takes fit under Max 8
			res, err := st.Take(ctx, start, []verify.Take{
				{Key: "limit", Delta: 1, Max: 8, ExpiresAt: start.Add(time.Hour)},
				{Key: fmt.Sprintf("own-%02d", i), Delta: 1, Max: verify.NoLimit, ExpiresAt: start.Add(time.Hour)},
			})
			require.NoError(t, err)
			if res.OK {
				counted.Add(1)
			} else {
				refused.Add(1)
			}
		}
	})
	require.NoError(t, <-held)
	assert.Equal(t, int64(16), duplicates.Load())
	assert.Equal(t, int64(32), created.Load())
	assert.Equal(t, int64(8), counted.Load(), "the limit holds across one transaction's writes")
	assert.Equal(t, int64(8), refused.Load())
	batches, writes, ok := st.GroupCommits()
	require.True(t, ok)
	assert.Less(t, batches, writes, "writes share commits")
	t.Logf("%d writes in %d batches", writes, batches)

	other := open(t, "sqlite:"+path)
	for i := range n {
		id := fmt.Sprintf("v-%02d", i)
		_, err := other.GetVerification(ctx, id)
		if i%4 == 1 || i%4 == 2 {
			assert.NoError(t, err, id)
		} else {
			assert.ErrorIs(t, err, verify.ErrNotFound, id)
		}
	}
	c, err := other.GetCounter(ctx, "limit", start)
	require.NoError(t, err)
	assert.Equal(t, int64(8), c.Value)
	for i := 3; i < n; i += 4 {
		c, err := other.GetCounter(ctx, fmt.Sprintf("own-%02d", i), start)
		require.NoError(t, err)
		assert.LessOrEqual(t, c.Value, int64(1), "a refused take rolls back its other counters")
	}
	var pending int
	require.NoError(t, other.DB().QueryRowContext(ctx, `SELECT count(*) FROM pending_steps`).Scan(&pending))
	assert.Equal(t, 16, pending, "the duplicates' steps were rolled back with them")
}

// TestGroupCommitCanceledWriter: a writer whose context has ended before
// its turn gets the context's error, and nothing of its write is stored.
func TestGroupCommitCanceledWriter(t *testing.T) {
	ctx := context.Background()
	st := open(t, "sqlite:"+filepath.Join(t.TempDir(), "verify.db"))
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	err := st.CreateVerification(canceled, gcRecord("v"), nil)
	assert.ErrorIs(t, err, context.Canceled)
	_, err = st.GetVerification(ctx, "v")
	assert.ErrorIs(t, err, verify.ErrNotFound)

	// Among others that go on, too.
	var stored atomic.Int64
	runConcurrently(32, func(i int) {
		c := ctx
		if i%2 == 0 {
			c = canceled
		}
		if err := st.CreateVerification(c, gcRecord(fmt.Sprintf("w-%02d", i)), nil); err == nil {
			stored.Add(1)
		} else {
			assert.ErrorIs(t, err, context.Canceled)
		}
	})
	assert.Equal(t, int64(16), stored.Load())
	for i := range 32 {
		_, err := st.GetVerification(ctx, fmt.Sprintf("w-%02d", i))
		if i%2 == 0 {
			assert.ErrorIs(t, err, verify.ErrNotFound)
		} else {
			assert.NoError(t, err)
		}
	}
}

// TestGroupCommitOnlySQLite: PostgreSQL runs its writes as they come.
func TestGroupCommitOnlySQLite(t *testing.T) {
	st := open(t, freshSchema(t))
	require.Equal(t, sqlstore.Postgres, st.Dialect())
	require.NoError(t, st.CreateVerification(context.Background(), gcRecord("v"), nil))
	_, _, ok := st.GroupCommits()
	assert.False(t, ok, "no group commit on PostgreSQL")
}

// TestGroupCommitDatabaseFull fills a SQLite file capped at some pages
// with concurrent writers, half of them writes of one statement (no
// savepoint): some fit, the rest fail (SQLITE_FULL, which rolls back the
// whole transaction, other writers' writes too: transient, E926 to the
// engine). Every writer told nil is in the file, and none told an error
// is.
func TestGroupCommitDatabaseFull(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "verify.db")
	st := open(t, "sqlite:"+path)
	var pages int
	require.NoError(t, st.DB().QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages))
	st.Close()
	// Room for one full batch of these writes at least (64 of about 1.5
	// KB, with their index entries), but not for all of them.
	st = open(t, fmt.Sprintf("sqlite:%s?_pragma=max_page_count(%d)", path, pages+60))

	const n = 1000
	ok := make([]bool, n)
	var failed atomic.Int64
	runConcurrently(n, func(i int) {
		v := gcRecord(fmt.Sprintf("v-%03d-%s", i, strings.Repeat("x", 200)))
		v.ForeignID = strings.Repeat("f", 500)
		var steps []verify.PendingStep
		if i%2 == 0 {
			steps = []verify.PendingStep{{Step: 0, DueAt: start}}
		}
		err := st.CreateVerification(ctx, v, steps)
		if err == nil {
			ok[i] = true
			return
		}
		failed.Add(1)
		assert.True(t, verify.IsTransient(err), "a full database is worth a retry (E926): %v", err)
	})
	t.Logf("%d of %d writes failed", failed.Load(), n)
	require.Positive(t, failed.Load(), "the cap is reached")
	require.Less(t, failed.Load(), int64(n), "some writes fit")

	other := open(t, "sqlite:"+path)
	for i := range n {
		_, err := other.GetVerification(ctx, fmt.Sprintf("v-%03d-%s", i, strings.Repeat("x", 200)))
		if ok[i] {
			assert.NoError(t, err, "writer %d was told its write is stored", i)
		} else {
			assert.ErrorIs(t, err, verify.ErrNotFound, "writer %d was told its write failed", i)
		}
	}
}

// TestGroupCommitGivesUpWaiting: a writer whose deadline passes while the
// connection is busy (here, held by a read that stays open until the
// writer has answered) gets its context's error, and nothing of its write
// is stored; it does not wait for the connection.
func TestGroupCommitGivesUpWaiting(t *testing.T) {
	ctx := context.Background()
	st := open(t, "sqlite:"+filepath.Join(t.TempDir(), "verify.db"))
	require.NoError(t, st.CreateVerification(ctx, gcRecord("held"), nil))
	rows, err := st.DB().QueryContext(ctx, `SELECT id FROM verifications`)
	require.NoError(t, err)

	answered := make(chan error, 1)
	go func() {
		c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		answered <- st.CreateVerification(c, gcRecord("late"), nil)
	}()
	select {
	case err := <-answered:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(30 * time.Second):
		t.Fatal("the writer still waits for the connection after its deadline")
	}
	require.NoError(t, rows.Close())
	_, err = st.GetVerification(ctx, "late")
	assert.ErrorIs(t, err, verify.ErrNotFound)
	require.NoError(t, st.CreateVerification(ctx, gcRecord("next"), nil), "the next write goes through")
}

// TestGroupCommitSurvivesAPanic: a write that panics in a batch takes
// down the goroutine running the batch, as a panic does, but the other
// writers of the batch are answered (and none of their writes stored),
// and the writes after it go through.
func TestGroupCommitSurvivesAPanic(t *testing.T) {
	ctx := context.Background()
	st := open(t, "sqlite:"+filepath.Join(t.TempDir(), "verify.db"))
	var panics, stored, failed atomic.Int64
	runConcurrently(32, func(i int) {
		defer func() {
			if r := recover(); r != nil {
				panics.Add(1)
			}
		}()
		err := st.Write(ctx, func(exec func(string, ...any) error) error {
			if i == 7 {
				panic("a bug in a write")
			}
			return exec(`INSERT INTO counters (name, value, updated_at, expires_at) VALUES ($1, 1, 0, 0)`, fmt.Sprint(i))
		})
		if err == nil {
			stored.Add(1)
		} else {
			failed.Add(1)
			assert.Contains(t, err.Error(), "panicked")
		}
	})
	assert.Equal(t, int64(1), panics.Load(), "one goroutine ran the panicking batch")
	var n int64
	require.NoError(t, st.DB().QueryRowContext(ctx, `SELECT count(*) FROM counters`).Scan(&n))
	assert.Equal(t, stored.Load(), n, "the writes told nil are stored, and only those")
	require.NoError(t, st.Write(ctx, func(exec func(string, ...any) error) error {
		return exec(`INSERT INTO counters (name, value, updated_at, expires_at) VALUES ('after', 1, 0, 0)`)
	}), "the next write goes through")
}

// TestRecordDeliveryWithoutForeignKeys: on a SQLite database handed to New
// with foreign keys off, a delivery for a verification that does not
// exist is still refused (ErrNotFound) and leaves no row behind.
func TestRecordDeliveryWithoutForeignKeys(t *testing.T) {
	ctx := context.Background()
	st, db := newMemorySQLite(t, ":memory:") // foreign keys off
	_, err := st.RecordDelivery(ctx, verify.DeliveryRecord{ID: "d1", VerificationID: "nobody", Step: 0, Channel: "sms",
		Status: verify.DeliverySent, CreatedAt: start, UpdatedAt: start})
	require.ErrorIs(t, err, verify.ErrNotFound)
	var n int
	require.NoError(t, db.QueryRowContext(ctx, `SELECT count(*) FROM deliveries`).Scan(&n))
	assert.Zero(t, n, "no delivery without its verification")

	require.NoError(t, st.CreateVerification(ctx, gcRecord("v1"), []verify.PendingStep{{Step: 0, DueAt: start}}))
	changed, err := st.RecordDelivery(ctx, verify.DeliveryRecord{ID: "d2", VerificationID: "v1", Step: 0, Channel: "sms",
		Status: verify.DeliverySent, CreatedAt: start, UpdatedAt: start})
	require.NoError(t, err)
	assert.True(t, changed)
	v, err := st.GetVerification(ctx, "v1")
	require.NoError(t, err)
	assert.Equal(t, verify.StatusSent, v.Status)
	require.Len(t, v.Deliveries, 1)
}

// TestGroupCommitWriteOfOneStatementFailsAfterIt: a write of one statement
// (no savepoint) that fails after its statement ran, as a Scan of what an
// UPDATE ... RETURNING returned can, commits nothing: every writer told
// nil has its row in the file, and no writer told an error has.
func TestGroupCommitWriteOfOneStatementFailsAfterIt(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "verify.db")
	st := open(t, "sqlite:"+path)
	_, err := st.DB().ExecContext(ctx, `CREATE TABLE gc_one (n INTEGER PRIMARY KEY)`)
	require.NoError(t, err)
	const n = 64
	failure := errors.New("failed after its statement")
	errs := make([]error, n)
	runConcurrently(n, func(i int) {
		errs[i] = st.WriteOne(ctx, func(exec func(string, ...any) error) error {
			if err := exec(`INSERT INTO gc_one (n) VALUES ($1)`, i); err != nil {
				return err
			}
			if i%2 == 1 {
				return failure
			}
			return nil
		})
	})
	other := open(t, "sqlite:"+path)
	for i := range n {
		var count int
		require.NoError(t, other.DB().QueryRowContext(ctx, `SELECT count(*) FROM gc_one WHERE n = $1`, i).Scan(&count))
		if errs[i] == nil {
			assert.Equal(t, 1, count, "writer %d was told its write is stored", i)
		} else {
			assert.Zero(t, count, "writer %d was told its write failed: %v", i, errs[i])
		}
		if i%2 == 1 {
			assert.ErrorIs(t, errs[i], failure, "writer %d gets its own failure", i)
		}
	}
}
