package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/openverify/verify"
)

// blob passes nil slices as NULL.
func blob(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// readyAt is when a pending step becomes claimable: the later of its
// DueAt and LeaseUntil.
func readyAt(p verify.PendingStep) time.Time {
	if p.LeaseUntil.After(p.DueAt) {
		return p.LeaseUntil
	}
	return p.DueAt
}

// CreateVerification implements verify.Store. The pending steps are stored
// under v.ID whatever their VerificationID says. On PostgreSQL concurrent
// calls share one statement (see pgbatch.go).
func (s *Store) CreateVerification(ctx context.Context, v verify.VerificationRecord, steps []verify.PendingStep) error {
	_, err := s.create(ctx, v, steps, verify.Guard{}, nil)
	return err
}

// CreateVerificationCounting implements verify.CountingStore: the guard's
// read and the counts' upserts are in the transaction (on PostgreSQL under
// load, the statement) that stores the verification.
func (s *Store) CreateVerificationCounting(ctx context.Context, v verify.VerificationRecord, steps []verify.PendingStep, guard verify.Guard, counts []verify.Count) ([]verify.Counter, error) {
	if err := verify.CheckCounts(counts); err != nil {
		return nil, wrap("create verification", err)
	}
	return s.create(ctx, v, steps, guard, counts)
}

func (s *Store) create(ctx context.Context, v verify.VerificationRecord, steps []verify.PendingStep, guard verify.Guard, counts []verify.Count) ([]verify.Counter, error) {
	if s.pgBatches != nil {
		return s.pgBatches.create.Do(ctx, newVerification{v, steps, guard, counts})
	}
	return s.createOne(ctx, v, steps, guard, counts)
}

// createOne is CreateVerification's own statement (or, on SQLite, or with
// a guard or counts, transaction).
func (s *Store) createOne(ctx context.Context, v verify.VerificationRecord, steps []verify.PendingStep, guard verify.Guard, counts []verify.Count) ([]verify.Counter, error) {
	if len(counts) > 0 || guard.Key != "" {
		var counters []verify.Counter
		err := s.inTx(ctx, func(q querier) error {
			if guard.Key != "" {
				c, err := readCounter(ctx, q, s.tv, guard.Key, v.CreatedAt)
				if err != nil {
					return err
				}
				if guard.Refuses(c, v.CreatedAt) {
					return guard.Refusal(c)
				}
			}
			// The verification before the counters, the order in which
			// every statement that stores one takes their locks (see
			// pgCreateBatchCounting), so that racing creations of one
			// exclusive verification on two Stores do not deadlock.
			if err := s.insertVerification(ctx, q, v, steps); err != nil {
				return err
			}
			if err := s.decideLimits(ctx, q, counts, v.CreatedAt); err != nil {
				return err
			}
			var err error
			counters, err = s.applyCounts(ctx, q, counts, v.CreatedAt)
			return err
		})
		if err != nil {
			return nil, s.createErr(v, err)
		}
		return counters, nil
	}
	return nil, s.createErr(v, s.insertVerification(ctx, nil, v, steps))
}

// decideLimits decides, in q's transaction, the counts when one of them
// has a Limit, and returns the *verify.RefusedError of the first count
// that refuses at now, or nil when none does. On PostgreSQL it locks the
// counters of all of them (as Take locks its counters, in the order of
// their names, so that the counts' writes after it take no lock out of
// that order); on SQLite the transaction holds the database's write lock
// already (the verification's insert took it), and it reads the counters
// of the counts with a Limit.
func (s *Store) decideLimits(ctx context.Context, q querier, counts []verify.Count, now time.Time) error {
	if !limited(counts) {
		return nil
	}
	var (
		cur map[string]verify.Counter
		err error
	)
	if s.pg() {
		keys := countKeys(nil, counts)
		slices.Sort(keys)
		cur, err = readCounters(ctx, q, pgTakeQueries.lock, keys, s.tv(now))
	} else {
		var keys []string
		for _, c := range counts {
			if c.Limit > 0 {
				keys = append(keys, c.Key)
			}
		}
		cur, err = readCounters(ctx, q, s.takeQueries(len(keys)).read, stringArgs(keys)...)
	}
	if err != nil {
		return err
	}
	_, err = verify.ApplyCounts(orderedCounts(cur, counts), counts, now)
	return err
}

// limited reports whether a count has a Limit.
func limited(counts []verify.Count) bool {
	return slices.ContainsFunc(counts, func(c verify.Count) bool { return c.Limit > 0 })
}

// countKeys appends the counts' counters to keys.
func countKeys(keys []string, counts []verify.Count) []string {
	for _, c := range counts {
		keys = append(keys, c.Key)
	}
	return keys
}

// orderedCounts is ordered for counts.
func orderedCounts(byName map[string]verify.Counter, counts []verify.Count) []verify.Counter {
	out := make([]verify.Counter, len(counts))
	for i, c := range counts {
		out[i] = byName[c.Key]
	}
	return out
}

// insertVerification stores v and its steps: in q's transaction, or (q
// nil) on its own, in one statement on PostgreSQL and one transaction on
// SQLite.
func (s *Store) insertVerification(ctx context.Context, q querier, v verify.VerificationRecord, steps []verify.PendingStep) error {
	stepsJSON, err := encodeJSON(v.Steps)
	if err != nil {
		return wrap("create verification", err)
	}
	ipsJSON, err := encodeJSON(v.AllowedIPs)
	if err != nil {
		return wrap("create verification", err)
	}
	args := []any{
		v.ID, v.FlowID, v.ForeignID, string(v.Status), v.To.Phone, v.To.Email, v.IPAddress,
		text(v.IdempotencyKey), blob(v.RequestHash), v.Brand, v.Language, v.FallbackLanguage,
		blob(v.CodeHash), blob(v.SealedCode), int(v.Charset), v.CodeLength, v.Attempts, v.MaxAttempts, v.Sends, s.tn(v.LastSentAt),
		stepsJSON, ipsJSON, s.tv(v.CreatedAt), s.tv(v.ExpiresAt), s.tn(v.VerifiedAt), s.endedAt(v), flag(v.Exclusive),
	}
	insertVerification := `INSERT INTO verifications (` + verificationCols + `) VALUES (` + placeholders(1, len(args)) + `)`
	if len(steps) == 0 {
		if q != nil {
			_, err := q.ExecContext(ctx, insertVerification, args...)
			return err
		}
		return s.write(ctx, func(q querier) error {
			_, err := q.ExecContext(ctx, insertVerification, args...)
			return err
		})
	}
	var insertSteps strings.Builder
	insertSteps.WriteString(`INSERT INTO pending_steps (verification_id, step, due_at, lease_until, ready_at, tries) VALUES `)
	for i, p := range steps {
		n := len(args)
		if i > 0 {
			insertSteps.WriteString(", ")
		}
		fmt.Fprintf(&insertSteps, "($1, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5)
		args = append(args, p.Step, s.tv(p.DueAt), s.tn(p.LeaseUntil), s.tv(readyAt(p)), p.Tries)
	}
	if s.pg() {
		// One statement, so one round trip: the CTE's insert and the outer
		// one commit together.
		if q == nil {
			q = s.run()
		}
		_, err := q.ExecContext(ctx, `WITH v AS (`+insertVerification+`) `+insertSteps.String(), args...)
		return err
	}
	both := func(tx querier) error {
		if _, err := tx.ExecContext(ctx, insertVerification, args...); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, insertSteps.String(), args...)
		return err
	}
	if q != nil {
		return both(q)
	}
	return s.inTx(ctx, both)
}

// endedAt is the ended_at value of a new verification: NULL exactly when
// it is open (see isOpen), even if the record says otherwise.
func (s *Store) endedAt(v verify.VerificationRecord) any {
	if v.Status.Open() {
		return nil
	}
	return s.tv(v.EndedAt)
}

// placeholders returns "$from, ..., $to".
func placeholders(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		if i > from {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(i))
	}
	return b.String()
}

