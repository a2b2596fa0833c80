package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// waysCheckAnswer is shaped like WAYSCloud's check examples: session_id,
// status, and channel (success) or attempts_remaining (failure).
type waysCheckAnswer struct {
	SessionID         string `json:"session_id"`
	Status            string `json:"status"`
	Channel           string `json:"channel"`
	AttemptsRemaining *int   `json:"attempts_remaining"`
}

// waysErrorAnswer is a check answer for a malformed request or a failure of
// the server: the status beside Kaleyra's error object.
type waysErrorAnswer struct {
	Status string       `json:"status"`
	Error  verify.Error `json:"error"`
}

// decodeStrict decodes body into dst, refusing fields dst does not have and
// values of another JSON type than dst's fields.
func decodeStrict(t *testing.T, body []byte, dst any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(dst), string(body))
}

// checkAnswer decodes a check answer shaped like WAYSCloud's examples and
// checks that status is a JSON string, as the document's client code
// (check.json()["status"]) needs.
func checkAnswer(t *testing.T, res response) waysCheckAnswer {
	t.Helper()
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(res.body, &raw), res.String())
	require.Contains(t, raw, "status", "check.json()[\"status\"] must not raise")
	var status string
	require.NoError(t, json.Unmarshal(raw["status"], &status), "status is a string: %s", res.String())
	var a waysCheckAnswer
	decodeStrict(t, res.body, &a)
	return a
}

// waysSent sends a code by SMS to the number and returns the session ID.
func (h *harness) waysSent(to string) string {
	h.t.Helper()
	res := h.ways("/send", `{"to":"`+to+`","channel":"sms"}`)
	require.Equal(h.t, http.StatusOK, res.status, res.String())
	var sent struct {
		SessionID string `json:"session_id"`
	}
	require.NoError(h.t, json.Unmarshal(res.body, &sent))
	return sent.SessionID
}

func (h *harness) waysCheck(sessionID, code string) response {
	return h.ways("/check", `{"session_id":"`+sessionID+`","code":"`+code+`"}`)
}

// wrongCode is a code that is not the one last sent by SMS.
func (h *harness) wrongCode() string {
	if h.code("sms") == "000000" {
		return "111111"
	}
	return "000000"
}

