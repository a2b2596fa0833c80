package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/openverify/verify"
)

// TestWrapMarksLostConnections: a statement pgx never sent, on a
// connection a restart closed under a transaction, is one a retry can fix
// (E926), and other driver errors are not marked.
func TestWrapMarksLostConnections(t *testing.T) {
	if wrap("op", nil) != nil {
		t.Fatal("wrap(nil) is not nil")
	}
	closed := wrap("guarded attempt", fmt.Errorf("tx: %w", pgconn.ErrConnClosed))
	if !verify.IsTransient(closed) {
		t.Errorf("%v: not transient", closed)
	}
	if !errors.Is(closed, pgconn.ErrConnClosed) {
		t.Errorf("%v: the driver's error is lost", closed)
	}
	if other := wrap("attempt", errors.New("syntax error at or near")); verify.IsTransient(other) {
		t.Errorf("%v: transient", other)
	}
}

// TestStatementFailed: a batched statement is run again call by call only
// after an ERROR, which rolled it back; not after a lost connection, a
// cancellation or a FATAL error, after which it may have committed.
func TestStatementFailed(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "23505"}, true},
		{fmt.Errorf("batch: %w", &pgconn.PgError{Severity: "ERREUR", SeverityUnlocalized: "ERROR", Code: "40P01"}), true},
		{&pgconn.PgError{Severity: "ERROR", Code: "22021"}, true}, // a server too old to send the unlocalized severity
		{&pgconn.PgError{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "57P01"}, false},
		{&pgconn.PgError{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "57P01"}, false},
		{pgconn.ErrConnClosed, false},
		{context.Canceled, false},
		{errors.New("unexpected EOF"), false},
	} {
		if got := statementFailed(c.err); got != c.want {
			t.Errorf("statementFailed(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