// createErr wraps CreateVerification's error; a clash on the idempotency
// key matches verify.ErrDuplicate, and one on an exclusive verification's
// flow and recipient verify.ErrOpenExists.
func (s *Store) createErr(v verify.VerificationRecord, err error) error {
	switch {
	case err == nil:
		return nil
	case v.IdempotencyKey != "" && s.isUniqueViolation(err, "verifications_idempotency_key", "verifications.idempotency_key"):
		return fmt.Errorf("sqlstore: create verification: idempotency key %q: %w", v.IdempotencyKey, verify.ErrDuplicate)
	case v.Exclusive && s.isUniqueViolation(err, "verifications_exclusive", "verifications.exclusive"):
		return fmt.Errorf("sqlstore: create verification: %w", verify.ErrOpenExists)
	}
	return wrap("create verification", err)
}

// isUniqueViolation reports whether err is a unique-constraint violation of
// the named PostgreSQL constraint, or of a SQLite index on the table.column
// (among others).
func (s *Store) isUniqueViolation(err error, pgConstraint, sqliteColumn string) bool {
	if s.pg() {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == pgConstraint
	}
	_, cols, ok := strings.Cut(err.Error(), "UNIQUE constraint failed: ")
	if !ok {
		return false
	}
	cols, _, _ = strings.Cut(cols, " (")
	return slices.Contains(strings.Split(cols, ", "), sqliteColumn)
}

