package verify_test

import (
	"context"
	"sync"
	"time"

	"github.com/openverify/verify"
)

// faultyStore wraps a Store and fails the operations it is told to, either
// before the call (nothing happens) or after it (the call took effect, as
// when a connection is lost during the commit). The rule for "*" applies
// to every operation without a rule of its own.
type faultyStore struct {
	verify.Store

	mu    sync.Mutex
	rules map[string]*fault
	calls map[string]int
}

// fault is one rule: err, returned before or after the operation, the next
// times calls (0: every call) for which when (nil: every call) holds.
type fault struct {
	err   error
	after bool
	times int
	when  func(arg any) bool
}

func newFaultyStore(s verify.Store) *faultyStore {
	return &faultyStore{Store: s, rules: map[string]*fault{}, calls: map[string]int{}}
}

// fail sets the rule for op ("*" for every operation).
func (s *faultyStore) fail(op string, f fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules[op] = &f
}

// heal removes every rule.
func (s *faultyStore) heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rules = map[string]*fault{}
}

// count returns how many times op was called.
func (s *faultyStore) count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// hit returns the error op fails with at this point (after or before the
// operation), and counts the call before it.
func (s *faultyStore) hit(op string, after bool, arg any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !after {
		s.calls[op]++
	}
	key := op
	f, ok := s.rules[key]
	if !ok {
		key = "*"
		f, ok = s.rules[key]
	}
	if !ok || f.after != after || (f.when != nil && !f.when(arg)) {
		return nil
	}
	if f.times > 0 {
		f.times--
		if f.times == 0 {
			delete(s.rules, key)
		}
	}
	return f.err
}

func do[T any](s *faultyStore, op string, arg any, fn func() (T, error)) (T, error) {
	var zero T
	if err := s.hit(op, false, arg); err != nil {
		return zero, err
	}
	v, err := fn()
	if err == nil {
		if err := s.hit(op, true, arg); err != nil {
			return zero, err
		}
	}
	return v, err
}

func do0(s *faultyStore, op string, arg any, fn func() error) error {
	_, err := do(s, op, arg, func() (struct{}, error) { return struct{}{}, fn() })
	return err
}

type recFlag struct {
	v  verify.VerificationRecord
	ok bool
}

func do2(s *faultyStore, op string, arg any, fn func() (verify.VerificationRecord, bool, error)) (verify.VerificationRecord, bool, error) {
	r, err := do(s, op, arg, func() (recFlag, error) {
		v, ok, err := fn()
		return recFlag{v, ok}, err
	})
	return r.v, r.ok, err
}

