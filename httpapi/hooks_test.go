package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// kaleyraSig signs a message ID as the Kaleyra channel does for its
// callback URLs.
func kaleyraSig(secret []byte, messageID string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("openverify-callback:"))
	mac.Write([]byte(messageID))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// TestKaleyraDeliveryReports: Kaleyra's delivery reports have a route; a
// signed "delivered" report moves the delivery, a bad signature is
// refused, and an unknown message is answered 204.
func TestKaleyraDeliveryReports(t *testing.T) {
	secret := []byte("callback-secret")
	h := newHarness(t, WithKaleyraHook(KaleyraHook{Secret: secret}))
	id := h.generate(`{"flow_id":"` + h.smsFlow + `","to":{"mobile":"+4791234567"}}`)
	msgID := id + "-0"

	report := func(msgID, sig, status string) int {
		q := url.Values{"message_id": {msgID}, "sig": {sig}, "status": {status}}
		res := h.do(http.MethodGet, "/hooks/kaleyra?"+q.Encode(), "")
		return res.status
	}
	assert.Equal(t, http.StatusForbidden, report(msgID, "forged", "DELIVRD"), "a bad signature")
	v, err := h.eng.Get(h.ctx, id)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusSent, v.Status, "a refused report changes nothing")

	assert.Equal(t, http.StatusNoContent, report(msgID, kaleyraSig(secret, msgID), "DELIVRD"))
	v, err = h.eng.Get(h.ctx, id)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusDelivered, v.Status)
	assert.Equal(t, verify.DeliveryDelivered, v.Deliveries[0].Status)

	ghost := "4d3d0959-805e-43fa-bece-5815ce0795a2-0"
	assert.Equal(t, http.StatusNoContent, report(ghost, kaleyraSig(secret, ghost), "DELIVRD"), "unknown: nothing to retry")

	// Without the hook configured there is no route.
	plain := newHarness(t)
	assert.Equal(t, http.StatusNotFound, plain.do(http.MethodGet, "/hooks/kaleyra", "").status)
}

// TestMissesAnswerJSON: an unknown path is 404 and a wrong method 405
// (with Allow), both in the JSON error envelope.
func TestMissesAnswerJSON(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct {
		method, path string
		status       int
		code, param  string
	}{
		{http.MethodGet, "/v1/nothing/here", http.StatusNotFound, "E909", "path"},
		{http.MethodGet, "/v1/verify/send", http.StatusMethodNotAllowed, "E809", "method"},
		{http.MethodDelete, "/api/v2/verify/send", http.StatusMethodNotAllowed, "E809", "method"},
	} {
		req := httptest.NewRequest(c.method, h.srv.URL+c.path, nil)
		req.RequestURI = ""
		res, err := h.srv.Client().Do(req)
		require.NoError(t, err)
		var env struct {
			Error verify.Error `json:"error"`
		}
		require.NoError(t, json.NewDecoder(res.Body).Decode(&env), "%s %s", c.method, c.path)
		res.Body.Close()
		assert.Equal(t, c.status, res.StatusCode, "%s %s", c.method, c.path)
		assert.Contains(t, res.Header.Get("Content-Type"), "application/json")
		assert.Equal(t, c.code, env.Error.Code)
		assert.Equal(t, c.param, env.Error.Parameter)
		if c.status == http.StatusMethodNotAllowed {
			assert.Contains(t, res.Header.Get("Allow"), "POST")
		}
	}
	assert.Equal(t, http.StatusOK, h.do(http.MethodGet, "/healthz", "").status, "routes still work")
}
