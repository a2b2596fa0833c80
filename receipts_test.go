package verify_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func TestReportDeliveryDelivered(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: time.Minute})
	v, _ := h.send()
	m, _ := h.sms.Last()
	h.clock.Add(3 * time.Second)
	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryDelivered, ""))
	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusDelivered, got.Status)
	assert.Equal(t, verify.DeliveryDelivered, got.Deliveries[0].Status)
	assert.Equal(t, start.Add(3*time.Second), got.Deliveries[0].UpdatedAt)

	// Repeated and late "sent" reports change nothing.
	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryDelivered, ""))
	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliverySent, ""))
	got, _ = h.eng.Get(h.ctx, v.ID)
	assert.Equal(t, verify.DeliveryDelivered, got.Deliveries[0].Status)
}

func TestReportDeliveryFailedSendsNextStepAtOnce(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 2 * time.Minute},
		verify.Step{Channel: "voice", After: time.Minute})
	v, code := h.send()
	m, _ := h.sms.Last()
	h.clock.Add(5 * time.Second)
	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryFailed, "30008 unknown error"))
	require.Equal(t, 1, h.email.Len(), "an undelivered receipt sends the next step immediately")
	em, _ := h.email.Last()
	assert.Equal(t, code, em.Code)
	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, "30008 unknown error", got.Deliveries[0].Error)
	assert.Equal(t, verify.DeliveryFailed, got.Deliveries[0].Status)

	// The step after keeps its interval from the step brought forward.
	h.clock.Add(59 * time.Second)
	assert.Equal(t, 0, h.processDue())
	h.clock.Add(time.Second)
	assert.Equal(t, 1, h.processDue())
	assert.Equal(t, 1, h.voice.Len())
}

func TestReportDeliveryFailedOnLastStepEndsVerification(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	m, _ := h.sms.Last()
	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryFailed, "undelivered"))
	got, err := h.eng.Get(h.ctx, v.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusFailed, got.Status)
	_, err = h.check(v.ID, code)
	requireCode(t, err, verify.ErrDeliveryFailed)
}

func TestReportDeliveryErrors(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	v, code := h.send()
	m, _ := h.sms.Last()
	requireCode(t, h.eng.ReportDelivery(h.ctx, m.ID, "read", ""), verify.ErrInvalidParameter)
	requireCode(t, h.eng.ReportDelivery(h.ctx, "", verify.DeliveryDelivered, ""), verify.ErrNotFound)
	requireCode(t, h.eng.ReportDelivery(h.ctx, "nope", verify.DeliveryDelivered, ""), verify.ErrNotFound)
	requireCode(t, h.eng.ReportDelivery(h.ctx, v.ID+"-7", verify.DeliveryDelivered, ""), verify.ErrNotFound)
	requireCode(t, h.eng.ReportDelivery(h.ctx, "4d3d0959-805e-43fa-bece-5815ce0795a2-0", verify.DeliveryDelivered, ""), verify.ErrNotFound)

	// A report after the verification ended is kept but reopens nothing.
	_, err := h.check(v.ID, code)
	require.NoError(t, err)
	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryFailed, "late"))
	got, _ := h.eng.Get(h.ctx, v.ID)
	assert.Equal(t, verify.StatusVerified, got.Status)
	assert.Equal(t, verify.DeliveryFailed, got.Deliveries[0].Status)
}

func TestReportDeliveryForResend(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: time.Minute})
	v, _ := h.send()
	_, err := h.eng.Resend(h.ctx, v.ID)
	require.NoError(t, err)
	m, _ := h.sms.Last()
	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryFailed, "undelivered"))
	assert.Equal(t, 0, h.email.Len(), "a failed resend does not bring the fallback forward")
}
