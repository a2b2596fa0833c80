package memstore

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/openverify/verify"
)

// index finds verifications by idempotency key and by (flow, recipient).
type index struct {
	mu        sync.Mutex
	byKey     map[string]string   // idempotency key -> verification ID
	open      map[openKey]openSet // flow and recipient -> open verification IDs
	exclusive map[openKey]string  // flow and recipient -> the open exclusive verification
}

type openKey struct {
	flow, phone, email string
}

// openSet holds the IDs of a flow and recipient's open verifications:
// nearly always one, which it keeps without a map.
type openSet struct {
	one  string // when has is set
	has  bool
	more map[string]struct{} // the others, when there are several
}

func (o *openSet) add(id string) {
	switch {
	case !o.has || o.one == id:
		o.one, o.has = id, true
	default:
		if o.more == nil {
			o.more = make(map[string]struct{}, 1)
		}
		o.more[id] = struct{}{}
	}
}

func (o *openSet) remove(id string) {
	if !o.has || o.one != id {
		delete(o.more, id)
		return
	}
	o.one, o.has = "", false
	for other := range o.more {
		o.one, o.has = other, true
		delete(o.more, other)
		break
	}
}

func (o openSet) empty() bool { return !o.has }

// appendTo appends the IDs to dst.
func (o openSet) appendTo(dst []string) []string {
	if o.has {
		dst = append(dst, o.one)
	}
	for id := range o.more {
		dst = append(dst, id)
	}
	return dst
}

// claim reserves v's idempotency key and, for an open exclusive v, its
// flow and recipient, and indexes v as open, all in one step; when the key
// or the slot is taken it changes nothing and returns ErrDuplicate or
// ErrOpenExists, and when they are free but then decide (if not nil)
// returns an error, it changes nothing and returns that.
func (s *Store) claim(v *verify.VerificationRecord, decide func() error) error {
	k := openKey{v.FlowID, v.To.Phone, v.To.Email}
	open := v.Status.Open()
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	if v.IdempotencyKey != "" {
		if _, taken := s.idx.byKey[v.IdempotencyKey]; taken {
			return verify.ErrDuplicate
		}
	}
	if open && v.Exclusive {
		if _, taken := s.idx.exclusive[k]; taken {
			return verify.ErrOpenExists
		}
	}
	if decide != nil {
		if err := decide(); err != nil {
			return err
		}
	}
	if v.IdempotencyKey != "" {
		s.idx.byKey[v.IdempotencyKey] = v.ID
	}
	if !open {
		return nil
	}
	if v.Exclusive {
		s.idx.exclusive[k] = v.ID
	}
	ids := s.idx.open[k]
	ids.add(v.ID)
	s.idx.open[k] = ids
	return nil
}

// unindexOpen drops an ended verification from the open index, which so
// holds only open verifications. The caller holds v's shard lock.
func (s *Store) unindexOpen(v *verify.VerificationRecord) {
	k := openKey{v.FlowID, v.To.Phone, v.To.Email}
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	if ids, ok := s.idx.open[k]; ok {
		ids.remove(v.ID)
		if ids.empty() {
			delete(s.idx.open, k)
		} else {
			s.idx.open[k] = ids
		}
	}
	if v.Exclusive && s.idx.exclusive[k] == v.ID {
		delete(s.idx.exclusive, k)
	}
}

// unindexKey forgets a purged verification's idempotency key.
func (s *Store) unindexKey(id, key string) {
	if key == "" {
		return
	}
	s.idx.mu.Lock()
	defer s.idx.mu.Unlock()
	if s.idx.byKey[key] == id {
		delete(s.idx.byKey, key)
	}
}

// FindByIdempotencyKey implements verify.Store.
func (s *Store) FindByIdempotencyKey(ctx context.Context, key string) (verify.VerificationRecord, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.VerificationRecord{}, err
	}
	if key == "" {
		return verify.VerificationRecord{}, verify.ErrNotFound
	}
	s.idx.mu.Lock()
	id, ok := s.idx.byKey[key]
	s.idx.mu.Unlock()
	if !ok {
		return verify.VerificationRecord{}, verify.ErrNotFound
	}
	return s.GetVerification(ctx, id)
}

// FindOpen implements verify.Store.
func (s *Store) FindOpen(ctx context.Context, flowID string, to verify.Recipient, now time.Time) ([]verify.VerificationRecord, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	s.idx.mu.Lock()
	ids := s.idx.open[openKey{flowID, to.Phone, to.Email}].appendTo(nil)
	s.idx.mu.Unlock()
	var out []verify.VerificationRecord
	for _, id := range ids {
		sh := s.shard(id)
		sh.mu.Lock()
		r, ok := sh.recs[id]
		if ok && r.Status.Open() && now.Before(r.ExpiresAt) {
			out = append(out, *r)
		}
		sh.mu.Unlock()
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}