// GetVerification implements verify.Store.
func (s *Store) GetVerification(ctx context.Context, id string) (verify.VerificationRecord, error) {
	v, found, err := s.getVerification(ctx, s.run(), id)
	if err != nil {
		return verify.VerificationRecord{}, wrap("get verification", err)
	}
	if !found {
		return verify.VerificationRecord{}, notFound("get verification", "verification", id)
	}
	return v, nil
}

var (
	getVerificationQuery = withDeliveries("verifications v", "WHERE v.id = $1", "")
	findByKeyQuery       = withDeliveries("verifications v", "WHERE v.idempotency_key = $1", "")
	findOpenQuery        = withDeliveries("verifications v",
		`WHERE v.flow_id = $1 AND v.to_phone = $2 AND v.to_email = $3
		AND v.`+isOpen+` AND v.expires_at > $4`,
		"v.created_at DESC")
)

func (s *Store) getVerification(ctx context.Context, q querier, id string) (verify.VerificationRecord, bool, error) {
	rows, err := q.QueryContext(ctx, getVerificationQuery, id)
	if err != nil {
		return verify.VerificationRecord{}, false, err
	}
	return scanVerification(rows)
}

// FindByIdempotencyKey implements verify.Store.
func (s *Store) FindByIdempotencyKey(ctx context.Context, key string) (verify.VerificationRecord, error) {
	if key == "" {
		return verify.VerificationRecord{}, notFound("find by idempotency key", "idempotency key", key)
	}
	rows, err := s.run().QueryContext(ctx, findByKeyQuery, key)
	if err != nil {
		return verify.VerificationRecord{}, wrap("find by idempotency key", err)
	}
	v, found, err := scanVerification(rows)
	if err != nil {
		return verify.VerificationRecord{}, wrap("find by idempotency key", err)
	}
	if !found {
		return verify.VerificationRecord{}, notFound("find by idempotency key", "idempotency key", key)
	}
	return v, nil
}

// FindOpen implements verify.Store.
func (s *Store) FindOpen(ctx context.Context, flowID string, to verify.Recipient, now time.Time) ([]verify.VerificationRecord, error) {
	rows, err := s.run().QueryContext(ctx, findOpenQuery, flowID, to.Phone, to.Email, s.tv(now))
	if err != nil {
		return nil, wrap("find open", err)
	}
	vs, err := scanVerifications(rows)
	return vs, wrap("find open", err)
}

// conditional is a conditional update of one verification: SET set WHERE
// id = $1 AND where, as one statement per dialect. With deleteSteps, the
// pending steps of a verification the update ends are deleted together
// with it.
type conditional struct {
	pg, sqlite  string
	deleteSteps bool
}

func newConditional(set, where string, deleteSteps bool) conditional {
	update := `UPDATE verifications SET ` + set + ` WHERE id = $1 AND ` + where
	// PostgreSQL: one statement, so the update, the step deletion and the
	// read of the deliveries are one atomic round trip.
	pg := `WITH v AS (` + update + ` RETURNING *)`
	if deleteSteps {
		pg += `, p AS (DELETE FROM pending_steps WHERE verification_id IN (SELECT id FROM v WHERE NOT v.` + isOpen + `))`
	}
	return conditional{
		pg:          pg + " " + withDeliveries("v", "", ""),
		sqlite:      update + ` RETURNING ` + verificationReadCols,
		deleteSteps: deleteSteps,
	}
}

