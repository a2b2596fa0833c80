// Package sqlstore is a verify.Store over database/sql, for SQLite (the
// pure-Go modernc.org/sqlite driver, no cgo) and PostgreSQL (the pgx
// driver through its database/sql adapter).
//
// One process can keep its verifications in a SQLite file; several
// instances behind a load balancer can share one PostgreSQL database, and
// the engine stays correct across them: attempts and sends are counted by
// one conditional UPDATE ... RETURNING, a verification is finished by
// exactly one caller, and each due fallback step is claimed by one instance
// under a lease (FOR UPDATE SKIP LOCKED on PostgreSQL).
//
// Open connects, configures the pool and migrates:
//
//	st, err := sqlstore.Open(ctx, "sqlite:verify.db")                        // or
//	st, err := sqlstore.Open(ctx, "postgres://app@db.internal/app?sslmode=verify-full")
//	defer st.Close()
//	eng, err := verify.New(st, verify.WithSecret(secret), ...)
//
// New wraps a *sql.DB the caller has opened and configured; it does not
// migrate, so call Migrate (at start-up, from every instance if you like:
// it is idempotent and safe to run concurrently).
//
// Times are stored in UTC with microsecond precision (timestamptz on
// PostgreSQL, integer microseconds since the Unix epoch on SQLite) and are
// returned as UTC time.Time values. A Store never reads the wall clock.
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"runtime"
	"strings"

	"github.com/openverify/verify"

	// Registers the "pgx" database/sql driver.
	_ "github.com/jackc/pgx/v5/stdlib"
	// Registers the "sqlite" database/sql driver.
	_ "modernc.org/sqlite"
)

// Dialect is the SQL dialect of a database.
type Dialect int

const (
	// SQLite is SQLite 3.35 or later (for RETURNING); modernc.org/sqlite,
	// registered as driver "sqlite", is the tested driver.
	SQLite Dialect = iota + 1
	// Postgres is PostgreSQL 12 or later; github.com/jackc/pgx/v5/stdlib,
	// registered as driver "pgx", is the tested driver.
	Postgres
)

// String returns "sqlite" or "postgres".
func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// Store is a verify.Store over database/sql. It is safe for concurrent use,
// and any number of Stores, in any number of processes, may share one
// database.
type Store struct {
	db      *sql.DB
	dialect Dialect
	owned   bool       // Close closes db
	stmts   *stmtCache // SQLite only
	batch   *batcher   // SQLite only: group commit (see batcher)
	// pgBatches merges concurrent calls into one statement (PostgreSQL
	// only; see pgbatch.go).
	pgBatches *pgBatches
	wal       *walKeeper // runs the checkpoints of a SQLite file Open opened
}

var _ verify.Store = (*Store)(nil)

// New returns a Store over db, which must already be open on a database of
// the given dialect. New does no I/O and does not migrate: call Migrate
// before first use. Close does not close db; the caller still owns it.
//
// For SQLite, open db with WAL, a busy timeout and foreign keys on, and
// limit it to one open connection (db.SetMaxOpenConns(1)): SQLite lets one
// writer in at a time, and queueing in Go is much faster than SQLite's busy
// handler. Open does all of this, and keeps the WAL bounded however many
// processes share the file. A Store made by New leaves the checkpoints to
// SQLite, whose automatic ones let the WAL grow without bound while several
// processes write and read the file at once: there, run PRAGMA
// wal_checkpoint(TRUNCATE) yourself when the -wal file grows.
func New(db *sql.DB, dialect Dialect) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlstore: New(nil db): open one with sql.Open, or use sqlstore.Open")
	}
	if dialect != SQLite && dialect != Postgres {
		return nil, fmt.Errorf("sqlstore: New: unknown dialect %v (use sqlstore.SQLite or sqlstore.Postgres)", dialect)
	}
	s := &Store{db: db, dialect: dialect}
	if dialect == SQLite {
		s.stmts = &stmtCache{stmts: make(map[string]*sql.Stmt)}
		s.batch = &batcher{run: s.runBatch}
	} else {
		s.pgBatches = newPGBatches(s)
	}
	return s, nil
}

// DB returns the database the Store uses.
func (s *Store) DB() *sql.DB { return s.db }

// Dialect returns the Store's dialect.
func (s *Store) Dialect() Dialect { return s.dialect }

// Close stops the Store's WAL checkpoints (see Open), releases its prepared
// statements and, if Open opened the database, closes it; a *sql.DB handed
// to New stays open, since the caller owns it. The Store must not be used
// after Close.
func (s *Store) Close() error {
	s.wal.stop()
	err := s.closeStmts()
	if !s.owned {
		return err
	}
	return errors.Join(err, s.db.Close())
}

// Option configures Open.
type Option func(*openConfig)

type openConfig struct {
	migrate  bool
	maxConns int
}

// WithoutMigrate makes Open skip Migrate, for deployments that migrate in a
// separate step. By default Open migrates.
func WithoutMigrate() Option {
	return func(c *openConfig) { c.migrate = false }
}

// WithMaxConns sets the maximum number of open (and idle) connections.
// Defaults to 1 for SQLite (one writer at a time; a :memory: database lives
// in its one connection) and to 4 × GOMAXPROCS, at least 8, for
// PostgreSQL.
func WithMaxConns(n int) Option {
	return func(c *openConfig) {
		if n > 0 {
			c.maxConns = n
		}
	}
}

