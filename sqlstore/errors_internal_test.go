package sqlstore

import (
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
