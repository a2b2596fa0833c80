package httpapi

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func (h *harness) ways(path, body string) response {
	return h.do(http.MethodPost, "/v1/verify"+path, body, waysKey)
}

func TestWAYSCloudSendAndCheck(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct{ channel, to string }{
		{"sms", "+4712345678"},
		{"voice", "+4712345679"},
		{"email", "user@example.com"},
	} {
		t.Run(c.channel, func(t *testing.T) {
			res := h.ways("/send", `{"to":"`+c.to+`","channel":"`+c.channel+`"}`)
			require.Equal(t, http.StatusOK, res.status, res.String())
			assert.ElementsMatch(t, []string{"session_id", "status", "channel", "expires_in"}, keysOf(t, res.body))
			var sent struct {
				SessionID string `json:"session_id"`
				Status    string `json:"status"`
				Channel   string `json:"channel"`
				ExpiresIn int    `json:"expires_in"`
			}
			require.NoError(t, json.Unmarshal(res.body, &sent))
			assert.Equal(t, "sent", sent.Status)
			assert.Equal(t, c.channel, sent.Channel)
			assert.Equal(t, 300, sent.ExpiresIn, "5 minutes by default, as WAYSCloud says")

			m, ok := h.rec[c.channel].Last()
			require.True(t, ok)
			assert.Equal(t, c.to, m.To.Phone+m.To.Email)
			v, err := h.eng.Get(h.ctx, sent.SessionID)
			require.NoError(t, err)
			assert.Equal(t, verify.AdHocFlowID("wayscloud"), v.FlowID, "a one-step ad-hoc flow on the channel")

			wrong := "000000"
			if m.Code == wrong {
				wrong = "111111"
			}
			res = h.ways("/check", `{"session_id":"`+sent.SessionID+`","code":"`+wrong+`"}`)
			assert.Equal(t, http.StatusOK, res.status)
			assert.Equal(t, `{"session_id":"`+sent.SessionID+`","status":"failed","attempts_remaining":4}`, res.String())

			res = h.ways("/check", `{"session_id":"`+sent.SessionID+`","code":"`+m.Code+`"}`)
			assert.Equal(t, http.StatusOK, res.status)
			assert.Equal(t, `{"session_id":"`+sent.SessionID+`","status":"verified","channel":"`+c.channel+`"}`, res.String())

			// A second check with the right code is not a second success.
			res = h.ways("/check", `{"session_id":"`+sent.SessionID+`","code":"`+m.Code+`"}`)
			assert.Equal(t, http.StatusConflict, res.status)
			assert.Equal(t, `{"session_id":"`+sent.SessionID+`","status":"already_verified"}`, res.String())
		})
	}
}

func TestWAYSCloudErrors(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"missing channel", "/send", `{"to":"+4712345678"}`, 400,
			`{"status":"invalid_request","error":{"code":"E802","type":"VALIDATION_ERROR","parameter":"channel","message":"channel field is mandatory","reference":""}}`},
		{"unknown channel", "/send", `{"to":"+4712345678","channel":"pigeon"}`, 400,
			`{"status":"invalid_request","error":{"code":"E808","type":"VALIDATION_ERROR","parameter":"channel","message":"channel \"pigeon\" is not available; use one of email, sms, viber, voice, whatsapp","reference":""}}`},
		{"bad number", "/send", `{"to":"12345","channel":"sms"}`, 400,
			`{"status":"invalid_request","error":{"code":"E804","type":"VALIDATION_ERROR","parameter":"to","message":"mobile must be in E.164 format, such as +4712345678","reference":""}}`},
		{"missing session", "/check", `{"code":"123456"}`, 400,
			`{"status":"invalid_request","error":{"code":"E800","type":"VALIDATION_ERROR","parameter":"session_id","message":"session_id field is mandatory","reference":""}}`},
		{"missing code", "/check", `{"session_id":"sess_abc123"}`, 400,
			`{"status":"invalid_request","error":{"code":"E801","type":"VALIDATION_ERROR","parameter":"code","message":"code field is mandatory","reference":""}}`},
		{"unknown session", "/check", `{"session_id":"sess_abc123","code":"123456"}`, 404,
			`{"session_id":"sess_abc123","status":"not_found"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := h.ways(c.path, c.body)
			assert.Equal(t, c.status, res.status)
			assert.Equal(t, c.want, res.String())
		})
	}

	t.Run("expired", func(t *testing.T) {
		res := h.ways("/send", `{"to":"+4712345678","channel":"sms"}`)
		require.Equal(t, http.StatusOK, res.status)
		var sent struct {
			SessionID string `json:"session_id"`
		}
		require.NoError(t, json.Unmarshal(res.body, &sent))
		h.clock.Add(5 * time.Minute)
		res = h.ways("/check", `{"session_id":"`+sent.SessionID+`","code":"`+h.code("sms")+`"}`)
		assert.Equal(t, http.StatusGone, res.status)
		assert.Equal(t, `{"session_id":"`+sent.SessionID+`","status":"expired"}`, res.String())
	})
}