// sqlitePragmas are the pragmas Open sets on every SQLite connection,
// unless the DSN sets them itself: WAL (readers do not block the writer), a
// busy timeout (other processes' writes are waited for, not failed),
// foreign keys on, and synchronous NORMAL (in WAL mode, durable across
// process crashes; the last commits may be lost on power loss — pass
// _pragma=synchronous(FULL) to pay an fsync per commit instead), no
// automatic checkpoints: the Store runs its own (see walKeeper), and
// temporary files in memory: the sub-journal of each write's savepoint in
// a group commit (see batcher) is written to memory instead of a file, a
// system call per page saved. Durability is the WAL's; the sub-journal
// only undoes one write within its transaction.

var sqlitePragmas = []struct{ name, value string }{
	{"busy_timeout", "busy_timeout(10000)"},
	{"journal_mode", "journal_mode(WAL)"},
	{"foreign_keys", "foreign_keys(1)"},
	{"synchronous", "synchronous(NORMAL)"},
	{"wal_autocheckpoint", "wal_autocheckpoint(0)"},
	{"temp_store", "temp_store(MEMORY)"},
}

// Open opens the database named by dsn, picking the driver from its form,
// and, unless WithoutMigrate is given, migrates it:
//
//   - "sqlite:path", "sqlite://path" (path may be ":memory:") or a "file:"
//     URI opens SQLite with modernc.org/sqlite, with WAL, a 10 s busy
//     timeout, foreign keys on, synchronous NORMAL and temporary files in
//     memory (each overridable by a _pragma= parameter in the DSN),
//     transactions that BEGIN IMMEDIATE,
//     and one connection. The Store checkpoints the WAL itself, in place
//     of SQLite's automatic checkpoints, which let it grow without bound
//     while other processes keep reading the file: once commits leave the
//     -wal file larger than 4 MiB, it runs PRAGMA wal_checkpoint(RESTART),
//     or TRUNCATE once the file is over 8 MiB. A DSN that sets
//     wal_autocheckpoint gets SQLite's checkpoints as it says (or none,
//     with 0), and the Store runs none;
//   - "postgres://..." or "postgresql://..." opens PostgreSQL with pgx.
//
// Close closes the database again.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg := openConfig{migrate: true}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	var (
		driver  string
		dialect Dialect
		wal     *walKeeper // SQLite, unless the DSN sets wal_autocheckpoint
	)
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		driver, dialect = "pgx", Postgres
		if cfg.maxConns == 0 {
			cfg.maxConns = max(8, 4*runtime.GOMAXPROCS(0))
		}
	case strings.HasPrefix(dsn, "sqlite:"), strings.HasPrefix(dsn, "file:"):
		driver, dialect = "sqlite", SQLite
		var checkpoints bool
		if dsn, checkpoints = sqliteDSN(dsn); checkpoints {
			wal = newWALKeeper()
		}
		if cfg.maxConns == 0 {
			cfg.maxConns = 1
		}
		if err := createPrivate(dsn); err != nil {
			return nil, fmt.Errorf("sqlstore: create %s: %w", dialect, err)
		}
	default:
		return nil, fmt.Errorf("sqlstore: Open: cannot tell the database from the DSN %q (use sqlite:path, file:path, or postgres://...)", redact(dsn))
	}
	var (
		db  *sql.DB
		err error
	)
	if wal != nil {
		db, err = openSQLite(dsn, wal)
	} else {
		db, err = sql.Open(driver, dsn)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open %s: %w", dialect, err)
	}
	db.SetMaxOpenConns(cfg.maxConns)
	db.SetMaxIdleConns(cfg.maxConns)
	s, err := New(db, dialect)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.owned = true
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlstore: connect to %s: %w", dialect, err)
	}
	if wal != nil {
		if err := wal.start(ctx, db); err != nil {
			db.Close()
			return nil, fmt.Errorf("sqlstore: connect to %s: %w", dialect, err)
		}
		s.wal = wal
	}
	if cfg.migrate {
		if err := s.Migrate(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// sqliteDSN turns "sqlite:path?query" into the modernc DSN "path?query"
// with the default pragmas and _txlock=immediate added where the DSN does
// not set them. It reports whether the Store is to run the checkpoints:
// whether the DSN leaves wal_autocheckpoint to the defaults.
func sqliteDSN(dsn string) (string, bool) {
	if rest, ok := strings.CutPrefix(dsn, "sqlite:"); ok {
		dsn = strings.TrimPrefix(rest, "//")
	}
	path, query, _ := strings.Cut(dsn, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		return dsn, false // let the driver report it
	}
	set := make(map[string]bool)
	for _, p := range q["_pragma"] {
		name := strings.ToLower(strings.TrimSpace(p))
		if i := strings.IndexAny(name, "(= "); i >= 0 {
			name = name[:i]
		}
		set[name] = true
	}
	for _, p := range sqlitePragmas {
		if !set[p.name] {
			q.Add("_pragma", p.value)
		}
	}
	if q.Get("_txlock") == "" {
		q.Set("_txlock", "immediate")
	}
	return path + "?" + q.Encode(), !set["wal_autocheckpoint"]
}

// createPrivate creates the file of a SQLite DSN (as sqliteDSN returns it)
// that does not exist yet, readable and writable by its owner only (0600):
// it holds phone numbers and e-mail addresses. SQLite gives the -wal and
// -shm files it creates beside it the same permissions. An existing file,
// and an in-memory database, are left alone.
func createPrivate(dsn string) error {
	path, query, _ := strings.Cut(dsn, "?")
	path = strings.TrimPrefix(path, "file:")
	if q, err := url.ParseQuery(query); path == "" || strings.HasPrefix(path, ":memory:") ||
		(err == nil && q.Get("mode") == "memory") {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// redact hides a password in a DSN for error messages.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
