package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func TestAuthFailures(t *testing.T) {
	h := newHarness(t)
	body := `{"to":{"mobile":"+4791234567"}}`
	missing := func(p string) string {
		return `{"error":{"code":"E924","type":"authentication_error","parameter":"` + p + `","message":"` + p + ` is missing","reference":""}}`
	}
	invalid := func(p string) string {
		return `{"error":{"code":"E924","type":"authentication_error","parameter":"` + p + `","message":"` + p + ` is not a valid key","reference":""}}`
	}
	// WAYSCloud's answers carry a status beside the error, as every one
	// of its answers does.
	ways := func(envelope string) string { return `{"status":"unauthorized",` + envelope[1:] }
	cases := []struct {
		name, method, path, body string
		headers                  []string
		want                     string
	}{
		{"kaleyra generate missing", "POST", "/v1/" + testSID + "/verify", body, nil, missing("api-key")},
		{"kaleyra generate wrong", "POST", "/v1/" + testSID + "/verify", body, []string{"api-key: nope"}, invalid("api-key")},
		{"kaleyra generate other key header", "POST", "/v1/" + testSID + "/verify", body, []string{waysKey}, missing("api-key")},
		{"kaleyra validate missing", "POST", "/v1/" + testSID + "/verify/validate", `{}`, nil, missing("api-key")},
		{"kaleyra validate wrong", "POST", "/v1/" + testSID + "/verify/validate", `{}`, []string{"api-key: " + testAPIKey + "x"}, invalid("api-key")},
		{"kaleyra wrong sid", "POST", "/v1/HXOTHER/verify", body, []string{kaleyraKey},
			`{"error":{"code":"E809","type":"VALIDATION_ERROR","parameter":"sid","message":"sid does not belong to this api-key","reference":""}}`},
		{"wayscloud send missing", "POST", "/v1/verify/send", `{"to":"+4791234567","channel":"sms"}`, nil, ways(missing("X-API-Key"))},
		{"wayscloud send wrong", "POST", "/v1/verify/send", `{"to":"+4791234567","channel":"sms"}`, []string{"X-API-Key: " + testAdminKey}, ways(invalid("X-API-Key"))},
		{"wayscloud check missing", "POST", "/v1/verify/check", `{}`, nil, ways(missing("X-API-Key"))},
		{"wayscloud check wrong", "POST", "/v1/verify/check", `{}`, []string{"X-API-Key: wrong"}, ways(invalid("X-API-Key"))},
		{"thundersms send missing", "POST", "/api/v2/verify/send", `{}`, nil, missing("Authorization")},
		{"thundersms send not bearer", "POST", "/api/v2/verify/send", `{}`, []string{"Authorization: Basic " + testAPIKey}, missing("Authorization")},
		{"thundersms send wrong", "POST", "/api/v2/verify/send", `{}`, []string{"Authorization: Bearer wrong"}, invalid("Authorization")},
		{"thundersms check missing", "GET", "/api/v2/verify/check/x/123456", "", nil, missing("Authorization")},
		{"thundersms check wrong", "GET", "/api/v2/verify/check/x/123456", "", []string{"Authorization: Bearer wrong"}, invalid("Authorization")},
		{"admin missing", "GET", "/admin/flows", "", nil, missing("X-Admin-Key")},
		{"admin with api key", "GET", "/admin/flows", "", []string{"X-Admin-Key: " + testAPIKey}, invalid("X-Admin-Key")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := h.do(c.method, c.path, c.body, c.headers...)
			assert.Equal(t, http.StatusUnauthorized, res.status)
			assert.Equal(t, c.want, res.String())
		})
	}
	assert.Equal(t, 0, h.rec["sms"].Calls(), "nothing was sent")

	res := h.do("GET", "/admin/flows", "")
	assert.Equal(t, `Basic realm="OpenVerify admin", charset="UTF-8"`, res.header.Get("WWW-Authenticate"))
	res = h.do("POST", "/api/v2/verify/send", "{}")
	assert.Equal(t, `Bearer realm="openverify"`, res.header.Get("WWW-Authenticate"))
}

