package memstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/openverify/verify"
)

// Records are stored by pointer and returned as struct copies. Their slices
// are never written into once stored: a change replaces the whole slice
// (copy on write), so a returned copy can share them with the store safely.

// CreateVerification implements verify.Store.
func (s *Store) CreateVerification(ctx context.Context, v verify.VerificationRecord, steps []verify.PendingStep) error {
	_, err := s.create(ctx, v, steps, verify.Guard{}, nil)
	return err
}

// CreateVerificationCounting implements verify.CountingStore: the counts
// are applied under the lock of the verification's shard, with it.
func (s *Store) CreateVerificationCounting(ctx context.Context, v verify.VerificationRecord, steps []verify.PendingStep, guard verify.Guard, counts []verify.Count) ([]verify.Counter, error) {
	if err := verify.CheckCounts(counts); err != nil {
		return nil, fmt.Errorf("memstore: %w", err)
	}
	return s.create(ctx, v, steps, guard, counts)
}

func (s *Store) create(ctx context.Context, v verify.VerificationRecord, steps []verify.PendingStep, guard verify.Guard, counts []verify.Count) ([]verify.Counter, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	// One allocation holds copies of the byte slices.
	b := make([]byte, 0, len(v.CodeHash)+len(v.SealedCode)+len(v.RequestHash))
	b = append(append(append(b, v.CodeHash...), v.SealedCode...), v.RequestHash...)
	h, sc := len(v.CodeHash), len(v.CodeHash)+len(v.SealedCode)
	v.CodeHash, v.SealedCode, v.RequestHash = b[:h:h], b[h:sc:sc], b[sc:]
	v.AllowedIPs = slices.Clone(v.AllowedIPs)
	v.Deliveries, v.Checks = nil, nil
	if v.Status.Open() {
		v.EndedAt = time.Time{}
	}
	sh := s.shard(v.ID)
	sh.mu.Lock()
	v.Steps = sh.ownSteps(v.FlowID, v.Steps)
	// The guard's and the counts' counters stay locked until the counts
	// are applied, so that what decided them is what they count on. The
	// guard is decided first, then what CreateVerification refuses (the
	// ID, the idempotency key, the exclusive slot), then the Limits.
	var (
		buf      [8]int
		locked   []int // the counter shards locked
		counters []verify.Counter
		err      error
	)
	if guard.Key != "" || len(counts) > 0 {
		order := buf[:0]
		if guard.Key != "" {
			order = append(order, shardIndex(guard.Key))
		}
		for _, c := range counts {
			order = append(order, shardIndex(c.Key))
		}
		locked = s.lockShards(order)
		err = s.decideGuard(guard, v.CreatedAt)
	}
	if err == nil && sh.has(v.ID) {
		err = errExists("verification", v.ID)
	}
	if err == nil {
		err = s.claim(&v, func() (err error) {
			counters, err = s.decideCounts(counts, v.CreatedAt)
			return err
		})
	}
	if err != nil {
		s.unlockShards(locked)
		sh.mu.Unlock()
		return nil, err
	}
	// Once stored, v is the shard's to change (another caller may end it
	// at once): what the heaps need is read now.
	open, id, expiresAt, endedAt := v.Status.Open(), v.ID, v.ExpiresAt, v.EndedAt
	sh.newest = max(sh.newest, id)
	if open {
		r := sh.newRecord()
		*r = v
		sh.recs[v.ID] = r
	} else {
		sh.done[v.ID] = sh.compactRecord(&v)
	}
	s.stepsMu.Lock()
	for _, p := range steps {
		p.VerificationID = v.ID
		s.putStep(p)
	}
	s.stepsMu.Unlock()
	for i, c := range counts {
		s.counters[shardIndex(c.Key)].m[c.Key] = counters[i]
	}
	s.unlockShards(locked)
	sh.mu.Unlock()
	if open {
		s.expiryMu.Lock()
		s.expiries.push(timeEntry{nanos(expiresAt), id})
		s.expiryMu.Unlock()
	} else {
		s.endedMu.Lock()
		s.ended.push(timeEntry{nanos(endedAt), id})
		s.endedMu.Unlock()
	}
	return counters, nil
}

// GetVerification implements verify.Store.
func (s *Store) GetVerification(ctx context.Context, id string) (verify.VerificationRecord, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.VerificationRecord{}, err
	}
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r, ok := sh.get(id)
	if !ok {
		return verify.VerificationRecord{}, verify.ErrNotFound
	}
	return *r, nil
}

// Attempt implements verify.Store.
func (s *Store) Attempt(ctx context.Context, id string, hashes [][]byte, now time.Time) (verify.VerificationRecord, bool, error) {
	return s.attempt(ctx, id, hashes, now, nil)
}