// ending is the SET list that ends a verification with status $3 at $2, as
// Finish does.
const ending = `status = $3, ended_at = $2, sealed_code = NULL,
	verified_at = CASE WHEN $3 = 'verified' THEN $2 ELSE verified_at END`

var (
	// countSendUpdate's $4 is true when there is no cooldown, and $5 is
	// now - cooldown: the latest send may have been counted at $5 or
	// before. A verification stored by an engine from before the cooldown
	// (or before migration delays) has last_sent_at NULL, which no cooldown
	// holds back.
	countSendUpdate = newConditional(`sends = sends + 1, last_sent_at = $2`,
		isOpenByID+` AND sends < $3 AND expires_at > $2 AND ($4 OR last_sent_at IS NULL OR last_sent_at <= $5)`, false)
	finishUpdate = newConditional(ending, isOpenByID, true)
)

// attemptUpdate returns Attempt for n hashes ($4 to $n+3) at $2 (whose
// checkEntry is $3): one
// UPDATE that counts the attempt, compares the code and ends the
// verification when it is verified or out of attempts (on PostgreSQL with
// the step deletion and the read of the deliveries in the same
// statement). A wrong attempt that leaves it open changes no indexed
// column, so on PostgreSQL it is a heap-only update.
func attemptUpdate(n int) conditional {
	match := "FALSE"
	if n > 0 {
		match = `code_hash IN (` + placeholders(4, n+3) + `)`
	}
	set, where := attemptSet(match, "$2", "$3")
	return newConditional(set, where, true)
}

// attemptSet is Attempt's SET list and condition, for a code that matches
// where match holds, at the time now, whose checkEntry is entry (SQL
// expressions all three).
func attemptSet(match, now, entry string) (set, where string) {
	ends := `(` + match + ` OR attempts + 1 >= max_attempts)`
	set = `attempts = attempts + 1,
		checks = checks || CASE WHEN checks = '' THEN '' ELSE ',' END || CAST(` + entry + ` AS TEXT) ||
			CASE WHEN ` + match + ` THEN 'r' ELSE 'w' END,
		status = CASE WHEN ` + match + ` THEN 'verified' WHEN attempts + 1 >= max_attempts THEN 'max_attempts' ELSE status END,
		ended_at = CASE WHEN ` + ends + ` THEN ` + now + ` END,
		verified_at = CASE WHEN ` + match + ` THEN ` + now + ` ELSE verified_at END,
		sealed_code = CASE WHEN ` + ends + ` THEN NULL ELSE sealed_code END`
	return set, isOpenByID + ` AND attempts < max_attempts AND expires_at > ` + now
}

// attemptUpdates holds attemptUpdate for up to three secrets.
var attemptUpdates = [...]conditional{attemptUpdate(0), attemptUpdate(1), attemptUpdate(2), attemptUpdate(3)}

// updateHooks run in a conditional update's transaction: before, ahead of
// the update (stop ends the transaction without it); after, once the
// update has matched its row.
type updateHooks struct {
	before func(q querier) (stop bool, err error)
	after  func(q querier, v verify.VerificationRecord) error
}