func TestKeyMatches(t *testing.T) {
	keys := hashKeys([]string{"old-key", "new-key"})
	assert.True(t, keyMatches("old-key", keys))
	assert.True(t, keyMatches("new-key", keys))
	assert.False(t, keyMatches("new-ke", keys))
	assert.False(t, keyMatches("", keys))
	assert.False(t, keyMatches("", hashKeys([]string{""})), "an empty key never matches")
}

// TestMalformedJSON sends broken bodies to every JSON endpoint and expects
// Kaleyra's envelope naming the field at fault.
func TestMalformedJSON(t *testing.T) {
	h := newHarness(t)
	e809 := func(param, msg string) string {
		return `{"error":{"code":"E809","type":"VALIDATION_ERROR","parameter":"` + param + `","message":"` + msg + `","reference":""}}`
	}
	empty := `{"error":{"code":"E802","type":"VALIDATION_ERROR","parameter":"body","message":"a JSON request body is mandatory","reference":""}}`
	large := `{"to":{"mobile":"+4791234567"},"foreign_id":"` + strings.Repeat("x", 17<<10) + `"}`

	endpoints := []struct {
		name, path, header string
	}{
		{"kaleyra validate", "/v1/" + testSID + "/verify/validate", kaleyraKey},
		{"wayscloud check", "/v1/verify/check", waysKey},
		{"wayscloud send", "/v1/verify/send", waysKey},
		{"thundersms check", "/api/v2/verify/check", thunderKey},
	}
	cases := []struct {
		name   string
		body   string
		status int
		want   string
	}{
		{"syntax error", `{"verify_id": "a",}`, 400, e809("body", "request body is not valid JSON (at byte 19)")},
		{"truncated", `{"verify_id": "a"`, 400, e809("body", "request body is truncated JSON")},
		{"not an object", `["a"]`, 400, e809("body", "request body must be a JSON object")},
		{"trailing data", `{} {}`, 400, e809("body", "request body has data after the JSON object")},
		{"trailing garbage", `{}x`, 400, e809("body", "request body has data after the JSON object")},
		{"too large", large, 413, e809("body", "request body must be at most 16384 bytes")},
		{"empty body", ``, 400, empty},
		{"blank body", " \n", 400, empty},
	}
	for _, ep := range endpoints {
		for _, c := range cases {
			t.Run(ep.name+"/"+c.name, func(t *testing.T) {
				res := h.do("POST", ep.path, c.body, ep.header)
				assert.Equal(t, c.status, res.status)
				want := c.want
				if ep.header == waysKey { // WAYSCloud's status beside the error
					want = `{"status":"invalid_request",` + want[1:]
				}
				assert.Equal(t, want, res.String())
			})
		}
	}

	// Field errors name the field, with its path.
	fieldCases := []struct {
		name, path, header, body, want string
	}{
		{"kaleyra wrong type", "/v1/" + testSID + "/verify/validate", kaleyraKey, `{"verify_id":42,"otp":"1"}`,
			e809("verify_id", "verify_id must be a string")},
		{"kaleyra nested wrong type", "/v1/" + testSID + "/verify", kaleyraKey, `{"to":{"mobile":4791234567}}`,
			e809("to.mobile", "to.mobile must be a string")},
		{"kaleyra to not an object", "/v1/" + testSID + "/verify", kaleyraKey, `{"to":"+4791234567"}`,
			e809("to", "to must be an object")},
		{"wayscloud wrong type", "/v1/verify/send", waysKey, `{"to":["+4791234567"],"channel":"sms"}`,
			`{"status":"invalid_request",` + e809("to", "to must be a string")[1:]},
		{"thundersms wrong type", "/api/v2/verify/send", thunderKey, `{"channels":[{"name":"sms","recipient":{"to":"4791234567"}}],"payload":{"length":"five"}}`,
			e809("payload.length", "payload.length must be a number")},
		{"thundersms wrong nested type", "/api/v2/verify/send", thunderKey, `{"channels":[{"name":"sms","recipient":{"to":4791234567}}]}`,
			e809("channels.recipient.to", "channels.recipient.to must be a string")},
		{"admin unknown field", "/admin/flows", adminKey, `{"name":"x","steps":[{"channel":"sms","delay":5}]}`,
			e809("delay", `unknown field \"delay\"`)},
	}
	for _, c := range fieldCases {
		t.Run(c.name, func(t *testing.T) {
			res := h.do("POST", c.path, c.body, c.header)
			assert.Equal(t, http.StatusBadRequest, res.status)
			assert.Equal(t, c.want, res.String())
		})
	}
	assert.Equal(t, 0, h.rec["sms"].Calls(), "nothing was sent")
}

