package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"modernc.org/sqlite"

	"github.com/openverify/verify/internal/combine"
)

// SQLite runs one writer at a time, and a commit is most of a write's
// cost (the WAL append, and the fsync when it is due). So on SQLite the
// Store commits many callers' writes together (group commit): a write
// (inTx's or write's fn) joins a queue, and the first caller to find no
// batch running leads: it lets the callers ready to run queue their writes
// (combine.Linger), takes the queue, runs the writes in one
// transaction, each write of several statements under a savepoint of its
// own, commits once, and answers every caller with its own outcome. A
// write that fails (a duplicate key, a refused take) is rolled back to its
// savepoint, or by SQLite itself for a write of one statement, and
// answered with its error, and the others commit. Every caller is answered only after the commit that holds
// its write, with the commit's error if it fails, so the durability is
// the store's (WAL with synchronous NORMAL) and no write is reported done
// before it is. When the leader has answered its batch it hands the lead
// to the first caller still waiting, so no caller runs more than the batch
// it joined. Nothing runs in the background.

// maxBatch is the most writes one transaction commits.
const maxBatch = 64

// batcher queues writes for group commit.
type batcher struct {
	mu    sync.Mutex
	queue []*batchOp
	busy  bool // a leader is running
	run   func(ops []*batchOp)
	// batches and writes count what ran, for tests.
	batches, writes atomic.Int64
}

// batchOp is one caller's write.
type batchOp struct {
	ctx context.Context
	fn  func(q querier) error
	// single is set for a write of one statement, which needs no savepoint
	// of its own: SQLite undoes a failed statement by itself and keeps the
	// transaction (see statementError).
	single bool
	err    error
	done   chan struct{} // closed when err is final
	lead   chan struct{} // closed when this caller is to lead the next batch
}

// do queues fn and returns its outcome once its batch has committed (or
// rolled back). A caller whose ctx ends while fn still waits in the queue
// takes it out and returns ctx's error: nothing of it ran. Once fn is in
// a running batch, the caller waits for the batch's outcome, which is
// fn's.
func (b *batcher) do(ctx context.Context, fn func(q querier) error, single bool) error {
	op := &batchOp{ctx: ctx, fn: fn, single: single, done: make(chan struct{}), lead: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, op)
	if !b.busy {
		b.busy = true
		b.mu.Unlock()
		b.leadBatch()
	} else {
		b.mu.Unlock()
	}
	lead, done := op.lead, ctx.Done()
	for {
		select {
		case <-op.done:
			return op.err
		case <-lead:
			lead = nil // a closed channel stays ready: lead once
			b.leadBatch()
		case <-done:
			b.mu.Lock()
			select {
			case <-op.lead: // designated to lead: lead, whatever ctx says
				b.mu.Unlock()
				done = nil
				continue
			default:
			}
			if i := slices.Index(b.queue, op); i >= 0 {
				b.queue = slices.Delete(b.queue, i, i+1)
				b.mu.Unlock()
				return ctx.Err()
			}
			b.mu.Unlock()
			<-op.done // in a running batch: its outcome is fn's
			return op.err
		}
	}
}

// leadBatch runs the writes queued now (up to maxBatch) as one batch, then
// hands the lead to the first write still queued, or ends the run.
func (b *batcher) leadBatch() {
	combine.Linger(func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.queue)
	})
	b.mu.Lock()
	n := min(len(b.queue), maxBatch)
	batch := slices.Clone(b.queue[:n])
	b.queue = slices.Delete(b.queue, 0, n)
	b.mu.Unlock()

	// Hand on the lead even if a write panics, so that the writes still
	// queued are not left waiting.
	defer func() {
		b.mu.Lock()
		if len(b.queue) == 0 {
			b.busy = false
		} else {
			close(b.queue[0].lead)
		}
		b.mu.Unlock()
	}()
	b.batches.Add(1)
	b.writes.Add(int64(len(batch)))
	b.run(batch)
}

