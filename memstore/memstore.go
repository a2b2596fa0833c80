// Package memstore is an in-memory verify.Store, for tests and for a single
// process that can afford to lose its verifications on restart.
//
// Verifications are sharded by ID so concurrent Sends and Checks rarely
// contend; expiry, pending steps and retention use heaps, so ProcessDue and
// Purge cost what they remove, not what is stored. Nothing runs in the
// background: the engine's ProcessDue and Purge (or Run) do the work.
package memstore

import (
	"context"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/openverify/verify"
)

const shardCount = 64

// Store is an in-memory verify.Store. The zero value is not usable; call
// New. A Store is safe for concurrent use.
type Store struct {
	shards [shardCount]shard

	catalogMu sync.RWMutex
	flows     map[string]verify.Flow
	templates map[string]verify.Template
	defaultID string

	stepsMu sync.Mutex
	steps   map[stepKey]*pending
	ready   pendingHeap

	expiryMu sync.Mutex
	expiries timeHeap // open verifications by ExpiresAt

	endedMu sync.Mutex
	ended   timeHeap // ended verifications by EndedAt

	idx      index
	counters [shardCount]counterShard

	auditMu sync.Mutex
	audit   []verify.AuditEntry // oldest first: At, then ID
}

var _ verify.Store = (*Store)(nil)

type shard struct {
	mu sync.Mutex
	// recs holds the open verifications (and those a caller is ending),
	// done the ended ones, compact (see ended.go).
	recs map[string]*verify.VerificationRecord
	done map[string]endedRec
	// steps shares the steps of verifications by flow ID.
	steps map[string][]verify.Step
	// free holds records of ended verifications for newRecord to reuse:
	// an open verification's record is the largest allocation of a pair.
	free []*verify.VerificationRecord
	// newest is the greatest ID ever stored here (in byte order): the
	// shard holds no greater one. The engine's IDs are time-ordered, so
	// most new ones are greater, and has answers them without looking
	// them up in done, which holds every retained verification.
	newest string
}

// maxFreeRecords bounds a shard's free list.
const maxFreeRecords = 32

// newRecord returns a zero record for an open verification. The caller
// holds the shard's lock.
func (sh *shard) newRecord() *verify.VerificationRecord {
	if n := len(sh.free); n > 0 {
		r := sh.free[n-1]
		sh.free[n-1] = nil
		sh.free = sh.free[:n-1]
		return r
	}
	return new(verify.VerificationRecord)
}

// release takes back the record of a verification that ended (see end),
// once the caller has copied what it returns: nothing else points to it.
// The caller holds the shard's lock.
func (sh *shard) release(r *verify.VerificationRecord) {
	if len(sh.free) < maxFreeRecords {
		*r = verify.VerificationRecord{}
		sh.free = append(sh.free, r)
	}
}

// get returns the verification id as a record: the stored one (in recs,
// where the caller may change it through the pointer) while it is open,
// a copy from done once it has ended. The caller holds the shard's lock.
func (sh *shard) get(id string) (r *verify.VerificationRecord, ok bool) {
	if r, ok := sh.recs[id]; ok {
		return r, true
	}
	if e, ok := sh.done[id]; ok {
		rec := e.expand(id)
		return &rec, true
	}
	return nil, false
}

// has reports whether the shard holds the verification id.
func (sh *shard) has(id string) bool {
	if id > sh.newest {
		return false
	}
	if _, open := sh.recs[id]; open {
		return true
	}
	_, ended := sh.done[id]
	return ended
}

// New returns an empty Store.
func New() *Store {
	s := &Store{
		flows:     make(map[string]verify.Flow),
		templates: make(map[string]verify.Template),
		steps:     make(map[stepKey]*pending),
	}
	for i := range s.shards {
		s.shards[i].recs = make(map[string]*verify.VerificationRecord)
		s.shards[i].done = make(map[string]endedRec)
		s.counters[i].m = make(map[string]verify.Counter)
	}
	s.idx.byKey = make(map[string]string)
	s.idx.open = make(map[openKey]openSet)
	s.idx.exclusive = make(map[openKey]string)
	return s
}

func (s *Store) shard(id string) *shard { return &s.shards[shardIndex(id)] }

// shardIndex returns the shard, of shardCount, that holds the verification
// or counter named key.
func shardIndex(key string) int {
	// FNV-1a over the key.
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % shardCount)
}

func ctxErr(ctx context.Context) error { return ctx.Err() }

// CreateFlow implements verify.Store.
func (s *Store) CreateFlow(ctx context.Context, f verify.Flow) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.catalogMu.Lock()
	defer s.catalogMu.Unlock()
	if _, ok := s.flows[f.ID]; ok {
		return errExists("flow", f.ID)
	}
	s.putFlow(f)
	return nil
}

// UpdateFlow implements verify.Store.
func (s *Store) UpdateFlow(ctx context.Context, f verify.Flow) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.catalogMu.Lock()
	defer s.catalogMu.Unlock()
	if _, ok := s.flows[f.ID]; !ok {
		return verify.ErrNotFound
	}
	if s.defaultID == f.ID && !f.Default {
		s.defaultID = ""
	}
	s.putFlow(f)
	return nil
}

// putFlow stores a copy of f and keeps at most one default. Callers hold
// catalogMu.
func (s *Store) putFlow(f verify.Flow) {
	f.Steps = slices.Clone(f.Steps)
	f.AllowedIPs = slices.Clone(f.AllowedIPs)
	f.AllowedCountries = slices.Clone(f.AllowedCountries)
	f.DeniedCountries = slices.Clone(f.DeniedCountries)
	f.DeniedNumberTypes = slices.Clone(f.DeniedNumberTypes)
	if f.Default {
		if old, ok := s.flows[s.defaultID]; ok && old.ID != f.ID {
			old.Default = false
			s.flows[old.ID] = old
		}
		s.defaultID = f.ID
	}
	s.flows[f.ID] = f
}