func TestClientIP(t *testing.T) {
	for _, trust := range []bool{false, true} {
		var opts []Option
		if trust {
			opts = append(opts, WithTrustProxy())
		}
		h := newHarness(t, opts...)
		f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "office", AllowedIPs: []string{"203.0.113.7"}, Steps: []verify.Step{{Channel: "sms"}}})
		require.NoError(t, err)
		res := h.do("POST", "/v1/"+testSID+"/verify", `{"flow_id":"`+f.ID+`","to":{"mobile":"+4791234567"}}`,
			kaleyraKey, "X-Forwarded-For: 198.51.100.1, 203.0.113.7")
		if trust {
			assert.Equal(t, http.StatusOK, res.status, "with -trust-proxy the proxy's entry counts: %s", res)
		} else {
			assert.Equal(t, http.StatusForbidden, res.status, "without -trust-proxy the header is ignored")
			assert.Contains(t, res.String(), `"code":"E920"`)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	s := &server{st: settings{logger: discard}}
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/v1/verify/send", nil)
	s.writeError(rec, r, &verify.Error{Code: verify.ErrRateLimited.Code, Type: verify.TypeState, Message: "Too many requests", RetryAfter: 1500 * time.Millisecond})
	assert.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "2", rec.Header().Get("Retry-After"))

	rec = httptest.NewRecorder()
	s.writeError(rec, r, errors.New("database is on fire"))
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	assert.NotContains(t, rec.Body.String(), "fire", "internal errors stay in the log")
	assert.Contains(t, rec.Body.String(), `"type":"server_error"`)
}

// TestLogsNeverHoldCodes drives every API, the ThunderSMS check with the
// code in its path included, and looks for the codes in the request log.
func TestLogsNeverHoldCodes(t *testing.T) {
	var logs syncBuffer
	h := newHarness(t, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	id := h.generate(`{"to":{"mobile":"+4791234567"},"otp":"918273"}`)
	h.kaleyra("/verify/validate", `{"verify_id":"`+id+`","otp":"918273"}`)
	sent, res := h.thunderSend(`{"channels":[{"name":"sms","recipient":{"to":"4791234568"}}],"payload":{"token":"564738"}}`)
	require.Equal(t, http.StatusOK, res.status)
	h.thunderCheck(sent.ID, "564738")
	res = h.ways("/send", `{"to":"+4791234569","channel":"sms"}`)
	require.Equal(t, http.StatusOK, res.status)
	code := h.code("sms")
	h.ways("/check", `{"session_id":"x","code":"`+code+`"}`)

	out := logs.String()
	assert.Contains(t, out, `route="GET /api/v2/verify/check/{id}/{token}"`)
	assert.Equal(t, 6, strings.Count(out, "msg=request"))
	for _, c := range []string{"918273", "564738", code} {
		assert.NotContains(t, out, c)
	}
}

// TestChannelOfSharedFlow: a flow that several channels share is named
// after the first of them by name, every time.
func TestChannelOfSharedFlow(t *testing.T) {
	s := &server{st: newSettings([]Option{WithChannelFlows(map[string]string{
		"whatsapp": "f1", "sms": "f1", "viber": "f1", "voice": "f2"})})}
	for range 20 {
		assert.Equal(t, "sms", s.channelOf(verify.Verification{FlowID: "f1"}))
		assert.Equal(t, "voice", s.channelOf(verify.Verification{FlowID: "f2"}))
	}
	assert.Equal(t, "email", s.channelOf(verify.Verification{FlowID: "other",
		Deliveries: []verify.Delivery{{Channel: "email", Status: verify.DeliverySent}}}))
}
