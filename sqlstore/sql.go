package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/openverify/verify"
)

// Queries are written with $1-style parameters, which both PostgreSQL and
// SQLite (where $NNN binds the NNN-th argument) understand.

// isOpen is the SQL condition for an open verification (a verify.Status
// for which Open is true). The store keeps ended_at NULL exactly while a
// verification is open: CreateVerification stores it so, and every update
// that ends one sets it. The partial indexes of open verifications use the
// same condition, so updates of status alone leave them untouched.
const isOpen = `ended_at IS NULL`

// isOpenByID is isOpen in an update of one verification by its ID. The
// partial indexes on open verifications (WHERE ended_at IS NULL) serve
// ExpireDue, FindOpen and the exclusivity; a plan that read one of them
// to find a row by ID would visit every open verification. PostgreSQL
// caches the generic plan of a prepared statement, and one made while the
// table was small and not yet analysed chose such an index for Attempt
// and Finish (7 ms a call at 50,000 open verifications). Written so that
// the planner cannot prove the indexes' predicate from it, the condition
// leaves the primary key as the only index that helps.
const isOpenByID = `(ended_at IS NULL) IS TRUE`

const verificationCols = `id, flow_id, foreign_id, status, to_phone, to_email, ip_address,
	idempotency_key, request_hash, brand, language, fallback_language,
	code_hash, sealed_code, charset, code_length, attempts, max_attempts, sends, last_sent_at, steps, allowed_ips,
	created_at, expires_at, verified_at, ended_at, exclusive`

// verificationReadCols are the columns a verification is read from:
// verificationCols and checks, which only Attempt writes.
const verificationReadCols = verificationCols + `, checks`

const deliveryCols = `id, verification_id, step, channel, sender, status, provider_id, error, created_at, updated_at`

// prefixed qualifies every column of a column list with a table alias.
func prefixed(alias, cols string) string {
	fields := strings.Split(cols, ",")
	for i, f := range fields {
		fields[i] = alias + "." + strings.TrimSpace(f)
	}
	return strings.Join(fields, ", ")
}

// querier runs queries on the pool or in a transaction.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) pg() bool { return s.dialect == Postgres }

// runner is the querier the Store's methods use: the pool (tx nil) or a
// transaction. On SQLite it runs every query as a prepared statement from
// the Store's cache, since the driver would otherwise parse the SQL on
// every call; pgx keeps its own statement cache per connection.
type runner struct {
	s  *Store
	tx *sql.Tx
	// missed collects, in a transaction, the queries not yet in the cache.
	// They cannot be prepared on the pool while the transaction holds
	// SQLite's one connection; inTx prepares them once it is over.
	missed *[]string
	// detached runs the statements without their context's cancellation
	// (keeping its values): in a group commit's transaction, where an
	// interrupted write would roll back the other callers' writes too.
	detached bool
}

// ctx is the context a statement runs with.
func (r runner) ctx(ctx context.Context) context.Context {
	if r.detached {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// run returns the runner for the pool.
func (s *Store) run() runner { return runner{s: s} }

// stmt returns the prepared statement for query, or nil to run it
// unprepared.
func (r runner) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if r.s.stmts == nil {
		return nil, nil
	}
	if r.tx == nil {
		return r.s.prepared(ctx, query)
	}
	st := r.s.stmts.get(query)
	if st == nil {
		*r.missed = append(*r.missed, query)
		return nil, nil
	}
	// Reuses the statement already prepared on the transaction's
	// connection; closed when the transaction ends.
	return r.tx.StmtContext(ctx, st), nil
}

func (r runner) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx = r.ctx(ctx)
	st, err := r.stmt(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case st != nil:
		return st.ExecContext(ctx, args...)
	case r.tx != nil:
		return r.tx.ExecContext(ctx, query, args...)
	}
	return r.s.db.ExecContext(ctx, query, args...)
}

func (r runner) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	ctx = r.ctx(ctx)
	st, err := r.stmt(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case st != nil:
		return st.QueryContext(ctx, args...)
	case r.tx != nil:
		return r.tx.QueryContext(ctx, query, args...)
	}
	return r.s.db.QueryContext(ctx, query, args...)
}

// QueryRowContext is QueryContext for one row; errors surface at Scan.
func (r runner) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	ctx = r.ctx(ctx)
	st, err := r.stmt(ctx, query)
	switch {
	case err != nil:
		// A *sql.Row cannot be made from an error: let the pool report it.
		return r.s.db.QueryRowContext(ctx, query, args...)
	case st != nil:
		return st.QueryRowContext(ctx, args...)
	case r.tx != nil:
		return r.tx.QueryRowContext(ctx, query, args...)
	}
	return r.s.db.QueryRowContext(ctx, query, args...)
}

