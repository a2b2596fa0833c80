package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"os"
	"strconv"
	"sync/atomic"

	"modernc.org/sqlite"
)

// Checkpoints: keeping the write-ahead log of a SQLite file bounded.
//
// Left to itself, SQLite checkpoints after a commit that leaves 1,000 pages
// or more (about 4 MB) in the WAL: a PASSIVE checkpoint, which copies back
// into the database what it can and never waits. The WAL file is reused from
// its beginning, rather than appended to, only by a writer that finds every
// frame copied back and no connection, in any process, still reading from
// the log. That fails in two ways:
//
//   - Several processes, or readers on connections of their own, can keep
//     the log in use all the time: then it is never started over and grows
//     with every commit (by about 90 KB per Send and Check: to 440 MB in
//     4 s of two processes' load, see TestWALBoundedAcrossProcesses), and
//     nothing shrinks the file. Past 1,000 pages every commit of every
//     process also runs a checkpoint, with its fsyncs, so that these hold
//     the checkpoint lock nearly all the time, and a stronger checkpoint
//     run now and then rarely gets it.
//   - SQLite runs its checkpoint from the WAL hook, which sqlite3_step calls
//     only for a statement that runs to its end. A statement whose rows are
//     closed after the first, as QueryRow does with an INSERT or UPDATE ...
//     RETURNING, commits in sqlite3_reset and never calls it. Counters.Take
//     commits that way, and BenchmarkTake alone grew the log of one process
//     past 250 MB.
//
// So Open turns SQLite's automatic checkpoints off (wal_autocheckpoint 0),
// and the Store runs them. The driver calls a commit hook on every commit,
// however it ends; every few commits the hook looks at the size of the -wal
// file and, once that is over walLimit, wakes a goroutine the Store owns,
// which runs PRAGMA wal_checkpoint(RESTART) on a connection of the pool.
// That checkpoint takes the write lock; copies the whole log back; and waits
// for the readers still using it to finish (readers that start meanwhile
// read the database file and do not hold it up), so that the next writer,
// in whichever process, starts the log over. RESTART leaves the file to be
// overwritten from its beginning, as SQLite's own checkpoints do, which
// costs less than extending it again (TRUNCATE every time cost one process
// about 15 % of its Send and Check pairs a second). But the file never
// shrinks, and each round can leave it a little larger (by the commits made
// between the hook's look and the checkpoint), so the next checkpoint waits
// until it grows past its size, and once it is over twice walLimit, the
// checkpoint is TRUNCATE, which empties it. With one process the Store
// checkpoints about as often as SQLite did; with several, its checkpoints
// cannot be starved.
//
// The checkpoint's waits, for the write lock and for readers, last at most
// walWait rather than the busy timeout, and it first takes the write lock for
// a moment on its own. If that fails, another process is writing, most
// likely through a run of transactions (SQLite's busy handler polls, so one
// process often keeps the lock for a while): its Store is better placed to
// checkpoint, after its next commit, and this checkpoint, which would hold
// the checkpoint lock while it waited for the write lock, would only keep
// that Store from doing so. This Store tries again a few commits later, as
// it does when another connection is checkpointing, or when readers held its
// checkpoint off for walWait once (with many readers on connections of their
// own, SQLite's few reader slots can keep one from emptying for that long).
// After the second in a row, it waits until the file has doubled (or has
// been emptied), so that a reader that holds on for long (a backup, say)
// stalls writers a few times rather than every few commits.
//
// This is driven by commits and the size of the file; the clock only bounds
// the waits. A DSN that sets wal_autocheckpoint gets SQLite's checkpoints as
// it says, and the Store runs none: _pragma=wal_autocheckpoint(0) is for an
// application, or a tool such as Litestream, that runs its own.

// walLimit is the size of the -wal file, in bytes, past which the Store
// checkpoints: that of SQLite's 1,000 pages of 4 KiB.
const walLimit = 4 << 20

// walCheckEvery is how many commits the Store makes between looks at the
// size of the -wal file.
const walCheckEvery = 8

// walWait is how long, in milliseconds, the Store's checkpoints wait for the
// write lock and for readers to leave the log.
const walWait = 500

// walKeeper runs the checkpoints of a SQLite file; see above.
type walKeeper struct {
	wal string // the -wal file; set before next is first stored
	// next is the size of the -wal file past which the next checkpoint is
	// due; 0 until start has found a file in WAL mode.
	next    atomic.Int64
	commits atomic.Uint64
	due     chan struct{} // a checkpoint is due; one deep
	cancel  context.CancelFunc
	done    chan struct{} // closed when run returns
}

func newWALKeeper() *walKeeper {
	return &walKeeper{due: make(chan struct{}, 1)}
}