// AttemptCounting implements verify.CountingStore: the counts are applied
// under the lock of the verification's shard, with the attempt.
func (s *Store) AttemptCounting(ctx context.Context, id string, hashes [][]byte, now time.Time, onVerified []verify.Count) (verify.VerificationRecord, bool, error) {
	if err := verify.CheckAttemptCounts(onVerified); err != nil {
		return verify.VerificationRecord{}, false, fmt.Errorf("memstore: %w", err)
	}
	return s.attempt(ctx, id, hashes, now, onVerified)
}

func (s *Store) attempt(ctx context.Context, id string, hashes [][]byte, now time.Time, onVerified []verify.Count) (verify.VerificationRecord, bool, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.VerificationRecord{}, false, err
	}
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r, ok := sh.get(id)
	if !ok {
		return verify.VerificationRecord{}, false, verify.ErrNotFound
	}
	rec, counted := s.attemptLocked(sh, r, verify.MatchHash(r.CodeHash, hashes), now, onVerified)
	return rec, counted, nil
}

// attemptLocked counts an attempt on r, whose code right matches or not,
// as Attempt does, with onVerified if it verifies; the caller holds the
// lock of sh, r's shard.
func (s *Store) attemptLocked(sh *shard, r *verify.VerificationRecord, right bool, now time.Time, onVerified []verify.Count) (verify.VerificationRecord, bool) {
	if !r.Status.Open() || r.Attempts >= r.MaxAttempts || !now.Before(r.ExpiresAt) {
		return *r, false
	}
	r.Attempts++
	r.Checks = append(r.Checks, verify.CheckAttempt{At: now, Right: right})
	switch {
	case right:
		s.end(r, verify.StatusVerified, now)
		if len(onVerified) > 0 {
			s.applyCounts(onVerified, now)
		}
	case r.Attempts >= r.MaxAttempts:
		s.end(r, verify.StatusMaxAttempts, now)
	default:
		return *r, true
	}
	out := *r
	sh.release(r)
	return out, true
}

// AttemptRight implements verify.GuardedStore: the failure counter is read
// under the lock of the verification's shard, and the attempt counted
// under the same.
func (s *Store) AttemptRight(ctx context.Context, id string, hashes [][]byte, now time.Time, guard verify.Guard, onVerified []verify.Count) (verify.VerificationRecord, bool, verify.Counter, error) {
	if err := verify.CheckAttemptCounts(onVerified); err != nil {
		return verify.VerificationRecord{}, false, verify.Counter{}, fmt.Errorf("memstore: %w", err)
	}
	if err := ctxErr(ctx); err != nil {
		return verify.VerificationRecord{}, false, verify.Counter{}, err
	}
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	failures := s.counter(guard.Key, now)
	if guard.Refuses(failures, now) {
		return verify.VerificationRecord{}, false, failures, nil
	}
	r, ok := sh.get(id)
	if !ok {
		return verify.VerificationRecord{}, false, failures, verify.ErrNotFound
	}
	if !verify.MatchHash(r.CodeHash, hashes) {
		return verify.VerificationRecord{}, false, failures, nil
	}
	rec, verified := s.attemptLocked(sh, r, true, now, onVerified)
	return rec, verified, failures, nil
}

// CountSend implements verify.Store.
func (s *Store) CountSend(ctx context.Context, id string, max int, cooldown time.Duration, now time.Time) (verify.VerificationRecord, bool, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.VerificationRecord{}, false, err
	}
	sh := s.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r, ok := sh.get(id)
	if !ok {
		return verify.VerificationRecord{}, false, verify.ErrNotFound
	}
	if !r.Status.Open() || r.Sends >= max || !now.Before(r.ExpiresAt) || coolingDown(r.LastSentAt, cooldown, now) {
		return *r, false, nil
	}
	r.Sends++
	r.LastSentAt = now
	return *r, true, nil
}

// coolingDown reports whether a send counted at last is less than cooldown
// before now.
func coolingDown(last time.Time, cooldown time.Duration, now time.Time) bool {
	return cooldown > 0 && !last.IsZero() && now.Before(last.Add(cooldown))
}

// Finish implements verify.Store.
func (s *Store) Finish(ctx context.Context, id string, status verify.Status, now time.Time) (verify.VerificationRecord, bool, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.VerificationRecord{}, false, err
	}
	if status.Open() || !status.Valid() {
		return verify.VerificationRecord{}, false, fmt.Errorf("memstore: Finish with %q, which is not an ended status", status)
	}
	sh := s.shard(id)
	sh.mu.Lock()
	r, ok := sh.get(id)
	if !ok {
		sh.mu.Unlock()
		return verify.VerificationRecord{}, false, verify.ErrNotFound
	}
	if !r.Status.Open() {
		out := *r
		sh.mu.Unlock()
		return out, false, nil
	}
	s.end(r, status, now)
	out := *r
	sh.release(r)
	sh.mu.Unlock()
	return out, true, nil
}