// stmtCache holds the Store's prepared statements (SQLite only), by SQL
// text. The set of texts is bounded: queries are constants, or built from
// a bounded number of pending steps.
type stmtCache struct {
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

func (c *stmtCache) get(query string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stmts[query]
}

// prepared returns the cached statement for query, preparing it on the
// pool if need be. It must not be called while holding a connection.
func (s *Store) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	c := s.stmts
	if st := c.get(query); st != nil {
		return st, nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	// The mutex guards the map only: database/sql calls, which may wait
	// for the connection, are made outside it.
	c.mu.Lock()
	old, raced := c.stmts[query]
	if !raced {
		c.stmts[query] = st
	}
	c.mu.Unlock()
	if raced { // another caller prepared it meanwhile
		st.Close()
		return old, nil
	}
	return st, nil
}

// closeStmts closes the cached statements.
func (s *Store) closeStmts() error {
	if s.stmts == nil {
		return nil
	}
	s.stmts.mu.Lock()
	stmts := s.stmts.stmts
	s.stmts.stmts = make(map[string]*sql.Stmt)
	s.stmts.mu.Unlock()
	var errs []error
	for _, st := range stmts {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// write runs fn, a write of one statement: on SQLite in a group commit
// with other callers' writes (see batcher), on PostgreSQL on the pool.
func (s *Store) write(ctx context.Context, fn func(q querier) error) error {
	if s.batch != nil {
		return s.batch.do(ctx, fn, true)
	}
	return fn(s.run())
}

// inTx runs fn in a transaction and commits it if fn returns nil; if fn
// returns errRollback, it rolls the transaction back and returns nil. On
// SQLite every transaction starts with a write, so it takes the write lock
// at once (waiting out other processes' writers with the busy timeout),
// and fn runs in a group commit with other callers' writes (see
// batcher): under a savepoint of its own, rolled back to it for
// errRollback or an error. On PostgreSQL it is a transaction of its own
// (pgx keeps the prepared statements).
func (s *Store) inTx(ctx context.Context, fn func(q querier) error) error {
	if s.batch != nil {
		return s.batch.do(ctx, fn, false)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	switch err = fn(runner{s: s, tx: tx}); {
	case errors.Is(err, errRollback):
		return tx.Rollback()
	case err != nil:
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// asStored returns t as the Store keeps it: UTC, to the microsecond.
func asStored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// asStoredOrNil is asStored for a nullable column: nil for the zero time.
func asStoredOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = asStored(t)
	return &t
}

// tv encodes a time for a NOT NULL column: integer microseconds since the
// Unix epoch on SQLite, a UTC time.Time (timestamptz) on PostgreSQL. The
// zero time is stored as itself (0001-01-01 UTC).
func (s *Store) tv(t time.Time) any {
	t = asStored(t)
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
		return fmt.Errorf("cannot scan %T into a time", src)
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
		return fmt.Errorf("cannot scan %T into bytes", src)
	}
	return nil
}

// strDest scans a nullable text column into a string, NULL as "".
type strDest struct{ s *string }

func (d strDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.s = ""
	case string:
		*d.s = v
	case []byte:
		*d.s = string(v)
	default:
		return fmt.Errorf("cannot scan %T into a string", src)
	}
	return nil
}

// text passes "" as NULL.
func text(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// jsonDest decodes a JSON column (steps, allowed IPs) into v, a pointer.
type jsonDest struct{ v any }

func (d jsonDest) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		return fmt.Errorf("cannot scan %T as JSON", src)
	}
	if err := json.Unmarshal(b, d.v); err != nil {
		return fmt.Errorf("decode JSON column: %w", err)
	}
	return nil
}

// encodeJSON encodes a value for a JSON column (nil slices as null).
func encodeJSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode JSON column: %w", err)
	}
	return string(b), nil
}

// verificationDest returns the scan destinations for verificationCols.
func verificationDest(v *verify.VerificationRecord) []any {
	return []any{
		&v.ID, &v.FlowID, &v.ForeignID, &v.Status, &v.To.Phone, &v.To.Email, &v.IPAddress,
		strDest{&v.IdempotencyKey}, bytesDest{&v.RequestHash}, &v.Brand, &v.Language, &v.FallbackLanguage,
		bytesDest{&v.CodeHash}, bytesDest{&v.SealedCode}, &v.Charset, &v.CodeLength,
		&v.Attempts, &v.MaxAttempts, &v.Sends, timeDest{&v.LastSentAt}, jsonDest{&v.Steps}, jsonDest{&v.AllowedIPs},
		timeDest{&v.CreatedAt}, timeDest{&v.ExpiresAt}, timeDest{&v.VerifiedAt}, timeDest{&v.EndedAt},
		flagDest{&v.Exclusive}, checksDest{&v.Checks},
	}
}

