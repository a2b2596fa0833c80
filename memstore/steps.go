package memstore

import (
	"container/heap"
	"context"
	"time"

	"github.com/openverify/verify"
)

type stepKey struct {
	id   string
	step int
}

// pending is a pending step in the ready heap, ordered by when it becomes
// claimable: the later of DueAt and LeaseUntil.
type pending struct {
	verify.PendingStep
	index int
}

func (p *pending) readyAt() time.Time {
	if p.LeaseUntil.After(p.DueAt) {
		return p.LeaseUntil
	}
	return p.DueAt
}

type pendingHeap []*pending

func (h pendingHeap) Len() int { return len(h) }
func (h pendingHeap) Less(i, j int) bool {
	a, b := h[i].readyAt(), h[j].readyAt()
	if !a.Equal(b) {
		return a.Before(b)
	}
	return h[i].DueAt.Before(h[j].DueAt)
}
func (h pendingHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *pendingHeap) Push(x any) {
	p := x.(*pending)
	p.index = len(*h)
	*h = append(*h, p)
}
func (h *pendingHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	p.index = -1
	return p
}

// putStep adds or replaces a step. The caller holds stepsMu.
func (s *Store) putStep(p verify.PendingStep) {
	k := stepKey{p.VerificationID, p.Step}
	if old, ok := s.steps[k]; ok {
		old.PendingStep = p
		heap.Fix(&s.ready, old.index)
		return
	}
	e := &pending{PendingStep: p}
	s.steps[k] = e
	heap.Push(&s.ready, e)
}

// removeStep deletes a step if it exists. The caller holds stepsMu.
func (s *Store) removeStep(k stepKey) {
	if p, ok := s.steps[k]; ok {
		heap.Remove(&s.ready, p.index)
		delete(s.steps, k)
	}
}

// ClaimDue implements verify.Store.
func (s *Store) ClaimDue(ctx context.Context, now, leaseUntil time.Time, limit int) ([]verify.PendingStep, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	s.stepsMu.Lock()
	defer s.stepsMu.Unlock()
	// Claimed steps are popped aside and pushed back after the loop: with
	// leaseUntil <= now a claimed step would still be ready and be claimed
	// again in this same call.
	var claimed []*pending
	for len(claimed) < limit && s.ready.Len() > 0 && !s.ready[0].readyAt().After(now) {
		p := heap.Pop(&s.ready).(*pending)
		p.LeaseUntil = leaseUntil
		p.Tries++
		claimed = append(claimed, p)
	}
	if len(claimed) == 0 {
		return nil, nil
	}
	out := make([]verify.PendingStep, len(claimed))
	for i, p := range claimed {
		heap.Push(&s.ready, p)
		out[i] = p.PendingStep
	}
	return out, nil
}

// Reschedule implements verify.Store.
func (s *Store) Reschedule(ctx context.Context, now time.Time, steps []verify.PendingStep) ([]verify.PendingStep, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	s.stepsMu.Lock()
	defer s.stepsMu.Unlock()
	var out []verify.PendingStep
	for _, p := range steps {
		old, ok := s.steps[stepKey{p.VerificationID, p.Step}]
		if !ok || old.LeaseUntil.After(now) {
			continue
		}
		old.DueAt, old.LeaseUntil = p.DueAt, p.LeaseUntil
		if p.LeaseUntil.After(now) { // a claim
			old.Tries++
		}
		heap.Fix(&s.ready, old.index)
		out = append(out, old.PendingStep)
	}
	return out, nil
}

// ReleaseStep implements verify.Store.
func (s *Store) ReleaseStep(ctx context.Context, p verify.PendingStep, until time.Time, sent bool) (bool, error) {
	if err := ctxErr(ctx); err != nil {
		return false, err
	}
	s.stepsMu.Lock()
	defer s.stepsMu.Unlock()
	old, ok := s.steps[stepKey{p.VerificationID, p.Step}]
	if !ok || !old.LeaseUntil.Equal(p.LeaseUntil) {
		return false, nil
	}
	old.LeaseUntil = until
	if !sent && old.Tries > 0 {
		old.Tries--
	}
	heap.Fix(&s.ready, old.index)
	return true, nil
}

// CompleteStep implements verify.Store.
func (s *Store) CompleteStep(ctx context.Context, verificationID string, step int) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.stepsMu.Lock()
	s.removeStep(stepKey{verificationID, step})
	s.stepsMu.Unlock()
	return nil
}

// NextDue implements verify.Store.
func (s *Store) NextDue(ctx context.Context) (time.Time, bool, error) {
	if err := ctxErr(ctx); err != nil {
		return time.Time{}, false, err
	}
	s.stepsMu.Lock()
	defer s.stepsMu.Unlock()
	if s.ready.Len() == 0 {
		return time.Time{}, false, nil
	}
	return s.ready[0].readyAt(), true, nil
}
