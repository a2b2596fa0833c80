package verify_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// Engine.Allow counts the host's own events through the engine's Limiter,
// apart from the engine's keys.
func TestEngineAllow(t *testing.T) {
	p := verify.NoProtection()
	p.RecipientSends = verify.Rate{Limit: 1, Per: time.Hour}
	h := newHarness(t, verify.WithProtection(p))
	h.flow(verify.Step{Channel: "sms"})
	r := verify.Rate{Limit: 2, Per: time.Minute}
	for i := range 2 {
		a, err := h.eng.Allow(h.ctx, "send:to:+4791234567", r)
		require.NoError(t, err)
		assert.True(t, a.OK, "event %d", i)
	}
	a, err := h.eng.Allow(h.ctx, "send:to:+4791234567", r)
	require.NoError(t, err)
	assert.False(t, a.OK)
	assert.Equal(t, 30*time.Second, a.RetryAfter)
	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4791234567"}})
	assert.NoError(t, err, "the host's key is not the engine's, whatever its name")

	a, err = h.eng.Allow(h.ctx, "k", verify.Rate{Limit: -1})
	require.NoError(t, err)
	assert.True(t, a.OK, "a rate that is off allows")
	_, err = h.eng.Allow(h.ctx, "", r)
	assert.ErrorIs(t, err, verify.ErrMissingField)
}
