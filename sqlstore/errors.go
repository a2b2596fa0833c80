package sqlstore

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"

	"github.com/openverify/verify"
)

// wrap adds the operation to a driver error, and marks the errors a retry
// can fix as transient (verify.Transient), so that the engine answers them
// as E926 rather than E925.
//
// The engine recognises a lost or refused connection and the SQLSTATEs of
// a PostgreSQL server that is restarting, read-only or out of space on its
// own (see verify.Transient). Marked here are SQLite's result codes, and
// pgx's errors for a statement it never sent: on a connection it had
// already closed (a transaction's connection lost to a restart), or that
// it says is safe to retry.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("sqlstore: %s: %w", op, err)
	if sqliteTransient(err) || errors.Is(err, pgconn.ErrConnClosed) || pgconn.SafeToRetry(err) {
		return verify.Transient(err, 0)
	}
	return err
}

// sqliteTransient reports whether err is an SQLite failure a retry can
// fix: the database stayed locked by another process past the busy timeout
// (SQLITE_BUSY, SQLITE_LOCKED), memory or disk ran out (SQLITE_NOMEM,
// SQLITE_FULL), or an I/O error (SQLITE_IOERR, which a full disk also
// gives). A read-only file (SQLITE_READONLY), a missing table or a
// constraint is not: a retry would fail the same way.
func sqliteTransient(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff { // the primary result code
	case 5, // SQLITE_BUSY
		6,  // SQLITE_LOCKED
		7,  // SQLITE_NOMEM
		10, // SQLITE_IOERR
		13: // SQLITE_FULL
		return true
	}
	return false
}

// sqliteForeignKey reports whether err is SQLite's failed foreign key
// (SQLITE_CONSTRAINT_FOREIGNKEY).
func sqliteForeignKey(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == 787
}

// notFound is the error for a record that does not exist; errors.Is(err,
// verify.ErrNotFound) holds for it.
func notFound(op, kind, id string) error {
	return fmt.Errorf("sqlstore: %s: %s %q: %w", op, kind, id, verify.ErrNotFound)
}