// update runs a conditional update. When the row matches, it returns the
// updated record with its deliveries and true; when it does not, the
// current record and false; when h.before stopped it, the zero record and
// false. With hooks the update runs in a transaction with them.
func (s *Store) update(ctx context.Context, op string, c conditional, h updateHooks, args ...any) (verify.VerificationRecord, bool, error) {
	id := args[0].(string)
	var (
		v                verify.VerificationRecord
		updated, stopped bool
		err              error
	)
	// run is the update in q: one statement on PostgreSQL; on SQLite the
	// deletion of an ended verification's steps and the read of its
	// deliveries follow.
	run := func(q querier) error {
		if s.pg() {
			rows, err := q.QueryContext(ctx, c.pg, args...)
			if err == nil {
				v, updated, err = scanVerification(rows)
			}
			return err
		}
		err := q.QueryRowContext(ctx, c.sqlite, args...).Scan(verificationDest(&v)...)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		updated = true
		if c.deleteSteps && !v.Status.Open() {
			if _, err := q.ExecContext(ctx, `DELETE FROM pending_steps WHERE verification_id = $1`, id); err != nil {
				return err
			}
		}
		v.Deliveries, err = deliveriesOf(ctx, q, id)
		return err
	}
	if s.pg() && h.before == nil && h.after == nil {
		err = run(s.run())
	} else {
		// One transaction, so that a failure after the UPDATE (reading the
		// deliveries, a hook) rolls it back: the caller never gets an
		// error for an attempt that was counted.
		err = s.inTx(ctx, func(q querier) error {
			if h.before != nil {
				var err error
				if stopped, err = h.before(q); err != nil || stopped {
					return err
				}
			}
			if err := run(q); err != nil || !updated || h.after == nil {
				return err
			}
			return h.after(q, v)
		})
	}
	switch {
	case err != nil:
		return verify.VerificationRecord{}, false, wrap(op, err)
	case updated:
		return v, true, nil
	case stopped:
		return verify.VerificationRecord{}, false, nil
	}
	return s.current(ctx, op, id)
}

// current returns the verification a conditional update left alone, with
// false, or ErrNotFound.
func (s *Store) current(ctx context.Context, op, id string) (verify.VerificationRecord, bool, error) {
	v, found, err := s.getVerification(ctx, s.run(), id)
	if err != nil {
		return verify.VerificationRecord{}, false, wrap(op, err)
	}
	if !found {
		return verify.VerificationRecord{}, false, notFound(op, "verification", id)
	}
	return v, false, nil
}

// Attempt implements verify.Store with one conditional UPDATE ...
// RETURNING that counts, compares and ends (attemptUpdate), so that racing
// callers in any number of processes never count more than MaxAttempts.
// On PostgreSQL that is the whole of it; on SQLite the deletion of an
// ended verification's steps and the read of its deliveries follow in the
// same transaction.
func (s *Store) Attempt(ctx context.Context, id string, hashes [][]byte, now time.Time) (verify.VerificationRecord, bool, error) {
	return s.attempt(ctx, id, hashes, now, nil)
}

// AttemptCounting implements verify.CountingStore: the counts are upserts
// in the transaction (on PostgreSQL under load, the statement) that counts
// the attempt.
func (s *Store) AttemptCounting(ctx context.Context, id string, hashes [][]byte, now time.Time, onVerified []verify.Count) (verify.VerificationRecord, bool, error) {
	if err := verify.CheckAttemptCounts(onVerified); err != nil {
		return verify.VerificationRecord{}, false, wrap("attempt", err)
	}
	return s.attempt(ctx, id, hashes, now, onVerified)
}

func (s *Store) attempt(ctx context.Context, id string, hashes [][]byte, now time.Time, onVerified []verify.Count) (verify.VerificationRecord, bool, error) {
	if s.pgBatches != nil {
		a, err := s.pgBatches.attempts.Do(ctx, attemptReq{id, hashes, now, onVerified})
		return a.rec, a.counted, err
	}
	return s.attemptOne(ctx, id, hashes, now, onVerified)
}

// attemptOne is Attempt's own statement (on SQLite, or with counts,
// transaction).
func (s *Store) attemptOne(ctx context.Context, id string, hashes [][]byte, now time.Time, onVerified []verify.Count) (verify.VerificationRecord, bool, error) {
	c, args := s.attemptCall(attemptUpdates[:], attemptUpdate, id, hashes, now)
	var h updateHooks
	if len(onVerified) > 0 {
		h.after = func(q querier, v verify.VerificationRecord) error {
			if v.Status != verify.StatusVerified {
				return nil
			}
			_, err := s.applyCounts(ctx, q, onVerified, now)
			return err
		}
	}
	return s.update(ctx, "attempt", c, h, args...)
}

