package verify_test

import (
	"fmt"
	"strings"
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

// TestReceiptsOnlyMoveForward: a late "sent" after "failed" changes
// nothing; "delivered" after "failed" records delivered without undoing
// the fallback already sent; "failed" after "delivered" changes nothing.
// Only the reports that change something emit events or move the flow.
func TestReceiptsOnlyMoveForward(t *testing.T) {
	events := &eventLog{}
	h := newHarness(t, verify.WithObserver(events))
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: time.Minute},
		verify.Step{Channel: "voice", After: time.Minute})
	v, _ := h.send()
	m, _ := h.sms.Last()
	status := func() (verify.Status, verify.DeliveryStatus) {
		got, err := h.eng.Get(h.ctx, v.ID)
		require.NoError(t, err)
		return got.Status, got.Deliveries[0].Status
	}

	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryFailed, "undelivered"))
	require.Equal(t, 1, h.email.Len(), "the failure brought the fallback forward")
	_, d := status()
	assert.Equal(t, verify.DeliveryFailed, d)

	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliverySent, ""))
	_, d = status()
	assert.Equal(t, verify.DeliveryFailed, d, "a late sent after failed changes nothing")
	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryFailed, "again"))
	assert.Equal(t, 1, h.email.Len(), "a repeated failure moves nothing on")
	assert.Equal(t, 0, h.voice.Len())

	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryDelivered, ""))
	st, d := status()
	assert.Equal(t, verify.DeliveryDelivered, d, "delivered after failed: the recipient has the code")
	assert.Equal(t, verify.StatusDelivered, st)
	got, _ := h.eng.Get(h.ctx, v.ID)
	require.Len(t, got.Deliveries, 2, "the fallback already sent stays")

	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryFailed, "late failure"))
	st, d = status()
	assert.Equal(t, verify.DeliveryDelivered, d, "failed after delivered changes nothing")
	assert.Equal(t, verify.StatusDelivered, st)
	require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliverySent, ""))
	_, d = status()
	assert.Equal(t, verify.DeliveryDelivered, d, "sent after delivered changes nothing")
	assert.Equal(t, 0, h.voice.Len(), "no report after delivered moved the flow on")

	assert.Equal(t, map[verify.EventType]int{verify.EventCreated: 1, verify.EventSent: 2,
		verify.EventDeliveryFailed: 1, verify.EventDelivered: 1}, countBy(events.types(v.ID)),
		"one event per change, none for reports that changed nothing")
}

// TestReceiptTextsNeverCarryTheCode: a provider's report or error that
// echoes the code, in any form the channels produce (digits, spaced, the
// comma-separated voice spelling, the alphanumeric form in either case),
// reaches the store, the events and the log without it and without a
// marker where it was — also once the verification has ended and only the
// code's HMAC is left to recognise it by.
func TestReceiptTextsNeverCarryTheCode(t *testing.T) {
	forms := func(code string) []string {
		spaced, voice := "", ""
		for i, c := range code {
			if i > 0 {
				spaced += " "
				voice += ", "
			}
			spaced += string(c)
			voice += string(c)
		}
		return []string{code, spaced, voice, strings.ToLower(code)}
	}
	for _, charset := range []verify.Charset{verify.Numeric, verify.Alphanumeric} {
		t.Run(charset.String(), func(t *testing.T) {
			events := &eventLog{}
			h := newHarness(t, verify.WithObserver(events))
			f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "f", Charset: charset, Default: true,
				Steps: []verify.Step{{Channel: "sms"}, {Channel: "email", After: time.Minute}}})
			require.NoError(t, err)
			n := 0
			for _, ended := range []bool{false, true} {
				for form := range 4 {
					n++
					v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID,
						To: verify.Recipient{Phone: fmt.Sprintf("+47123456%02d", n), Email: "a@example.com"}})
					require.NoError(t, err)
					m, _ := h.sms.Last()
					if ended {
						_, err := h.check(v.ID, m.Code)
						require.NoError(t, err)
						rec, err := h.store.GetVerification(h.ctx, v.ID)
						require.NoError(t, err)
						require.Empty(t, rec.SealedCode, "the sealed copy is erased")
					}
					echo := forms(m.Code)[form]
					detail := "30008: could not deliver \"Your code is " + echo + "\" to handset"
					require.NoError(t, h.eng.ReportDelivery(h.ctx, m.ID, verify.DeliveryFailed, detail))
					got, err := h.store.GetVerification(h.ctx, v.ID)
					require.NoError(t, err)
					stored := got.Deliveries[0].Error
					assert.Contains(t, stored, "30008: could not deliver", "the rest of the text stays")
					texts := []string{stored, h.logs.String()}
					for _, ev := range events.events {
						texts = append(texts, ev.Reason)
					}
					for _, s := range texts {
						for _, f := range forms(m.Code) {
							assert.NotContains(t, s, f, "ended=%v, echoed as %q", ended, echo)
						}
						assert.NotContains(t, s, "[code]", "no marker where the code was")
					}
				}
			}
		})
	}
}
