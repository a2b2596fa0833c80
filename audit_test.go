package verify_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func TestAudit(t *testing.T) {
	h := newHarness(t)
	e, err := h.eng.Audit(h.ctx, verify.AuditEntry{Actor: " Ana\x07 ", Action: "flow.update", Target: "f1", Detail: "TTL 5m → 10m\nline two\x00", At: start.Add(-time.Hour), ID: "mine"})
	require.NoError(t, err)
	assert.NotEqual(t, "mine", e.ID, "Audit assigns the ID")
	assert.Equal(t, start, e.At, "and the time, from the engine's clock")
	assert.Equal(t, "Ana", e.Actor, "control characters are dropped, spaces trimmed")
	assert.Equal(t, "TTL 5m → 10m\nline two", e.Detail, "a newline stays")

	for _, c := range []struct {
		e     verify.AuditEntry
		param string
		code  string
	}{
		{verify.AuditEntry{Action: "a"}, "actor", verify.ErrMissingField.Code},
		{verify.AuditEntry{Actor: "\x01", Action: "a"}, "actor", verify.ErrMissingField.Code},
		{verify.AuditEntry{Actor: "Ana"}, "action", verify.ErrMissingField.Code},
		{verify.AuditEntry{Actor: strings.Repeat("é", 65), Action: "a"}, "actor", verify.ErrInvalidParameter.Code},
		{verify.AuditEntry{Actor: "Ana", Action: "a", Target: strings.Repeat("x", 257)}, "target", verify.ErrInvalidParameter.Code},
		{verify.AuditEntry{Actor: "Ana", Action: "a", Detail: strings.Repeat("x", 1025)}, "detail", verify.ErrInvalidParameter.Code},
		{verify.AuditEntry{Actor: "Ana\xff", Action: "a"}, "actor", verify.ErrInvalidParameter.Code},
	} {
		_, err := h.eng.Audit(h.ctx, c.e)
		ve, ok := verify.AsError(err)
		require.True(t, ok, "%+v: %v", c.e, err)
		assert.Equal(t, c.code, ve.Code, "%+v", c.e)
		assert.Equal(t, c.param, ve.Parameter, "%+v", c.e)
	}
	page, err := h.eng.AuditLog(h.ctx, verify.AuditQuery{})
	require.NoError(t, err)
	assert.Len(t, page.Entries, 1, "refused entries are not stored")

	// Pages, newest first.
	for i := range 4 {
		h.clock.Add(time.Minute)
		_, err := h.eng.Audit(h.ctx, verify.AuditEntry{Actor: "Bo", Action: "verification.cancel", Target: string(rune('a' + i))})
		require.NoError(t, err)
	}
	var targets []string
	q := verify.AuditQuery{Actor: "Bo", Limit: 3}
	for {
		page, err := h.eng.AuditLog(h.ctx, q)
		require.NoError(t, err)
		for _, e := range page.Entries {
			targets = append(targets, e.Target)
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	assert.Equal(t, []string{"d", "c", "b", "a"}, targets)
	_, err = h.eng.AuditLog(h.ctx, verify.AuditQuery{Limit: 1001})
	assert.True(t, errors.Is(err, verify.ErrInvalidParameter))
	_, err = h.eng.AuditLog(h.ctx, verify.AuditQuery{Cursor: "not-a-cursor"})
	assert.True(t, errors.Is(err, verify.ErrInvalidParameter))

	// Purge deletes entries older than the retention period.
	eng := h.engine(verify.WithRetention(3 * time.Minute))
	h.clock.Add(time.Minute) // now start+5m: entries at start and start+1m are older than 3m
	_, err = eng.Purge(h.ctx)
	require.NoError(t, err)
	page, err = h.eng.AuditLog(h.ctx, verify.AuditQuery{})
	require.NoError(t, err)
	assert.Len(t, page.Entries, 3)
}

// noAudit is a Store without the AuditStore ability.
type noAudit struct{ verify.Store }

func TestAuditUnsupported(t *testing.T) {
	h := newHarness(t)
	eng := h.engineOn(noAudit{h.store})
	_, err := eng.Audit(h.ctx, verify.AuditEntry{Actor: "Ana", Action: "a"})
	assert.ErrorIs(t, err, verify.ErrAuditUnsupported)
	_, err = eng.AuditLog(h.ctx, verify.AuditQuery{})
	assert.ErrorIs(t, err, verify.ErrAuditUnsupported)
	_, err = eng.Purge(h.ctx)
	assert.NoError(t, err, "Purge skips what the store does not keep")
}
