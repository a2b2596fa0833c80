package memstore

import (
	"context"
	"sort"

	"github.com/openverify/verify"
)

var _ verify.ReportStore = (*Store)(nil)

// matching returns copies of the records q selects.
func (s *Store) matching(q verify.Query) []verify.VerificationRecord {
	var out []verify.VerificationRecord
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, r := range sh.recs {
			if q.Matches(r) {
				out = append(out, *r)
			}
		}
		for id, e := range sh.done {
			if r := e.expand(id); q.Matches(&r) {
				out = append(out, r)
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// ListVerifications implements verify.ReportStore by scanning every record.
func (s *Store) ListVerifications(ctx context.Context, q verify.Query, after verify.Cursor, limit int) ([]verify.VerificationRecord, error) {
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	recs := s.matching(q)
	sort.Slice(recs, func(i, j int) bool { return newer(&recs[i], &recs[j]) })
	start := 0
	if after.ID != "" {
		pos := verify.VerificationRecord{ID: after.ID, CreatedAt: after.CreatedAt}
		start = sort.Search(len(recs), func(i int) bool { return newer(&pos, &recs[i]) })
	}
	recs = recs[start:]
	if len(recs) > limit {
		recs = recs[:limit]
	}
	return recs, nil
}

// newer orders records by CreatedAt descending, then ID descending.
func newer(a, b *verify.VerificationRecord) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.ID > b.ID
}

// Stats implements verify.ReportStore by summarising in memory.
func (s *Store) Stats(ctx context.Context, q verify.Query) (verify.Stats, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.Stats{}, err
	}
	return verify.ComputeStats(s.matching(q)), nil
}

var _ verify.TrendStore = (*Store)(nil)

// Trends implements verify.TrendStore by scanning every record.
func (s *Store) Trends(ctx context.Context, q verify.TrendQuery) (verify.Trends, error) {
	if err := ctxErr(ctx); err != nil {
		return verify.Trends{}, err
	}
	return verify.ComputeTrends(s.matching(q.Query), q), nil
}