// end moves r to an ended status, and from the shard's recs to its done:
// r stays valid for the caller to copy, but no longer changes the store;
// the caller then releases it. The caller holds r's shard lock.
func (s *Store) end(r *verify.VerificationRecord, status verify.Status, now time.Time) {
	r.Status = status
	r.EndedAt = now
	if status == verify.StatusVerified {
		r.VerifiedAt = now
	}
	r.SealedCode = nil
	s.unindexOpen(r)
	s.stepsMu.Lock()
	for i := range r.Steps {
		s.removeStep(stepKey{r.ID, i})
	}
	s.stepsMu.Unlock()
	s.endedMu.Lock()
	s.ended.push(timeEntry{nanos(now), r.ID})
	s.endedMu.Unlock()
	sh := s.shard(r.ID)
	sh.done[r.ID] = sh.compactRecord(r)
	delete(sh.recs, r.ID)
}

var statusRank = map[verify.Status]int{verify.StatusPending: 0, verify.StatusSent: 1, verify.StatusDelivered: 2}

// RecordDelivery implements verify.Store.
func (s *Store) RecordDelivery(ctx context.Context, d verify.DeliveryRecord) (bool, error) {
	if err := ctxErr(ctx); err != nil {
		return false, err
	}
	sh := s.shard(d.VerificationID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	r, live := sh.recs[d.VerificationID]
	var (
		e     endedRec
		ended bool
	)
	if !live { // done holds every retained verification: look there last
		if e, ended = sh.done[d.VerificationID]; !ended {
			return false, verify.ErrNotFound
		}
	}
	if d.Step >= 0 { // a step with a recorded delivery is done, moved or not
		s.stepsMu.Lock()
		s.removeStep(stepKey{d.VerificationID, d.Step})
		s.stepsMu.Unlock()
	}
	if ended {
		e, changed := e.recordDelivery(d.VerificationID, d)
		sh.done[d.VerificationID] = e
		return changed, nil
	}
	i := slices.IndexFunc(r.Deliveries, func(old verify.DeliveryRecord) bool { return old.ID == d.ID })
	// Records handed out share the slice: write a new one, exactly as
	// long as it needs to be.
	n := len(r.Deliveries)
	if i < 0 {
		n++
	}
	ds := make([]verify.DeliveryRecord, len(r.Deliveries), n)
	copy(ds, r.Deliveries)
	if i < 0 {
		ds = append(ds, d)
	} else {
		old := &ds[i]
		if !old.Status.MovesTo(d.Status) {
			return false, nil
		}
		old.Status, old.Error, old.UpdatedAt = d.Status, d.Error, d.UpdatedAt
		if d.ProviderID != "" {
			old.ProviderID = d.ProviderID
		}
	}
	r.Deliveries = ds
	if r.Status.Open() && (d.Status == verify.DeliverySent || d.Status == verify.DeliveryDelivered) {
		next := verify.Status(d.Status)
		if statusRank[next] > statusRank[r.Status] {
			r.Status = next
		}
	}
	return true, nil
}

// ExpireDue implements verify.Store.
func (s *Store) ExpireDue(ctx context.Context, now time.Time, limit int) ([]string, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	var ids []string
	for len(ids) < limit {
		s.expiryMu.Lock()
		e, ok := s.expiries.popBefore(now, true)
		s.expiryMu.Unlock()
		if !ok {
			break
		}
		sh := s.shard(e.id)
		sh.mu.Lock()
		if r, ok := sh.recs[e.id]; ok && r.Status.Open() && !now.Before(r.ExpiresAt) {
			s.end(r, verify.StatusExpired, now)
			sh.release(r)
			ids = append(ids, e.id)
		}
		sh.mu.Unlock()
	}
	return ids, nil
}

// Purge implements verify.Store.
func (s *Store) Purge(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctxErr(ctx); err != nil {
		return 0, err
	}
	n := 0
	for n < limit {
		s.endedMu.Lock()
		e, ok := s.ended.popBefore(before, false)
		s.endedMu.Unlock()
		if !ok {
			break
		}
		sh := s.shard(e.id)
		sh.mu.Lock()
		if r, ok := sh.done[e.id]; ok && r.endedAt().Before(before) {
			delete(sh.done, e.id)
			s.unindexKey(e.id, r.idempotencyKey())
			n++
		}
		sh.mu.Unlock()
	}
	return n, nil
}