// TestWAYSCloudCheckStatuses: every check outcome answers in WAYSCloud's
// shape, with a status string the client can branch on.
func TestWAYSCloudCheckStatuses(t *testing.T) {
	t.Run("verified", func(t *testing.T) {
		h := newHarness(t)
		id := h.waysSent("+4712345601")
		res := h.waysCheck(id, h.code("sms"))
		assert.Equal(t, http.StatusOK, res.status)
		assert.ElementsMatch(t, []string{"session_id", "status", "channel"}, keysOf(t, res.body))
		a := checkAnswer(t, res)
		assert.Equal(t, waysCheckAnswer{SessionID: id, Status: "verified", Channel: "sms"}, a)
	})

	t.Run("wrong code with attempts left", func(t *testing.T) {
		h := newHarness(t)
		id := h.waysSent("+4712345602")
		res := h.waysCheck(id, h.wrongCode())
		assert.Equal(t, http.StatusOK, res.status)
		assert.ElementsMatch(t, []string{"session_id", "status", "attempts_remaining"}, keysOf(t, res.body))
		a := checkAnswer(t, res)
		assert.Equal(t, id, a.SessionID)
		assert.Equal(t, "failed", a.Status)
		require.NotNil(t, a.AttemptsRemaining, "attempts_remaining is a number")
		assert.Equal(t, 4, *a.AttemptsRemaining)
	})

	t.Run("already verified", func(t *testing.T) {
		h := newHarness(t)
		id := h.waysSent("+4712345603")
		require.Equal(t, http.StatusOK, h.waysCheck(id, h.code("sms")).status)
		res := h.waysCheck(id, h.code("sms"))
		assert.Equal(t, http.StatusConflict, res.status)
		a := checkAnswer(t, res)
		assert.Equal(t, waysCheckAnswer{SessionID: id, Status: "already_verified"}, a, "a second right code is not a second success")
	})

	t.Run("expired", func(t *testing.T) {
		h := newHarness(t)
		id := h.waysSent("+4712345604")
		h.clock.Add(5 * time.Minute)
		res := h.waysCheck(id, h.code("sms"))
		assert.Equal(t, http.StatusGone, res.status)
		assert.Equal(t, waysCheckAnswer{SessionID: id, Status: "expired"}, checkAnswer(t, res))
	})

	t.Run("max attempts", func(t *testing.T) {
		h := newHarness(t)
		id := h.waysSent("+4712345605")
		wrong := h.wrongCode()
		for left := 4; left >= 0; left-- {
			res := h.waysCheck(id, wrong)
			require.Equal(t, http.StatusOK, res.status, res.String())
			a := checkAnswer(t, res)
			require.Equal(t, "failed", a.Status)
			require.NotNil(t, a.AttemptsRemaining)
			require.Equal(t, left, *a.AttemptsRemaining)
		}
		res := h.waysCheck(id, h.code("sms"))
		assert.Equal(t, http.StatusTooManyRequests, res.status)
		assert.Equal(t, waysCheckAnswer{SessionID: id, Status: "max_attempts"}, checkAnswer(t, res))
	})

	t.Run("canceled", func(t *testing.T) {
		h := newHarness(t)
		id := h.waysSent("+4712345606")
		_, err := h.eng.Cancel(h.ctx, id)
		require.NoError(t, err)
		res := h.waysCheck(id, h.code("sms"))
		assert.Equal(t, http.StatusGone, res.status)
		assert.Equal(t, waysCheckAnswer{SessionID: id, Status: "canceled"}, checkAnswer(t, res))
	})

	t.Run("unknown session", func(t *testing.T) {
		h := newHarness(t)
		const id = "4d3d0959-805e-43fa-bece-5815ce0795a2"
		res := h.waysCheck(id, "123456")
		assert.Equal(t, http.StatusNotFound, res.status)
		assert.Equal(t, waysCheckAnswer{SessionID: id, Status: "not_found"}, checkAnswer(t, res))
	})

	t.Run("delivery failed", func(t *testing.T) {
		h := newHarness(t)
		h.rec["sms"].FailNext(1, errors.New("carrier refused"))
		res := h.ways("/send", `{"to":"+4712345607","channel":"sms"}`)
		require.Equal(t, http.StatusBadGateway, res.status, res.String())
		var env struct {
			Error verify.Error `json:"error"`
		}
		require.NoError(t, json.Unmarshal(res.body, &env))
		id := env.Error.Reference
		require.NotEmpty(t, id)
		res = h.waysCheck(id, "123456")
		assert.Equal(t, http.StatusBadGateway, res.status)
		assert.Equal(t, waysCheckAnswer{SessionID: id, Status: "delivery_failed"}, checkAnswer(t, res))
	})

	t.Run("ip not allowed", func(t *testing.T) {
		h := newHarness(t, WithAdHocFlow(verify.Flow{AllowedIPs: []string{"203.0.113.0/24"}}))
		v, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345608"}, IPAddress: "203.0.113.7",
			Flow: &verify.Flow{Name: "wayscloud", AllowedIPs: []string{"203.0.113.0/24"}, Steps: []verify.Step{{Channel: "sms"}}}})
		require.NoError(t, err)
		res := h.ways("/send", `{"to":"+4712345608","channel":"sms"}`)
		assert.Equal(t, http.StatusForbidden, res.status, "WithAdHocFlow's allow-list applies to WAYSCloud sends")
		var refused struct{ Status string }
		require.NoError(t, json.Unmarshal(res.body, &refused))
		assert.Equal(t, "forbidden", refused.Status)
		res = h.waysCheck(v.ID, h.code("sms"))
		assert.Equal(t, http.StatusForbidden, res.status)
		assert.Equal(t, waysCheckAnswer{SessionID: v.ID, Status: "forbidden"}, checkAnswer(t, res))
	})

	t.Run("rate limited", func(t *testing.T) {
		h := newHarness(t)
		p := verify.NoProtection()
		p.IPChecks = verify.Rate{Limit: 1, Per: time.Minute}
		h.serveOn(h.store, p)

		id := h.waysSent("+4712345609")
		require.Equal(t, http.StatusOK, h.waysCheck(id, h.wrongCode()).status)
		res := h.waysCheck(id, h.code("sms"))
		assert.Equal(t, http.StatusTooManyRequests, res.status)
		assert.Equal(t, waysCheckAnswer{SessionID: id, Status: "rate_limited"}, checkAnswer(t, res))
		secs, err := strconv.Atoi(res.header.Get("Retry-After"))
		require.NoError(t, err, "Retry-After in seconds")
		assert.Positive(t, secs)
	})

	t.Run("invalid request", func(t *testing.T) {
		h := newHarness(t)
		for _, c := range []struct{ body, param string }{
			{`{"code":"123456"}`, "session_id"},
			{`{"session_id":"sess_abc123"}`, "code"},
			{`{"session_id":"sess_abc123","code":"12-456"}`, "code"},
		} {
			res := h.ways("/check", c.body)
			assert.Equal(t, http.StatusBadRequest, res.status)
			var a waysErrorAnswer
			decodeStrict(t, res.body, &a)
			assert.Equal(t, "invalid_request", a.Status)
			assert.Equal(t, c.param, a.Error.Parameter)
		}
	})
}