// DeleteFlow implements verify.Store.
func (s *Store) DeleteFlow(ctx context.Context, id string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.catalogMu.Lock()
	defer s.catalogMu.Unlock()
	if _, ok := s.flows[id]; !ok {
		return verify.ErrNotFound
	}
	delete(s.flows, id)
	if s.defaultID == id {
		s.defaultID = ""
	}
	return nil
}

// GetFlow implements verify.Store.
func (s *Store) GetFlow(ctx context.Context, id string) (verify.Flow, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.Flow{}, err
	}
	s.catalogMu.RLock()
	defer s.catalogMu.RUnlock()
	f, ok := s.flows[id]
	if !ok {
		return verify.Flow{}, verify.ErrNotFound
	}
	return f, nil
}

// DefaultFlow implements verify.Store.
func (s *Store) DefaultFlow(ctx context.Context) (verify.Flow, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.Flow{}, err
	}
	s.catalogMu.RLock()
	defer s.catalogMu.RUnlock()
	f, ok := s.flows[s.defaultID]
	if !ok {
		return verify.Flow{}, verify.ErrNotFound
	}
	return f, nil
}

// ListFlows implements verify.Store.
func (s *Store) ListFlows(ctx context.Context) ([]verify.Flow, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	s.catalogMu.RLock()
	out := make([]verify.Flow, 0, len(s.flows))
	for _, f := range s.flows {
		out = append(out, f)
	}
	s.catalogMu.RUnlock()
	sortOldestFirst(out, func(x *verify.Flow) (time.Time, string) { return x.CreatedAt, x.ID })
	return out, nil
}

// CreateTemplate implements verify.Store.
func (s *Store) CreateTemplate(ctx context.Context, t verify.Template) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.catalogMu.Lock()
	defer s.catalogMu.Unlock()
	if _, ok := s.templates[t.ID]; ok {
		return errExists("template", t.ID)
	}
	s.templates[t.ID] = t
	return nil
}

// SetTemplateStatus implements verify.Store.
func (s *Store) SetTemplateStatus(ctx context.Context, id string, status verify.TemplateStatus, reason string) error {
	if err := ctxErr(ctx); err != nil {
		return err
	}
	s.catalogMu.Lock()
	defer s.catalogMu.Unlock()
	t, ok := s.templates[id]
	if !ok {
		return verify.ErrNotFound
	}
	t.Status, t.Reason = status, reason
	s.templates[id] = t
	return nil
}

// GetTemplate implements verify.Store.
func (s *Store) GetTemplate(ctx context.Context, id string) (verify.Template, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.Template{}, err
	}
	s.catalogMu.RLock()
	defer s.catalogMu.RUnlock()
	t, ok := s.templates[id]
	if !ok {
		return verify.Template{}, verify.ErrNotFound
	}
	return t, nil
}

// ListTemplates implements verify.Store.
func (s *Store) ListTemplates(ctx context.Context) ([]verify.Template, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	s.catalogMu.RLock()
	out := make([]verify.Template, 0, len(s.templates))
	for _, t := range s.templates {
		out = append(out, t)
	}
	s.catalogMu.RUnlock()
	sortOldestFirst(out, func(x *verify.Template) (time.Time, string) { return x.CreatedAt, x.ID })
	return out, nil
}

// sortOldestFirst sorts by creation time, ties by ID.
func sortOldestFirst[T any](xs []T, key func(*T) (time.Time, string)) {
	sort.Slice(xs, func(i, j int) bool {
		ti, idi := key(&xs[i])
		tj, idj := key(&xs[j])
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return idi < idj
	})
}

type existsError struct{ kind, id string }

func (e *existsError) Error() string { return "memstore: " + e.kind + " " + e.id + " already exists" }

func errExists(kind, id string) error { return &existsError{kind, id} }

// timeHeap is a binary min-heap of verification IDs by a time. It is
// typed (not container/heap) so that pushing allocates nothing beyond the
// slice's growth.
type timeHeap []timeEntry

// timeEntry's time is in nanoseconds (see nanos): a time.Time would make
// every entry 16 bytes larger, and the heaps hold one per retained
// verification, which the garbage collector scans.
type timeEntry struct {
	at int64
	id string
}

func (h *timeHeap) push(e timeEntry) {
	if len(*h) == cap(*h) {
		// Double, where append grows a large slice by a quarter: the heaps
		// hold an entry per retained verification, and growing them is
		// copying them.
		grown := make(timeHeap, len(*h), max(2*cap(*h), 256))
		copy(grown, *h)
		*h = grown
	}
	*h = append(*h, e)
	a := *h
	i := len(a) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if a[i].at >= a[parent].at {
			break
		}
		a[i], a[parent] = a[parent], a[i]
		i = parent
	}
}

func (h *timeHeap) pop() timeEntry {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a[last] = timeEntry{}
	a = a[:last]
	*h = a
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(a) && a[l].at < a[m].at {
			m = l
		}
		if r < len(a) && a[r].at < a[m].at {
			m = r
		}
		if m == i {
			return top
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
}

// popBefore pops and returns the earliest entry if its time is at or before
// t (inclusive) or strictly before t (!inclusive).
func (h *timeHeap) popBefore(t time.Time, inclusive bool) (timeEntry, bool) {
	if len(*h) == 0 {
		return timeEntry{}, false
	}
	top := (*h)[0]
	if n := nanos(t); top.at > n || (!inclusive && top.at == n) {
		return timeEntry{}, false
	}
	return h.pop(), true
}
