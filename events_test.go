package verify_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

type eventLog struct {
	mu     sync.Mutex
	events []verify.Event
}

func (l *eventLog) Observe(_ context.Context, ev verify.Event) {
	l.mu.Lock()
	l.events = append(l.events, ev)
	l.mu.Unlock()
}

func (l *eventLog) types(id string) []verify.EventType {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []verify.EventType
	for _, ev := range l.events {
		if ev.VerificationID == id {
			out = append(out, ev.Type)
		}
	}
	return out
}

func TestEvents(t *testing.T) {
	log := &eventLog{}
	h := newHarness(t, verify.WithObserver(log))
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})

	h.sms.FailNext(1, nil)
	v1, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	m, _ := h.email.Last()
	_, err = h.check(v1.ID, wrong(m.Code))
	requireCode(t, err, verify.ErrInvalidOTP)
	h.clock.Add(5 * time.Second)
	_, err = h.check(v1.ID, m.Code)
	require.NoError(t, err)
	assert.Equal(t, []verify.EventType{verify.EventCreated, verify.EventDeliveryFailed, verify.EventSent,
		verify.EventCheckFailed, verify.EventVerified}, log.types(v1.ID))

	v2, _ := h.send()
	_, err = h.eng.Cancel(h.ctx, v2.ID)
	require.NoError(t, err)
	assert.Equal(t, []verify.EventType{verify.EventCreated, verify.EventSent, verify.EventCanceled}, log.types(v2.ID))

	v3, _ := h.send()
	h.clock.Add(30 * time.Second)
	h.processDue()
	h.clock.Add(5 * time.Minute)
	h.processDue()
	assert.Equal(t, []verify.EventType{verify.EventCreated, verify.EventSent, verify.EventSent, verify.EventExpired}, log.types(v3.ID))

	v4, _ := h.send()
	m4, _ := h.sms.Last()
	require.NoError(t, h.eng.ReportDelivery(h.ctx, m4.ID, verify.DeliveryDelivered, ""))
	assert.Equal(t, []verify.EventType{verify.EventCreated, verify.EventSent, verify.EventDelivered}, log.types(v4.ID))

	log.mu.Lock()
	defer log.mu.Unlock()
	for _, ev := range log.events {
		assert.NotEmpty(t, ev.FlowID, "every event of a verification names its flow: %v", ev.Type)
		b, _ := json.Marshal(ev)
		assert.NotContains(t, string(b), m.Code, "events never carry the code")
		assert.NotContains(t, string(b), ana.Phone, "nor the recipient")
		switch ev.Type {
		case verify.EventCheckFailed:
			assert.Equal(t, "E912", ev.ErrorCode)
		case verify.EventVerified:
			if ev.VerificationID == v1.ID {
				assert.Equal(t, 5*time.Second, ev.Latency, "time to verify")
			}
		case verify.EventDeliveryFailed:
			assert.Equal(t, "sms", ev.Channel)
			assert.True(t, strings.Contains(ev.Reason, "failed on purpose"))
		}
	}
}
