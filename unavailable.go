package verify

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"
)

// DefaultRetryAfter is the RetryAfter an E926 carries when the failure
// names none: long enough for a connection pool to reconnect, short enough
// for a person waiting on a login page.
const DefaultRetryAfter = time.Second

// Transient marks err as a failure that a retry can fix, so that the engine
// answers it as E926 (ErrUnavailable, HTTP 503) with RetryAfter set to
// retryAfter (DefaultRetryAfter when it is zero or negative), instead of
// E925. The returned error wraps err: errors.Is and errors.As still find it.
//
// A custom Store (or Counters backend) marks the errors of its own backend
// this way, for example a Redis client's "LOADING" reply or a cloud
// database's throttling error:
//
//	if isThrottled(err) {
//		return verify.Transient(err, 2*time.Second)
//	}
//
// Without a mark the engine still recognises the common cases on its own:
// an error with a Transient() bool method that returns true (so a backend's
// error type can say so itself), a lost or refused connection
// (driver.ErrBadConn, io.EOF, io.ErrUnexpectedEOF, ECONNREFUSED, ECONNRESET,
// a *net.OpError, a network timeout), the store's own timeout
// (context.DeadlineExceeded while the caller's context is live), and an
// error with an SQLState() string method (pgx's *pgconn.PgError, for one)
// whose SQLSTATE says the server is shutting down or starting up (57P01,
// 57P02, 57P03), the connection failed (class 08), the database is
// read-only (25006, a failover in progress), out of resources such as disk
// space (class 53), or the transaction lost a race it can retry (40001,
// 40P01, 55P03), or a statement timed out (57014). Transient(nil, d) is nil.
func Transient(err error, retryAfter time.Duration) error {
	if err == nil {
		return nil
	}
	if retryAfter <= 0 {
		retryAfter = DefaultRetryAfter
	}
	return &transientError{err: err, retryAfter: retryAfter}
}

type transientError struct {
	err        error
	retryAfter time.Duration
}

func (t *transientError) Error() string                 { return t.err.Error() }
func (t *transientError) Unwrap() error                 { return t.err }
func (t *transientError) Transient() bool               { return true }
func (t *transientError) RetryAfterHint() time.Duration { return t.retryAfter }

// IsTransient reports whether err is a failure that a retry can fix, by
// the rules Transient describes (a context error counts only when it is
// context.DeadlineExceeded: decide first whether it was the caller's own).
// An E926 *Error is transient; any other *Error is not.
func IsTransient(err error) bool {
	_, ok := transient(err)
	return ok
}

// transient classifies err and returns the retry hint for a transient one.
func transient(err error) (time.Duration, bool) {
	if err == nil {
		return 0, false
	}
	if e, ok := AsError(err); ok {
		return e.RetryAfter, e.Code == ErrUnavailable.Code
	}
	var mark interface{ Transient() bool }
	if errors.As(err, &mark) {
		if !mark.Transient() {
			return 0, false
		}
		var hint interface{ RetryAfterHint() time.Duration }
		if errors.As(err, &hint) && hint.RetryAfterHint() > 0 {
			return hint.RetryAfterHint(), true
		}
		return DefaultRetryAfter, true
	}
	var st interface{ SQLState() string }
	if errors.As(err, &st) {
		return DefaultRetryAfter, transientSQLState(st.SQLState())
	}
	switch {
	case errors.Is(err, driver.ErrBadConn),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ETIMEDOUT),
		errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH):
		return DefaultRetryAfter, true
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return DefaultRetryAfter, true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return DefaultRetryAfter, true
	}
	return 0, false
}

// transientSQLState reports whether an SQLSTATE names a failure a retry
// can fix.
func transientSQLState(code string) bool {
	switch code {
	case "57P01", // admin_shutdown
		"57P02", // crash_shutdown
		"57P03", // cannot_connect_now (starting up, or in recovery)
		"57014", // query_canceled: a statement_timeout
		"25006", // read_only_sql_transaction: a standby, or a failover
		"40001", // serialization_failure
		"40P01", // deadlock_detected
		"55P03": // lock_not_available
		return true
	}
	return strings.HasPrefix(code, "08") || // connection exception
		strings.HasPrefix(code, "53") // insufficient resources: disk full, out of memory, too many connections
}

// storeErr turns a Store's error into what the engine's caller sees:
//   - an *Error (ErrNotFound, ...) passes through;
//   - when the caller's own context is done, an error for which errors.Is
//     holds for that context's error (and still for the store's);
//   - a failure a retry can fix becomes E926 with RetryAfter;
//   - anything else becomes E925.
//
// Either of the last two wraps the store's error, so errors.Is and
// errors.As reach the driver's error.
func storeErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := AsError(err); ok {
		return err
	}
	if cerr := ctx.Err(); cerr != nil {
		if errors.Is(err, cerr) {
			return &callerGaveUp{fmt.Errorf("verify: %s: %w", op, err)}
		}
		return &callerGaveUp{fmt.Errorf("verify: %s: %w (%w)", op, cerr, err)}
	}
	if retry, ok := transient(err); ok {
		e := *ErrUnavailable
		e.RetryAfter, e.cause = retry, fmt.Errorf("%s: %w", op, err)
		return &e
	}
	return internalErr(op, err)
}

// callerGaveUp is the error for a store call whose caller's context was
// done: it matches the context's error with errors.Is, and is not
// transient (IsTransient), since the caller gave up, not the store.
type callerGaveUp struct{ err error }

func (c *callerGaveUp) Error() string   { return c.err.Error() }
func (c *callerGaveUp) Unwrap() error   { return c.err }
func (c *callerGaveUp) Transient() bool { return false }

// internalErr is E925 for a failure a retry cannot fix, with err (and
// what the engine was doing) as its cause.
func internalErr(op string, err error) *Error {
	e := *ErrInternal
	e.cause = fmt.Errorf("%s: %w", op, err)
	return &e
}