// committed is the commit hook of the Store's connections. SQLite calls it
// in the middle of each commit, before the commit writes, so it does no
// more than look at the size of the -wal file (as the commits before left
// it), on every walCheckEvery-th commit, and wake run if a checkpoint is
// due. Waking run after every commit added more than half to the time of a
// small commit, and looking at the file every time about 5 %.
func (w *walKeeper) committed() int32 {
	next := w.next.Load()
	if next == 0 || w.commits.Add(1)%walCheckEvery != 0 {
		return 0
	}
	switch size := fileSize(w.wal); {
	case size > next:
		select {
		case w.due <- struct{}{}:
		default:
		}
	case size <= walLimit && next != walLimit:
		w.next.Store(walLimit) // emptied, or cut back, since
	}
	return 0 // let the commit go ahead
}

// commitHooks makes each connection modernc.org/sqlite opens call hook
// on every commit.
type commitHooks struct {
	driver.Connector
	hook sqlite.CommitHookFn
}

// Connect opens a connection and sets its commit hook.
func (c commitHooks) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	h, ok := conn.(interface{ RegisterCommitHook(sqlite.CommitHookFn) })
	if !ok {
		conn.Close()
		return nil, errors.New("sqlstore: the sqlite driver's connections have no commit hook")
	}
	h.RegisterCommitHook(c.hook)
	return conn, nil
}

// openSQLite opens a pool on dsn (a modernc.org/sqlite DSN) whose
// connections tell w about their commits.
func openSQLite(dsn string, w *walKeeper) (*sql.DB, error) {
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(commitHooks{Connector: c, hook: w.committed}), nil
}

// start starts the goroutine that checkpoints the WAL of db's database, if
// that database is a file in WAL mode.
func (w *walKeeper) start(ctx context.Context, db *sql.DB) error {
	var mode, file string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&file); err != nil {
		return err
	}
	if mode != "wal" || file == "" { // another journal, or in memory
		return nil
	}
	runCtx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	w.wal = file + "-wal"
	w.next.Store(walLimit)
	go w.run(runCtx, db)
	return nil
}

// run checkpoints whenever committed finds a checkpoint due, until ctx is
// done.
func (w *walKeeper) run(ctx context.Context, db *sql.DB) {
	defer close(w.done)
	heldOff := 0 // checkpoints in a row that readers held off
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.due:
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			continue
		}
		// While this waited for the connection, another checkpoint may
		// have emptied the file.
		if size := fileSize(w.wal); size > w.next.Load() {
			mode := "RESTART"
			if size > 2*walLimit {
				mode = "TRUNCATE"
			}
			switch checkpoint(ctx, conn, mode) {
			case checkpointed:
				heldOff = 0
				w.next.Store(size)
			case backOff:
				if heldOff++; heldOff >= 2 {
					w.next.Store(2 * size)
				}
			}
		}
		conn.Close()
	}
}

// fileSize returns the size of the file at path, or -1 if there is none
// this process can see.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// The outcomes of checkpoint.
const (
	checkpointed = iota // the log will start over
	tryAgain            // another connection was writing or checkpointing
	backOff             // readers held on, or it failed
)

// checkpoint runs PRAGMA wal_checkpoint(mode) on conn, whose busy timeout
// it lowers to walWait meanwhile.
func checkpoint(ctx context.Context, conn *sql.Conn, mode string) (outcome int) {
	var timeout int64
	if err := conn.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&timeout); err != nil {
		return backOff
	}
	if _, err := conn.ExecContext(ctx, `PRAGMA busy_timeout = `+strconv.FormatInt(min(timeout, walWait), 10)); err != nil {
		return backOff
	}
	bad := false
	defer func() {
		if _, err := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA busy_timeout = `+strconv.FormatInt(timeout, 10)); err != nil || bad {
			// Leave no connection with the short timeout, or in a
			// transaction, in the pool.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	// See above: take the write lock for a moment first.
	if _, err := conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		return tryAgain
	}
	if _, err := conn.ExecContext(ctx, `ROLLBACK`); err != nil {
		bad = true
		return backOff
	}
	// The columns: 1 if the checkpoint did not finish; the frames in the
	// log and those copied back, both -1 if it could not start because
	// another connection was checkpointing.
	var busy, frames, copied int64
	switch err := conn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(`+mode+`)`).Scan(&busy, &frames, &copied); {
	case err != nil:
		return backOff
	case busy == 0:
		return checkpointed
	case frames < 0:
		return tryAgain
	}
	return backOff
}

// stop stops the goroutine, if it runs, and waits for it to return.
func (w *walKeeper) stop() {
	if w == nil || w.cancel == nil {
		return
	}
	w.cancel()
	<-w.done
}