// attemptCall returns an attempt's conditional update for its hashes,
// cached[len(hashes)] or, past the cache, build(len(hashes)), and its
// arguments: id, now, now's checkEntry, then the hashes.
func (s *Store) attemptCall(cached []conditional, build func(int) conditional, id string, hashes [][]byte, now time.Time) (conditional, []any) {
	var cond conditional
	if len(hashes) < len(cached) {
		cond = cached[len(hashes)]
	} else {
		cond = build(len(hashes))
	}
	args := make([]any, 0, 3+len(hashes))
	args = append(args, id, s.tv(now), checkEntry(now))
	for _, h := range hashes {
		args = append(args, h)
	}
	return cond, args
}

// CountSend implements verify.Store with one conditional UPDATE ...
// RETURNING, which checks the cooldown and sets last_sent_at under the
// row lock (SQLite: the write lock), so of racing callers at most one is
// counted per cooldown.
func (s *Store) CountSend(ctx context.Context, id string, max int, cooldown time.Duration, now time.Time) (verify.VerificationRecord, bool, error) {
	return s.update(ctx, "count send", countSendUpdate, updateHooks{}, id, s.tv(now), max, cooldown <= 0, s.tv(now.Add(-cooldown)))
}

// Finish implements verify.Store: the update is conditional on the status
// being open, so of racing callers exactly one ends the verification, and
// it deletes the pending steps in the same transaction.
func (s *Store) Finish(ctx context.Context, id string, status verify.Status, now time.Time) (verify.VerificationRecord, bool, error) {
	if status.Open() || !status.Valid() {
		return verify.VerificationRecord{}, false, fmt.Errorf("sqlstore: finish: %q is not an ended status (use verified, expired, canceled, max_attempts or failed)", status)
	}
	return s.update(ctx, "finish", finishUpdate, updateHooks{}, id, s.tv(now), string(status))
}

// nextStatus moves an open verification's status forward to a delivery's
// status $2, when the delivery $3 is recorded: pending → sent → delivered,
// never backwards. A sent report for a delivery already recorded as
// something else (a late report after failed) moves nothing: only that
// case can reach a pending verification without the delivery moving, for
// a delivery that is delivered, or sent, has moved the verification on
// already.
var nextStatus = nextStatusOf("$2", "$3")

// nextStatusOf is nextStatus for the delivery status and ID given as SQL
// expressions.
func nextStatusOf(status, deliveryID string) string {
	return `CASE
	WHEN status = 'pending' AND ` + status + ` = 'delivered' THEN ` + status + `
	WHEN status = 'pending' AND ` + status + ` = 'sent'
		AND NOT EXISTS (SELECT 1 FROM deliveries WHERE id = ` + deliveryID + ` AND status <> 'sent') THEN ` + status + `
	WHEN status = 'sent' AND ` + status + ` = 'delivered' THEN ` + status + `
	ELSE status END`
}

// errNoVerification, returned by a write for a verification that does not
// exist, rolls the write back; the caller answers ErrNotFound.
var errNoVerification = errors.New("sqlstore: no such verification")

// deliverySummary is SQLite's summary of verification $1's deliveries,
// which Stats groups by (see migration 0004): a JSON array of [channel,
// status, count] ordered by channel and status.
const deliverySummary = `(SELECT json_group_array(json_array(channel, status, n)) FROM (
	SELECT channel, status, COUNT(*) AS n FROM deliveries WHERE verification_id = $1
	GROUP BY channel, status ORDER BY channel, status))`

// moveDelivery inserts a delivery or moves an existing one forward, as
// verify.DeliveryStatus.MovesTo allows: sent → delivered or failed,
// failed → delivered. The conflict's WHERE is evaluated on the row as
// locked, so racing reports cannot move a delivery backwards.
const moveDelivery = ` ON CONFLICT (id) DO UPDATE SET status = excluded.status, error = excluded.error,
	updated_at = excluded.updated_at,
	provider_id = CASE WHEN excluded.provider_id <> '' THEN excluded.provider_id ELSE deliveries.provider_id END
	WHERE (deliveries.status = 'sent' AND excluded.status IN ('delivered', 'failed'))
		OR (deliveries.status = 'failed' AND excluded.status = 'delivered')`