func (s *faultyStore) CreateFlow(ctx context.Context, f verify.Flow) error {
	return do0(s, "CreateFlow", f, func() error { return s.Store.CreateFlow(ctx, f) })
}
func (s *faultyStore) UpdateFlow(ctx context.Context, f verify.Flow) error {
	return do0(s, "UpdateFlow", f, func() error { return s.Store.UpdateFlow(ctx, f) })
}
func (s *faultyStore) DeleteFlow(ctx context.Context, id string) error {
	return do0(s, "DeleteFlow", id, func() error { return s.Store.DeleteFlow(ctx, id) })
}
func (s *faultyStore) GetFlow(ctx context.Context, id string) (verify.Flow, error) {
	return do(s, "GetFlow", id, func() (verify.Flow, error) { return s.Store.GetFlow(ctx, id) })
}
func (s *faultyStore) DefaultFlow(ctx context.Context) (verify.Flow, error) {
	return do(s, "DefaultFlow", nil, func() (verify.Flow, error) { return s.Store.DefaultFlow(ctx) })
}
func (s *faultyStore) ListFlows(ctx context.Context) ([]verify.Flow, error) {
	return do(s, "ListFlows", nil, func() ([]verify.Flow, error) { return s.Store.ListFlows(ctx) })
}
func (s *faultyStore) CreateTemplate(ctx context.Context, t verify.Template) error {
	return do0(s, "CreateTemplate", t, func() error { return s.Store.CreateTemplate(ctx, t) })
}
func (s *faultyStore) SetTemplateStatus(ctx context.Context, id string, st verify.TemplateStatus, reason string) error {
	return do0(s, "SetTemplateStatus", id, func() error { return s.Store.SetTemplateStatus(ctx, id, st, reason) })
}
func (s *faultyStore) GetTemplate(ctx context.Context, id string) (verify.Template, error) {
	return do(s, "GetTemplate", id, func() (verify.Template, error) { return s.Store.GetTemplate(ctx, id) })
}
func (s *faultyStore) ListTemplates(ctx context.Context) ([]verify.Template, error) {
	return do(s, "ListTemplates", nil, func() ([]verify.Template, error) { return s.Store.ListTemplates(ctx) })
}
func (s *faultyStore) CreateVerification(ctx context.Context, v verify.VerificationRecord, steps []verify.PendingStep) error {
	return do0(s, "CreateVerification", v, func() error { return s.Store.CreateVerification(ctx, v, steps) })
}
func (s *faultyStore) GetVerification(ctx context.Context, id string) (verify.VerificationRecord, error) {
	return do(s, "GetVerification", id, func() (verify.VerificationRecord, error) { return s.Store.GetVerification(ctx, id) })
}
func (s *faultyStore) Attempt(ctx context.Context, id string, hashes [][]byte, now time.Time) (verify.VerificationRecord, bool, error) {
	return do2(s, "Attempt", id, func() (verify.VerificationRecord, bool, error) { return s.Store.Attempt(ctx, id, hashes, now) })
}
func (s *faultyStore) CountSend(ctx context.Context, id string, max int, cooldown time.Duration, now time.Time) (verify.VerificationRecord, bool, error) {
	return do2(s, "CountSend", id, func() (verify.VerificationRecord, bool, error) {
		return s.Store.CountSend(ctx, id, max, cooldown, now)
	})
}
func (s *faultyStore) Finish(ctx context.Context, id string, st verify.Status, now time.Time) (verify.VerificationRecord, bool, error) {
	return do2(s, "Finish", id, func() (verify.VerificationRecord, bool, error) { return s.Store.Finish(ctx, id, st, now) })
}
func (s *faultyStore) RecordDelivery(ctx context.Context, d verify.DeliveryRecord) (bool, error) {
	return do(s, "RecordDelivery", d, func() (bool, error) { return s.Store.RecordDelivery(ctx, d) })
}
func (s *faultyStore) ExpireDue(ctx context.Context, now time.Time, limit int) ([]string, error) {
	return do(s, "ExpireDue", nil, func() ([]string, error) { return s.Store.ExpireDue(ctx, now, limit) })
}
func (s *faultyStore) Purge(ctx context.Context, before time.Time, limit int) (int, error) {
	return do(s, "Purge", nil, func() (int, error) { return s.Store.Purge(ctx, before, limit) })
}
func (s *faultyStore) FindByIdempotencyKey(ctx context.Context, key string) (verify.VerificationRecord, error) {
	return do(s, "FindByIdempotencyKey", key, func() (verify.VerificationRecord, error) {
		return s.Store.FindByIdempotencyKey(ctx, key)
	})
}
func (s *faultyStore) FindOpen(ctx context.Context, flowID string, to verify.Recipient, now time.Time) ([]verify.VerificationRecord, error) {
	return do(s, "FindOpen", to, func() ([]verify.VerificationRecord, error) { return s.Store.FindOpen(ctx, flowID, to, now) })
}
func (s *faultyStore) ClaimDue(ctx context.Context, now, leaseUntil time.Time, limit int) ([]verify.PendingStep, error) {
	return do(s, "ClaimDue", nil, func() ([]verify.PendingStep, error) { return s.Store.ClaimDue(ctx, now, leaseUntil, limit) })
}
func (s *faultyStore) Reschedule(ctx context.Context, now time.Time, steps []verify.PendingStep) ([]verify.PendingStep, error) {
	return do(s, "Reschedule", steps, func() ([]verify.PendingStep, error) { return s.Store.Reschedule(ctx, now, steps) })
}
func (s *faultyStore) ReleaseStep(ctx context.Context, p verify.PendingStep, until time.Time, sent bool) (bool, error) {
	return do(s, "ReleaseStep", p, func() (bool, error) { return s.Store.ReleaseStep(ctx, p, until, sent) })
}
func (s *faultyStore) CompleteStep(ctx context.Context, id string, step int) error {
	return do0(s, "CompleteStep", id, func() error { return s.Store.CompleteStep(ctx, id, step) })
}

type dueAt struct {
	t  time.Time
	ok bool
}

func (s *faultyStore) NextDue(ctx context.Context) (time.Time, bool, error) {
	r, err := do(s, "NextDue", nil, func() (dueAt, error) {
		t, ok, err := s.Store.NextDue(ctx)
		return dueAt{t, ok}, err
	})
	return r.t, r.ok, err
}
func (s *faultyStore) Take(ctx context.Context, now time.Time, takes []verify.Take) (verify.Taken, error) {
	return do(s, "Take", takes, func() (verify.Taken, error) { return s.Store.Take(ctx, now, takes) })
}
func (s *faultyStore) GetCounter(ctx context.Context, key string, now time.Time) (verify.Counter, error) {
	return do(s, "GetCounter", key, func() (verify.Counter, error) { return s.Store.GetCounter(ctx, key, now) })
}
func (s *faultyStore) DeleteCounter(ctx context.Context, key string) error {
	return do0(s, "DeleteCounter", key, func() error { return s.Store.DeleteCounter(ctx, key) })
}
func (s *faultyStore) PurgeCounters(ctx context.Context, before time.Time, limit int) (int, error) {
	return do(s, "PurgeCounters", nil, func() (int, error) { return s.Store.PurgeCounters(ctx, before, limit) })
}

// sqlStateError is a driver error with an SQLSTATE, as pgx's
// *pgconn.PgError is.
type sqlStateError struct{ code, msg string }

func (e *sqlStateError) Error() string    { return "ERROR: " + e.msg + " (SQLSTATE " + e.code + ")" }
func (e *sqlStateError) SQLState() string { return e.code }
