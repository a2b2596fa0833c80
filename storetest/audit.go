package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// The Audit part: verify.AuditStore, for the stores that have it.

var auditTests = []test[verify.AuditStore]{
	{"RoundTrip", testAuditRoundTrip},
	{"Filters", testAuditFilters},
	{"Cursor", testAuditCursor},
	{"Purge", testAuditPurge},
	{"Concurrent", testAuditConcurrent},
	{"CanceledContext", testAuditCanceledContext},
}

// auditEntry is an entry at base+d.
func auditEntry(d time.Duration, actor, action, target string) verify.AuditEntry {
	return verify.AuditEntry{ID: newID(), At: at(d), Actor: actor, Action: action, Target: target, Detail: "detail of " + action}
}

func appendAudit(t *testing.T, s verify.AuditStore, es ...verify.AuditEntry) {
	t.Helper()
	for _, e := range es {
		require.NoError(t, s.AppendAudit(ctx(), e))
	}
}

func listAudit(t *testing.T, s verify.AuditStore, q verify.AuditQuery, after verify.Cursor, limit int) []verify.AuditEntry {
	t.Helper()
	got, err := s.ListAudit(ctx(), q, after, limit)
	require.NoError(t, err)
	return got
}

func auditIDs(es []verify.AuditEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func testAuditRoundTrip(t *testing.T, s verify.AuditStore) {
	assert.Empty(t, listAudit(t, s, verify.AuditQuery{}, verify.Cursor{}, 10), "an empty log")
	a := auditEntry(time.Second, "Ana", "flow.update", "f1")
	a.Detail = "TTL 5m → 10m, «quotes», 'apostrophes'\nand a second line"
	b := auditEntry(3*time.Second, "Bo", "verification.cancel", "")
	c := auditEntry(2*time.Second, "Ana", "sign-in", "") // appended out of order
	appendAudit(t, s, a, b, c)
	got := listAudit(t, s, verify.AuditQuery{}, verify.Cursor{}, 10)
	require.Equal(t, []string{b.ID, c.ID, a.ID}, auditIDs(got), "newest At first, whatever the order of appending")
	for i, want := range []verify.AuditEntry{b, c, a} {
		sameTime(t, want.At, got[i].At, "At")
		got[i].At = want.At
		assert.Equal(t, want, got[i], "every field round-trips")
	}
	assert.Len(t, listAudit(t, s, verify.AuditQuery{}, verify.Cursor{}, 2), 2, "at most limit entries")
}

func testAuditFilters(t *testing.T, s verify.AuditStore) {
	a := auditEntry(time.Second, "Ana", "flow.update", "f1")
	b := auditEntry(2*time.Second, "Bo", "flow.update", "f2")
	c := auditEntry(3*time.Second, "Ana", "template.approve", "t1")
	d := auditEntry(4*time.Second, "Ana", "flow.update", "f2")
	appendAudit(t, s, a, b, c, d)
	for _, tc := range []struct {
		q    verify.AuditQuery
		want []string
	}{
		{verify.AuditQuery{Actor: "Ana"}, []string{d.ID, c.ID, a.ID}},
		{verify.AuditQuery{Action: "flow.update"}, []string{d.ID, b.ID, a.ID}},
		{verify.AuditQuery{Target: "f2"}, []string{d.ID, b.ID}},
		{verify.AuditQuery{Actor: "Ana", Action: "flow.update", Target: "f2"}, []string{d.ID}},
		{verify.AuditQuery{Actor: "ana"}, []string{}},
		{verify.AuditQuery{Action: "flow"}, []string{}},
	} {
		assert.Equal(t, tc.want, auditIDs(listAudit(t, s, tc.q, verify.Cursor{}, 10)), "%+v: exact, case-sensitive matches", tc.q)
	}
}

func testAuditCursor(t *testing.T, s verify.AuditStore) {
	// Two entries share an At: ties go by ID, descending.
	es := []verify.AuditEntry{
		auditEntry(time.Second, "Ana", "a", ""),
		{ID: "b-tie", At: at(2 * time.Second), Actor: "Ana", Action: "b"},
		{ID: "c-tie", At: at(2 * time.Second), Actor: "Ana", Action: "c"},
		auditEntry(3*time.Second, "Bo", "d", ""),
	}
	appendAudit(t, s, es...)
	all := listAudit(t, s, verify.AuditQuery{}, verify.Cursor{}, 10)
	require.Equal(t, []string{es[3].ID, "c-tie", "b-tie", es[0].ID}, auditIDs(all))
	var paged []string
	after := verify.Cursor{}
	for range 10 {
		page := listAudit(t, s, verify.AuditQuery{}, after, 1)
		if len(page) == 0 {
			break
		}
		paged = append(paged, page[0].ID)
		after = verify.Cursor{CreatedAt: page[0].At, ID: page[0].ID}
	}
	assert.Equal(t, auditIDs(all), paged, "paging one at a time visits each entry once, ties included")
	got := listAudit(t, s, verify.AuditQuery{Actor: "Ana"}, verify.Cursor{CreatedAt: at(2 * time.Second), ID: "c-tie"}, 10)
	assert.Equal(t, []string{"b-tie", es[0].ID}, auditIDs(got), "the cursor and a filter together")
}

func testAuditPurge(t *testing.T, s verify.AuditStore) {
	var es []verify.AuditEntry
	for i := range 5 {
		es = append(es, auditEntry(time.Duration(i)*time.Minute, "Ana", "a", fmt.Sprint(i)))
	}
	appendAudit(t, s, es...)
	n, err := s.PurgeAudit(ctx(), at(3*time.Minute), 2)
	require.NoError(t, err)
	assert.Equal(t, 2, n, "at most limit, oldest first")
	n, err = s.PurgeAudit(ctx(), at(3*time.Minute), 10)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "only those before before: At 3m stays")
	n, err = s.PurgeAudit(ctx(), at(3*time.Minute), 0)
	require.NoError(t, err)
	assert.Zero(t, n)
	assert.Equal(t, []string{es[4].ID, es[3].ID}, auditIDs(listAudit(t, s, verify.AuditQuery{}, verify.Cursor{}, 10)))
}

func testAuditConcurrent(t *testing.T, s verify.AuditStore) {
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if err := s.AppendAudit(ctx(), auditEntry(time.Duration(i%4)*time.Second, fmt.Sprint("op", i%3), "a", "")); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Len(t, listAudit(t, s, verify.AuditQuery{}, verify.Cursor{}, 2*n), n, "no entry is lost")
}

func testAuditCanceledContext(t *testing.T, s verify.AuditStore) {
	c, cancel := context.WithCancel(ctx())
	cancel()
	assert.Error(t, s.AppendAudit(c, auditEntry(0, "Ana", "a", "")))
	_, err := s.ListAudit(c, verify.AuditQuery{}, verify.Cursor{}, 10)
	assert.Error(t, err)
	_, err = s.PurgeAudit(c, at(time.Hour), 10)
	assert.Error(t, err)
	assert.Empty(t, listAudit(t, s, verify.AuditQuery{}, verify.Cursor{}, 10), "nothing was appended")
}