// RecordDelivery implements verify.Store. On PostgreSQL concurrent calls
// for different verifications share one statement (see pgbatch.go).
func (s *Store) RecordDelivery(ctx context.Context, d verify.DeliveryRecord) (bool, error) {
	if s.pgBatches != nil {
		return s.pgBatches.deliveries.Do(ctx, d)
	}
	return s.recordOne(ctx, d)
}

// recordOne is RecordDelivery's own statement (on SQLite, transaction).
func (s *Store) recordOne(ctx context.Context, d verify.DeliveryRecord) (bool, error) {
	args := []any{d.VerificationID, string(d.Status), d.ID, d.Step, d.Channel, d.From,
		d.ProviderID, d.Error, s.tv(d.CreatedAt), s.tv(d.UpdatedAt)}
	var found, changed bool
	if s.pg() {
		// One statement: the status update, the delivery and the step's
		// completion commit together. The INSERT reads moved, so moved
		// runs first, and yields no row when the verification does not
		// exist; done, which nothing reads, runs last. So the
		// verification's row is locked before anything else, the order in
		// which every other statement takes its locks (Finish, Attempt,
		// ExpireDue: the verification, then its steps), and none of them
		// deadlock with this one. The status CASE is evaluated again under
		// the row lock, so racing deliveries never move it backwards.
		err := s.run().QueryRowContext(ctx, `WITH moved AS (UPDATE verifications SET status = `+nextStatus+` WHERE id = $1 RETURNING id),
			done AS (DELETE FROM pending_steps WHERE verification_id = $1 AND step = $4::integer AND $4::integer >= 0),
			ins AS (INSERT INTO deliveries (`+deliveryCols+`)
				SELECT $3, moved.id, $4::integer, $5::text, $6::text, $2, $7::text, $8::text, $9::timestamptz, $10::timestamptz
				FROM moved`+moveDelivery+` RETURNING 1)
			SELECT EXISTS (SELECT 1 FROM moved), EXISTS (SELECT 1 FROM ins)`, args...).Scan(&found, &changed)
		if err != nil {
			return false, wrap("record delivery", err)
		}
	} else {
		// The delivery first: a write, so the transaction holds the write
		// lock before it reads, whatever the connection's _txlock (New
		// takes any *sql.DB). Then, if it was inserted or moved, one
		// UPDATE of the verification moves its status and its delivery
		// summary (which must count the delivery just written) and says
		// whether it exists; a delivery for no verification is rolled
		// back with the savepoint.
		err := s.inTx(ctx, func(tx querier) error {
			res, err := tx.ExecContext(ctx, `INSERT INTO deliveries (`+deliveryCols+`)
				VALUES ($3, $1, $4, $5, $6, $2, $7, $8, $9, $10)`+moveDelivery, args...)
			if err != nil {
				if sqliteForeignKey(err) {
					return errNoVerification // a new delivery for no verification
				}
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if changed = n > 0; changed {
				// nextStatus's check for an earlier delivery finds the one
				// just written: a sent one was inserted, as nothing moves
				// to sent.
				res, err = tx.ExecContext(ctx, `UPDATE verifications SET status = `+nextStatus+`,
					delivery_summary = `+deliverySummary+`, delivery_steps = delivery_steps | $4 WHERE id = $1`,
					d.VerificationID, string(d.Status), d.ID, stepBit(d.Step))
				if err == nil {
					n, err = res.RowsAffected()
				}
			} else {
				n = 0
				err = tx.QueryRowContext(ctx, `SELECT count(*) FROM verifications WHERE id = $1`, d.VerificationID).Scan(&n)
			}
			switch {
			case err != nil:
				return err
			case n == 0:
				return errNoVerification
			}
			found = true
			if d.Step >= 0 { // a step with a recorded delivery is done
				_, err = tx.ExecContext(ctx, `DELETE FROM pending_steps WHERE verification_id = $1 AND step = $2`, d.VerificationID, d.Step)
			}
			return err
		})
		if errors.Is(err, errNoVerification) {
			found, changed, err = false, false, nil
		}
		if err != nil {
			return false, wrap("record delivery", err)
		}
	}
	if !found {
		return false, notFound("record delivery", "verification", d.VerificationID)
	}
	return changed, nil
}

// stepBit is step's bit in SQLite's delivery_steps (see migration
// delivery_steps): bit s for step s, bit 30 for a Resend (step -1).
func stepBit(step int) int64 {
	switch {
	case step < 0:
		return 1 << resendBit
	case step >= resendBit: // beyond any flow's steps: not counted
		return 0
	}
	return 1 << step
}

// resendBit is delivery_steps' bit for Resends.
const resendBit = 30

// ExpireDue implements verify.Store.
func (s *Store) ExpireDue(ctx context.Context, now time.Time, limit int) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	const (
		set    = `UPDATE verifications SET status = 'expired', ended_at = $1, sealed_code = NULL WHERE `
		due    = `SELECT id FROM verifications WHERE ` + isOpen + ` AND expires_at <= $1 ORDER BY expires_at LIMIT $2`
		sqlite = set + isOpen + ` AND id IN (` + due + `) RETURNING id`
	)
	var ids []string
	if s.pg() {
		// The rows are chosen once (MATERIALIZED; a plan that scanned the
		// locking subquery again would skip the rows just updated and take
		// more than limit), and rows another instance is finishing are
		// skipped, not waited for. NO KEY UPDATE is the lock the UPDATE
		// takes anyway.
		rows, err := s.run().QueryContext(ctx, `WITH due AS MATERIALIZED (`+due+` FOR NO KEY UPDATE SKIP LOCKED),
			v AS (`+set+isOpen+` AND id IN (SELECT id FROM due) RETURNING id),
			p AS (DELETE FROM pending_steps WHERE verification_id IN (SELECT id FROM v))
			SELECT id FROM v`, s.tv(now), limit)
		if err == nil {
			ids, err = scanStrings(rows)
		}
		return ids, wrap("expire due", err)
	}
	err := s.inTx(ctx, func(tx querier) error {
		rows, err := tx.QueryContext(ctx, sqlite, s.tv(now), limit)
		if err != nil {
			return err
		}
		if ids, err = scanStrings(rows); err != nil {
			return err
		}
		return deleteEach(ctx, tx, `DELETE FROM pending_steps WHERE verification_id = $1`, ids)
	})
	if err != nil {
		return nil, wrap("expire due", err)
	}
	return ids, nil
}

