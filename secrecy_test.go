package verify_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// TestCodeNeverStoredOrShown sends codes through every path (send,
// fallback, resend, wrong and right checks, a failing channel) and then
// looks for each plain code in every stored record, every returned value and
// error, and the debug log.
func TestCodeNeverStoredOrShown(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	var seen []string // everything a caller or operator could see
	var ids, codes []string
	for range 20 {
		h.sms.FailNext(1, fmt.Errorf("gateway refused"))
		v, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
		require.NoError(t, err)
		seen = append(seen, fmt.Sprintf("%v %+v %#v", v, v, v))
		m, ok := h.lastMessage(v.ID)
		require.True(t, ok)
		ids, codes = append(ids, v.ID), append(codes, m.Code)
		seen = append(seen, m.String(), fmt.Sprintf("%v %+v %#v %s", m, m, m, m))
		b, err := json.Marshal(m)
		require.NoError(t, err)
		seen = append(seen, string(b))
		h.eng.Resend(h.ctx, v.ID)
	}
	h.clock.Add(30 * time.Second)
	h.processDue()
	for i, id := range ids {
		v, err := h.check(id, wrong(codes[i]))
		seen = append(seen, fmt.Sprintf("%v %+v %v", v, err, err))
		if i%2 == 0 {
			v, err = h.check(id, codes[i])
			require.NoError(t, err)
			seen = append(seen, fmt.Sprintf("%+v", v))
		}
	}
	var stored []string
	for _, id := range ids {
		rec, err := h.store.GetVerification(h.ctx, id)
		require.NoError(t, err)
		stored = append(stored, fmt.Sprintf("%#v", rec), string(rec.CodeHash), string(rec.SealedCode),
			hex.EncodeToString(rec.CodeHash), hex.EncodeToString(rec.SealedCode))
		b, err := json.Marshal(rec)
		require.NoError(t, err)
		stored = append(stored, string(b))
	}
	flows, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	stored = append(stored, fmt.Sprintf("%#v", flows))

	logs := h.logs.String()
	assert.Contains(t, logs, "delivery failed", "the log is captured")
	for _, code := range codes {
		for _, s := range stored {
			assert.NotContains(t, s, code, "a stored record holds a plain code")
		}
		for _, s := range seen {
			assert.NotContains(t, s, code, "a returned value or error shows a code")
		}
		assert.NotContains(t, logs, code, "the log shows a code")
	}
	// The sealed code is kept only while a delivery can still happen.
	for i, id := range ids {
		rec, _ := h.store.GetVerification(h.ctx, id)
		if i%2 == 0 {
			assert.Empty(t, rec.SealedCode, "erased once verified")
		} else {
			assert.NotEmpty(t, rec.SealedCode, "kept while open, for resend")
		}
	}
}

func TestChannelErrorTextIsScrubbed(t *testing.T) {
	h := newHarness(t)
	eng := h.engine(verify.WithChannels(echoChannel{}))
	f, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "echo", Steps: []verify.Step{{Channel: "echo"}, {Channel: "email"}}})
	require.NoError(t, err)
	v, err := eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	m, _ := h.email.Last()
	require.Len(t, v.Deliveries, 2)
	assert.Equal(t, verify.DeliveryFailed, v.Deliveries[0].Status)
	assert.NotContains(t, v.Deliveries[0].Error, m.Code)
	assert.NotContains(t, v.Deliveries[0].Error, "[code]", "no marker where the code was")
	assert.Contains(t, v.Deliveries[0].Error, "rejected body: Your verification code is", "the rest of the text is kept")
	assert.NotContains(t, h.logs.String(), m.Code)
}

// echoChannel is a badly behaved provider whose error repeats the message.
type echoChannel struct{}

func (echoChannel) Name() string { return "echo" }
func (echoChannel) Send(_ context.Context, m verify.Message) (verify.Receipt, error) {
	return verify.Receipt{}, errors.New("rejected body: " + m.Body)
}

func TestMessageLogValueHidesCode(t *testing.T) {
	buf := &syncBuffer{}
	l := slog.New(slog.NewJSONHandler(buf, nil))
	m := verify.Message{ID: "m1", Code: "918273", Body: "code 918273", Channel: "sms"}
	l.Info("sending", "msg", m)
	assert.NotContains(t, buf.String(), "918273")
	assert.Contains(t, buf.String(), "m1")
	assert.False(t, strings.Contains(fmt.Sprint(m), "918273"))
}