// TestWAYSCloudCheckStoreFailures: a store that is down answers 503 with
// status "unavailable" and Retry-After; an internal failure 500 with status
// "error" and a reference to the log line, never the driver's text.
func TestWAYSCloudCheckStoreFailures(t *testing.T) {
	for _, c := range []struct {
		name, status, code string
		err                error
		http               int
	}{
		{"unavailable", "unavailable", "E926", verify.Transient(errors.New("the database system is shutting down"), 3*time.Second), http.StatusServiceUnavailable},
		{"internal", "error", "E925", errors.New(`relation "verifications" does not exist`), http.StatusInternalServerError},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.serveOn(downStore{h.store, c.err}, verify.NoProtection())

			res := h.waysCheck("4d3d0959-805e-43fa-bece-5815ce0795a2", "123456")
			assert.Equal(t, c.http, res.status)
			var a waysErrorAnswer
			decodeStrict(t, res.body, &a)
			assert.Equal(t, c.status, a.Status)
			assert.Equal(t, c.code, a.Error.Code)
			assert.NotContains(t, res.String(), "database system")
			assert.NotContains(t, res.String(), "relation")
			if c.http == http.StatusServiceUnavailable {
				assert.Equal(t, "3", res.header.Get("Retry-After"))
			} else {
				assert.NotEmpty(t, a.Error.Reference)
			}
		})
	}
}

// TestWAYSCloudReusedSessionExpiresIn: a send that reuses the recipient's
// open session answers with the time it has left, rounded up to whole
// seconds, by the engine's clock.
func TestWAYSCloudReusedSessionExpiresIn(t *testing.T) {
	h := newHarness(t)
	send := func() (string, int) {
		t.Helper()
		res := h.ways("/send", `{"to":"+4712345610","channel":"sms"}`)
		require.Equal(t, http.StatusOK, res.status, res.String())
		var sent struct {
			SessionID string `json:"session_id"`
			Status    string `json:"status"`
			Channel   string `json:"channel"`
			ExpiresIn int    `json:"expires_in"`
		}
		decodeStrict(t, res.body, &sent)
		return sent.SessionID, sent.ExpiresIn
	}
	id, left := send()
	assert.Equal(t, 300, left)

	h.clock.Add(100*time.Second + 500*time.Millisecond)
	again, left := send()
	require.Equal(t, id, again, "the open session is reused")
	assert.Equal(t, 200, left, "199.5 s left, rounded up")
	assert.Equal(t, 2, h.rec["sms"].Calls(), "the code was sent again")

	h.clock.Add(199 * time.Second)
	again, left = send()
	require.Equal(t, id, again)
	assert.Equal(t, 1, left, "0.5 s left, rounded up")
}