// runBatch runs ops in one transaction, each under its own savepoint
// (none for a batch of one), and commits; it sets each op's err and closes
// its done.
//
// The wait for the connection ends when every op's context has: until
// BEGIN, nothing has run, and a caller whose deadline passes while another
// holds the connection gets its context's error. From BEGIN on, the
// transaction and its statements run without the callers' cancellation:
// on SQLite, interrupting a write inside a transaction rolls the whole
// transaction back, everyone's writes with it. (Waiting for another
// process's write lock is bounded by the busy timeout.) An op whose ctx
// has ended before its turn is skipped.
func (s *Store) runBatch(ops []*batchOp) {
	finished := false
	finish := func(err error) {
		finished = true
		for _, op := range ops {
			if err != nil && op.err == nil {
				op.err = err
			}
			close(op.done)
		}
	}
	var (
		conn *sql.Conn
		tx   *sql.Tx
	)
	defer func() {
		// The transaction ends before its connection goes back: closing
		// a connection waits for its transaction.
		if tx != nil {
			_ = tx.Rollback() // ErrTxDone once committed or rolled back
		}
		if conn != nil {
			conn.Close()
		}
		if r := recover(); r != nil {
			if !finished {
				for _, op := range ops {
					op.err = fmt.Errorf("sqlstore: a write in the same transaction panicked: %v", r)
				}
				finish(nil)
			}
			panic(r)
		}
	}()

	conn, err := s.batchConn(ops)
	if err != nil {
		for _, op := range ops {
			op.err = op.ctx.Err() // nil unless its caller gave up
		}
		finish(err)
		return
	}
	ctx := context.WithoutCancel(ops[0].ctx)
	if tx, err = conn.BeginTx(ctx, nil); err != nil {
		finish(err)
		return
	}
	var missed []string
	q := runner{s: s, tx: tx, missed: &missed, detached: true}
	savepoints := len(ops) > 1
	wrote := false // a write will be committed
	for _, op := range ops {
		if err := op.ctx.Err(); err != nil {
			op.err = err
			continue
		}
		savepoint := savepoints && !op.single
		if savepoint {
			if _, err := q.ExecContext(ctx, `SAVEPOINT w`); err != nil {
				_ = tx.Rollback()
				finish(err)
				return
			}
		}
		op.err = op.fn(q)
		switch {
		case op.err == nil && savepoint:
			_, err = q.ExecContext(ctx, `RELEASE w`)
			wrote = true
		case op.err == nil:
			wrote = true
		case savepoint:
			_, err = q.ExecContext(ctx, `ROLLBACK TO w`)
			if err == nil {
				_, err = q.ExecContext(ctx, `RELEASE w`)
			}
		case op.single && !statementError(op.err):
			// The statement may have changed the database before the
			// error, or SQLite may have rolled the transaction back:
			// nothing of the batch commits.
			err = op.err
		}
		if errors.Is(op.err, errRollback) {
			op.err = nil
		}
		if err != nil {
			// The transaction cannot go on: nothing of it commits, and
			// every write without an error of its own gets the one that
			// ended it: the op's, when it is one that makes SQLite roll
			// the whole transaction back (SQLITE_FULL, SQLITE_IOERR, ...,
			// the savepoint with it), else the savepoint statement's.
			_ = tx.Rollback()
			if op.err != nil && sqliteTransient(op.err) {
				err = op.err
			}
			finish(err)
			return
		}
	}
	if wrote {
		err = tx.Commit()
	} else {
		err = tx.Rollback()
	}
	if err != nil {
		// Writes that failed keep their own error; the rest get the
		// commit's.
		for _, op := range ops {
			if op.err == nil {
				op.err = err
			}
		}
	}
	finish(nil)
	// Prepare what the batch ran unprepared, for next time, once the
	// connection is back in the pool. A failure here only costs speed.
	if len(missed) > 0 {
		conn.Close()
		conn = nil
		for _, query := range missed {
			_, _ = s.prepared(ctx, query)
		}
	}
}

// statementError reports whether err, from a write of one statement,
// leaves the transaction as it was before the statement: sql.ErrNoRows
// (a conditional write that matched no row, and so changed nothing), or
// one of SQLite's errors that fail the statement alone (a constraint, a
// type mismatch, an error in the statement itself). Anything else may
// come after the statement changed the database (a Scan of what it
// returned) or may have rolled the whole transaction back (SQLITE_FULL,
// SQLITE_IOERR, SQLITE_NOMEM, SQLITE_BUSY, ...), and ends the batch.
func statementError(err error) bool {
	if errors.Is(err, sql.ErrNoRows) {
		return true
	}
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff { // the primary result code
	case 1, // SQLITE_ERROR
		18, // SQLITE_TOOBIG
		19, // SQLITE_CONSTRAINT
		20, // SQLITE_MISMATCH
		25: // SQLITE_RANGE
		return true
	}
	return false
}

// batchConn takes a connection for a batch from the pool, waiting until
// one is free or every op's context has ended.
func (s *Store) batchConn(ops []*batchOp) (*sql.Conn, error) {
	wait, cancel := context.WithCancel(context.WithoutCancel(ops[0].ctx))
	defer cancel()
	var left atomic.Int64
	left.Store(int64(len(ops)))
	for _, op := range ops {
		stop := context.AfterFunc(op.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	return s.db.Conn(wait)
}
