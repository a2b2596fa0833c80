package httpapi

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestWireFormatsIgnoreUnknownFields: the vendors' clients send fields we
// do not define (Kaleyra's "data", for one); the wire formats ignore them,
// as the vendors' APIs do. The admin API, OpenVerify's own, still refuses
// them (see TestRequestErrors).
func TestWireFormatsIgnoreUnknownFields(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct{ name, path, header, body string }{
		{"kaleyra", "/v1/" + testSID + "/verify", kaleyraKey,
			`{"to":{"mobile":"+4791234561","email":"a@example.com"},"data":{"name":"x"},"sender":"ACME"}`},
		{"wayscloud", "/v1/verify/send", waysKey, `{"to":"+4791234562","channel":"sms","locale":"nb","extra":[1,2]}`},
		{"thundersms", "/api/v2/verify/send", thunderKey,
			`{"channels":[{"name":"sms","recipient":{"to":"4791234563"},"colour":"red"}],"message":{"x":1}}`},
	} {
		res := h.do(http.MethodPost, c.path, c.body, c.header)
		assert.Less(t, res.status, 300, "%s: %s", c.name, res)
	}
	res := h.admin("POST", "/flows", `{"name":"x","steps":[{"channel":"sms","delay":5}]}`)
	assert.Equal(t, http.StatusBadRequest, res.status, "the admin API stays strict: %s", res)
}
