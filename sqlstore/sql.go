package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// Queries are written with $1-style parameters, which both PostgreSQL and
// SQLite (where $NNN binds the NNN-th argument) understand.

// openStatuses is the SQL list of verify.Status values for which Open is
// true. The partial index verifications_expiry uses the same text.
const openStatuses = `('pending', 'sent', 'delivered')`

const verificationCols = `id, flow_id, foreign_id, status, to_phone, to_email, ip_address, brand,
	code_hash, sealed_code, charset, code_length, attempts, max_attempts, sends, steps,
	created_at, expires_at, verified_at, ended_at`

const deliveryCols = `id, verification_id, step, channel, sender, status, provider_id, error, created_at, updated_at`

// prefixed qualifies every column of a column list with a table alias.
func prefixed(alias, cols string) string {
	fields := strings.Split(cols, ",")
	for i, f := range fields {
		fields[i] = alias + "." + strings.TrimSpace(f)
	}
	return strings.Join(fields, ", ")
}

// querier is what *sql.DB, *sql.Tx and *sql.Conn have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) pg() bool { return s.dialect == Postgres }

// inTx runs fn in a transaction and commits it if fn returns nil. On
// SQLite every transaction starts with a write, so it takes the write lock
// at once (waiting out other processes' writers with the busy timeout).
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// wrap adds the operation to a driver error.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sqlstore: %s: %w", op, err)
}

// notFound is the error for a record that does not exist; errors.Is(err,
// verify.ErrNotFound) holds for it.
func notFound(op, kind, id string) error {
	return fmt.Errorf("sqlstore: %s: %s %q: %w", op, kind, id, verify.ErrNotFound)
}

// tv encodes a time for a NOT NULL column: integer microseconds since the
// Unix epoch on SQLite, a UTC time.Time (timestamptz) on PostgreSQL. The
// zero time is stored as itself (0001-01-01 UTC).
func (s *Store) tv(t time.Time) any {
	t = t.UTC().Truncate(time.Microsecond)
	if s.pg() {
		return t
	}
	return t.UnixMicro()
}

// tn encodes a time for a nullable column: NULL for the zero time.
func (s *Store) tn(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return s.tv(t)
}

// timeDest scans either encoding (or NULL, as the zero time) into a UTC
// time.Time.
type timeDest struct{ t *time.Time }

func (d timeDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.t = time.Time{}
	case int64:
		*d.t = time.UnixMicro(v).UTC()
	case time.Time:
		*d.t = v.UTC()
	default:
		return fmt.Errorf("sqlstore: cannot scan %T into a time", src)
	}
	return nil
}

// bytesDest scans a BLOB/BYTEA into a fresh slice: nil for NULL, non-nil
// (possibly empty) otherwise.
type bytesDest struct{ b *[]byte }

func (d bytesDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.b = nil
	case []byte:
		*d.b = append(make([]byte, 0, len(v)), v...)
	case string:
		*d.b = []byte(v)
	default:
		return fmt.Errorf("sqlstore: cannot scan %T into bytes", src)
	}
	return nil
}

// stepsDest decodes a JSON column into a []verify.Step.
type stepsDest struct{ steps *[]verify.Step }

func (d stepsDest) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		return fmt.Errorf("sqlstore: cannot scan %T into steps", src)
	}
	*d.steps = nil
	if err := json.Unmarshal(b, d.steps); err != nil {
		return fmt.Errorf("sqlstore: decode steps: %w", err)
	}
	return nil
}

func encodeSteps(steps []verify.Step) (string, error) {
	b, err := json.Marshal(steps)
	if err != nil {
		return "", fmt.Errorf("encode steps: %w", err)
	}
	return string(b), nil
}

// verificationDest returns the scan destinations for verificationCols.
func verificationDest(v *verify.VerificationRecord) []any {
	return []any{
		&v.ID, &v.FlowID, &v.ForeignID, &v.Status, &v.To.Phone, &v.To.Email, &v.IPAddress, &v.Brand,
		bytesDest{&v.CodeHash}, bytesDest{&v.SealedCode}, &v.Charset, &v.CodeLength,
		&v.Attempts, &v.MaxAttempts, &v.Sends, stepsDest{&v.Steps},
		timeDest{&v.CreatedAt}, timeDest{&v.ExpiresAt}, timeDest{&v.VerifiedAt}, timeDest{&v.EndedAt},
	}
}

// deliveryScan holds one row of deliveryCols, which may be all NULL on the
// outer side of a LEFT JOIN.
type deliveryScan struct {
	id, verificationID, channel, sender, status, providerID, errText sql.NullString
	step                                                             sql.NullInt64
	createdAt, updatedAt                                             time.Time
}

func (d *deliveryScan) dest() []any {
	return []any{&d.id, &d.verificationID, &d.step, &d.channel, &d.sender, &d.status,
		&d.providerID, &d.errText, timeDest{&d.createdAt}, timeDest{&d.updatedAt}}
}

// record returns the delivery, and false for an all-NULL row.
func (d *deliveryScan) record() (verify.DeliveryRecord, bool) {
	if !d.id.Valid {
		return verify.DeliveryRecord{}, false
	}
	return verify.DeliveryRecord{
		ID:             d.id.String,
		VerificationID: d.verificationID.String,
		Step:           int(d.step.Int64),
		Channel:        d.channel.String,
		From:           d.sender.String,
		Status:         verify.DeliveryStatus(d.status.String),
		ProviderID:     d.providerID.String,
		Error:          d.errText.String,
		CreatedAt:      d.createdAt,
		UpdatedAt:      d.updatedAt,
	}, true
}

// withDeliveries is a query over the verification rows of from (a table or
// CTE named v) joined to their deliveries, oldest first.
func withDeliveries(from, where string) string {
	return `SELECT ` + prefixed("v", verificationCols) + `, ` + prefixed("d", deliveryCols) + `
	FROM ` + from + ` LEFT JOIN deliveries d ON d.verification_id = v.id
	` + where + `
	ORDER BY d.created_at, d.seq`
}

// scanWithDeliveries reads the rows of a withDeliveries query: one
// verification, repeated once per delivery. found is false when there are
// no rows.
func scanWithDeliveries(rows *sql.Rows) (v verify.VerificationRecord, found bool, err error) {
	defer rows.Close()
	var d deliveryScan
	first := append(verificationDest(&v), d.dest()...)
	var later []any // later rows repeat the verification: scan only the delivery
	for rows.Next() {
		dest := first
		if found {
			if later == nil {
				later = make([]any, 0, len(first))
				for range len(first) - len(d.dest()) {
					later = append(later, new(any))
				}
				later = append(later, d.dest()...)
			}
			dest = later
		}
		if err := rows.Scan(dest...); err != nil {
			return verify.VerificationRecord{}, false, err
		}
		found = true
		if rec, ok := d.record(); ok {
			v.Deliveries = append(v.Deliveries, rec)
		}
	}
	if err := rows.Err(); err != nil {
		return verify.VerificationRecord{}, false, err
	}
	return v, found, nil
}

// deliveriesOf returns a verification's deliveries, oldest first.
func deliveriesOf(ctx context.Context, q querier, id string) ([]verify.DeliveryRecord, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+deliveryCols+` FROM deliveries
		WHERE verification_id = $1 ORDER BY created_at, seq`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []verify.DeliveryRecord
	var d deliveryScan
	for rows.Next() {
		if err := rows.Scan(d.dest()...); err != nil {
			return nil, err
		}
		rec, _ := d.record()
		out = append(out, rec)
	}
	return out, rows.Err()
}