// Purge implements verify.Store. Deliveries and pending steps go with
// their verification: on PostgreSQL by a trigger on the DELETE (see
// migration 0007), on SQLite by ON DELETE CASCADE and also explicitly, in
// case the connection has foreign keys off. Counters are left alone: they
// have PurgeCounters.
func (s *Store) Purge(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	return s.purgeVerifications(ctx, before, limit)
}

func (s *Store) purgeVerifications(ctx context.Context, before time.Time, limit int) (int, error) {
	const ended = `SELECT id FROM verifications WHERE ended_at < $1 ORDER BY ended_at LIMIT $2`
	if s.pg() {
		// Chosen once, as in ExpireDue.
		res, err := s.run().ExecContext(ctx, `WITH old AS MATERIALIZED (`+ended+` FOR UPDATE SKIP LOCKED)
			DELETE FROM verifications WHERE id IN (SELECT id FROM old)`, s.tv(before), limit)
		if err != nil {
			return 0, wrap("purge", err)
		}
		n, err := res.RowsAffected()
		return int(n), wrap("purge", err)
	}
	var ids []string
	err := s.inTx(ctx, func(tx querier) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM verifications WHERE id IN (`+ended+`) RETURNING id`, s.tv(before), limit)
		if err != nil {
			return err
		}
		if ids, err = scanStrings(rows); err != nil {
			return err
		}
		if err := deleteEach(ctx, tx, `DELETE FROM deliveries WHERE verification_id = $1`, ids); err != nil {
			return err
		}
		return deleteEach(ctx, tx, `DELETE FROM pending_steps WHERE verification_id = $1`, ids)
	})
	if err != nil {
		return 0, wrap("purge", err)
	}
	return len(ids), nil
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// deleteEach runs a one-parameter statement once per ID.
func deleteEach(ctx context.Context, q querier, query string, ids []string) error {
	for _, id := range ids {
		if _, err := q.ExecContext(ctx, query, id); err != nil {
			return err
		}
	}
	return nil
}
