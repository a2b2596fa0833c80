package verify_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func TestFlowCacheAcrossEngines(t *testing.T) {
	h := newHarness(t)
	f := h.flow(verify.Step{Channel: "sms"})
	other := h.engine()
	v1, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, 5, v1.AttemptsRemaining)

	f.MaxAttempts = 3
	_, err = other.UpdateFlow(h.ctx, f)
	require.NoError(t, err)
	v2, err := other.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, 3, v2.AttemptsRemaining, "the engine that changed the flow sees it at once")

	v3, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, 5, v3.AttemptsRemaining, "another engine may use its cached flow for up to the TTL")
	h.clock.Add(5 * time.Second)
	v4, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, 3, v4.AttemptsRemaining, "after the TTL it reads the flow again")

	uncached := h.engine(verify.WithFlowCache(0))
	_, err = uncached.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	f.MaxAttempts = 7
	_, err = other.UpdateFlow(h.ctx, f)
	require.NoError(t, err)
	v5, err := uncached.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, 7, v5.AttemptsRemaining, "WithFlowCache(0) reads the flow on every Send")

	require.NoError(t, other.DeleteFlow(h.ctx, f.ID))
	_, err = other.Send(h.ctx, verify.SendRequest{To: ana})
	requireCode(t, err, verify.ErrNotFound)
	_, err = verify.New(h.store, verify.WithFlowCache(-time.Second))
	assert.Error(t, err)
}

func TestCheckOnAnotherEngine(t *testing.T) {
	h := newHarness(t)
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "ip", AllowedIPs: []string{"192.0.2.0/24"},
		Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana, IPAddress: "192.0.2.1"})
	require.NoError(t, err)
	m, _ := h.sms.Last()

	// An engine that never saw the verification reads it first, and applies
	// the same rules.
	b := h.engine()
	_, err = b.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "198.51.100.1"})
	requireCode(t, err, verify.ErrIPNotAllowed)
	_, err = b.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: wrong(m.Code), IPAddress: "192.0.2.9"})
	requireCode(t, err, verify.ErrInvalidOTP)
	_, err = b.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "192.0.2.9"})
	require.NoError(t, err)

	// Both engines now answer alike for the ended verification.
	for _, e := range []*verify.Engine{h.eng, b, h.engine()} {
		_, err = e.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "192.0.2.9"})
		requireCode(t, err, verify.ErrAlreadyVerified)
		_, err = e.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "203.0.113.1"})
		requireCode(t, err, verify.ErrIPNotAllowed) // protections come before the state
	}
}