// checksDest scans the checks column (see migration checks): entries of
// Unix microseconds and r or w, comma-separated.
type checksDest struct{ cs *[]verify.CheckAttempt }

func (d checksDest) Scan(src any) error {
	var text string
	switch v := src.(type) {
	case nil:
	case string:
		text = v
	case []byte:
		text = string(v)
	default:
		return fmt.Errorf("sqlstore: checks column holds %T", src)
	}
	*d.cs = nil
	if text == "" {
		return nil
	}
	out := make([]verify.CheckAttempt, 0, strings.Count(text, ",")+1)
	for e := range strings.SplitSeq(text, ",") {
		if len(e) < 2 || (e[len(e)-1] != 'r' && e[len(e)-1] != 'w') {
			return fmt.Errorf("sqlstore: checks column entry %q is not microseconds and r or w", e)
		}
		us, err := strconv.ParseInt(e[:len(e)-1], 10, 64)
		if err != nil {
			return fmt.Errorf("sqlstore: checks column entry %q: %w", e, err)
		}
		out = append(out, verify.CheckAttempt{At: time.UnixMicro(us).UTC(), Right: e[len(e)-1] == 'r'})
	}
	*d.cs = out
	return nil
}

// checkEntry is the checks column's text for a check at now, without its
// r or w, which the statement adds.
func checkEntry(now time.Time) string { return strconv.FormatInt(asStored(now).UnixMicro(), 10) }

// flag encodes a flag column that is TRUE or NULL, never FALSE (see
// migration exclusive).
func flag(b bool) any {
	if b {
		return true
	}
	return nil
}

// flagDest scans a flag column: NULL is false; SQLite stores TRUE as 1.
type flagDest struct{ b *bool }

func (d flagDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.b = false
	case bool:
		*d.b = v
	case int64:
		*d.b = v != 0
	default:
		return fmt.Errorf("sqlstore: cannot scan %T into a flag", src)
	}
	return nil
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
// CTE named v) joined to their deliveries, in the given order of
// verifications and then oldest delivery first.
func withDeliveries(from, where, order string) string {
	if order != "" {
		order += ", "
	}
	return `SELECT ` + prefixed("v", verificationReadCols) + `, ` + prefixed("d", deliveryCols) + `
	FROM ` + from + ` LEFT JOIN deliveries d ON d.verification_id = v.id
	` + where + `
	ORDER BY ` + order + `v.id, d.created_at, d.seq`
}

// scanVerifications reads the rows of a withDeliveries query: each
// verification once per delivery (or once, with NULL delivery columns).
func scanVerifications(rows *sql.Rows) ([]verify.VerificationRecord, error) {
	defer rows.Close()
	return scanVerificationRows(rows)
}

// scanVerificationRows is scanVerifications for database/sql's rows or
// pgx's, which the caller closes.
func scanVerificationRows(rows scannedRows) ([]verify.VerificationRecord, error) {
	var (
		out  []verify.VerificationRecord
		cur  verify.VerificationRecord
		d    deliveryScan
		dest = append(verificationDest(&cur), d.dest()...)
	)
	for rows.Next() {
		cur = verify.VerificationRecord{}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		out = appendScanned(out, cur, &d)
	}
	return out, rows.Err()
}

// appendScanned adds a row of a withDeliveries query, the verification cur
// with the delivery d, to out: cur once, as its first row comes, and d to
// the last verification's deliveries unless it is all NULL.
func appendScanned(out []verify.VerificationRecord, cur verify.VerificationRecord, d *deliveryScan) []verify.VerificationRecord {
	if n := len(out); n == 0 || out[n-1].ID != cur.ID {
		out = append(out, cur)
	}
	if rec, ok := d.record(); ok {
		last := &out[len(out)-1]
		last.Deliveries = append(last.Deliveries, rec)
	}
	return out
}

// scanVerification is scanVerifications for a query that matches at most
// one verification.
func scanVerification(rows *sql.Rows) (verify.VerificationRecord, bool, error) {
	vs, err := scanVerifications(rows)
	if err != nil || len(vs) == 0 {
		return verify.VerificationRecord{}, false, err
	}
	return vs[0], true, nil
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
