package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// The error responses of Kaleyra's Validate OTP reference, as printed
// there.
var kaleyraReference = map[string]string{
	"E910": `{
  "error": {
    "code": "E910",
    "type": "validation_error",
    "parameter": "",
    "message": "OTP already verified",
    "reference": ""
  }
}`,
	"E912": `{
  "error": {
    "code": "E912",
    "type": "validation_error",
    "parameter": "OTP",
    "message": "Invalid Request/OTP",
    "reference": ""
  }
}`,
	"E909": `{
  "error": {
    "code": "E909",
    "type": "validation_error",
    "parameter": "flow_id",
    "message": "Record not found",
    "reference": ""
  }
}`,
	"E911": `{
  "error": {
    "code": "E911",
    "type": "validation_error",
    "parameter": "OTP",
    "message": "Exceeded max number of attempts",
    "reference": ""
  }
}`,
	"E913": `{
  "error": {
    "code": "E913",
    "type": "validation_error",
    "parameter": "",
    "message": "The OTP has already expired",
    "reference": ""
  }
}`,
	"E801": `{
  "error": {
    "code": "E801",
    "type": "VALIDATION_ERROR",
    "parameter": "otp",
    "message": "otp field is mandatory",
    "reference": ""
  }
}`,
	"E800": `{
  "error": {
    "code": "E800",
    "type": "VALIDATION_ERROR",
    "parameter": "verify_id",
    "message": "verify_id field is mandatory",
    "reference": ""
  }
}`,
	"E803": `{
  "error": {
    "code": "E803",
    "type": "VALIDATION_ERROR",
    "parameter": "OTP",
    "message": "OTP can contain only alphanumeric values.",
    "reference": ""
  }
}`,
}

const kaleyraSuccessReference = `{
  "data": {
    "verify_id": "4d3d0959-805e-43fa-bece-5815ce0795a2",
    "message": "OTP verified successfully."
  }
}`

func TestKaleyraGenerateAndValidate(t *testing.T) {
	h := newHarness(t)
	res := h.kaleyra("/verify", `{"flow_id":"","to":{"mobile":"+4791234567"},"foreign_id":"order-42"}`)
	require.Equal(t, http.StatusOK, res.status, res.String())
	assert.Equal(t, "application/json", res.header.Get("Content-Type"))
	assert.ElementsMatch(t, []string{"data"}, keysOf(t, res.body))
	assert.ElementsMatch(t, []string{"verify_id", "flow_id", "to", "foreign_id", "status", "created_at", "expires_at"}, keysOf(t, res.body, "data"))
	var gen struct {
		Data struct {
			VerifyID  string            `json:"verify_id"`
			FlowID    string            `json:"flow_id"`
			To        map[string]string `json:"to"`
			ForeignID string            `json:"foreign_id"`
			Status    string            `json:"status"`
			CreatedAt time.Time         `json:"created_at"`
			ExpiresAt time.Time         `json:"expires_at"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(res.body, &gen))
	d := gen.Data
	assert.Equal(t, h.flowByName(DefaultFlowName).ID, d.FlowID, "no flow_id means the default flow")
	assert.Equal(t, map[string]string{"mobile": "+4791234567"}, d.To)
	assert.Equal(t, "order-42", d.ForeignID)
	assert.Equal(t, "sent", d.Status)
	assert.Equal(t, testStart, d.CreatedAt)
	assert.Equal(t, testStart.Add(5*time.Minute), d.ExpiresAt)

	m, ok := h.rec["sms"].Last()
	require.True(t, ok)
	assert.Equal(t, "+4791234567", m.To.Phone)
	assert.Equal(t, "Acme: your verification code is "+m.Code+". It expires in 5 minutes.", m.Body, "the default template")

	res = h.kaleyra("/verify/validate", `{"verify_id":"`+d.VerifyID+`","otp":"`+m.Code+`"}`)
	require.Equal(t, http.StatusOK, res.status)
	want := strings.Replace(compact(t, kaleyraSuccessReference), "4d3d0959-805e-43fa-bece-5815ce0795a2", d.VerifyID, 1)
	assert.Equal(t, want, res.String())
}

func TestKaleyraCustomOTPAndEmail(t *testing.T) {
	h := newHarness(t)
	fallback := h.flowByName(FallbackFlowName)
	id := h.generate(`{"flow_id":"` + fallback.ID + `","to":{"mobile":"+4791234567","email":"ana@example.com"},"otp":"246810"}`)
	assert.Equal(t, "246810", h.code("sms"))
	assert.Equal(t, 0, h.rec["email"].Len(), "email waits a minute")

	h.clock.Add(time.Minute)
	n, err := h.eng.ProcessDue(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, "246810", h.code("email"), "the fallback sends the same code")

	res := h.kaleyra("/verify/validate", `{"verify_id":"`+id+`","otp":"246810"}`)
	assert.Equal(t, http.StatusOK, res.status, res.String())

	// A custom code that does not fit the flow.
	res = h.kaleyra("/verify", `{"to":{"mobile":"+4791234568"},"otp":"12"}`)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.String(), `"code":"E805"`)
}

// TestKaleyraErrorEnvelopes answers each refusal of the reference and
// compares the body byte for byte with the reference's JSON.
func TestKaleyraErrorEnvelopes(t *testing.T) {
	h := newHarness(t)
	oneTry, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "one-try", MaxAttempts: 1, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)

	validate := func(id, otp string) response {
		return h.kaleyra("/verify/validate", `{"verify_id":"`+id+`","otp":"`+otp+`"}`)
	}
	wrong := func(code string) string {
		if code == "000000" {
			return "111111"
		}
		return "000000"
	}

	cases := []struct {
		code   string
		status int
		answer func() response
	}{
		{"E800", http.StatusBadRequest, func() response { return h.kaleyra("/verify/validate", `{"otp":"123456"}`) }},
		{"E801", http.StatusBadRequest, func() response {
			return h.kaleyra("/verify/validate", `{"verify_id":"4d3d0959-805e-43fa-bece-5815ce0795a2"}`)
		}},
		{"E803", http.StatusBadRequest, func() response { return validate("4d3d0959-805e-43fa-bece-5815ce0795a2", "12-456") }},
		{"E909", http.StatusNotFound, func() response {
			return h.kaleyra("/verify", `{"flow_id":"d990f00d-6946-4b00-ac18-51c0000f2344a","to":{"mobile":"+4791234567"}}`)
		}},
		{"E910", http.StatusConflict, func() response {
			id := h.generate(`{"to":{"mobile":"+4791230001"}}`)
			require.Equal(t, http.StatusOK, validate(id, h.code("sms")).status)
			return validate(id, h.code("sms"))
		}},
		{"E912", http.StatusBadRequest, func() response {
			id := h.generate(`{"to":{"mobile":"+4791230002"}}`)
			return validate(id, wrong(h.code("sms")))
		}},
		{"E911", http.StatusTooManyRequests, func() response {
			id := h.generate(`{"flow_id":"` + oneTry.ID + `","to":{"mobile":"+4791230003"}}`)
			res := validate(id, wrong(h.code("sms")))
			require.Equal(t, compact(t, kaleyraReference["E912"]), res.String(), "the last try is still E912")
			return validate(id, h.code("sms"))
		}},
		{"E913", http.StatusGone, func() response {
			id := h.generate(`{"to":{"mobile":"+4791230004"}}`)
			h.clock.Add(5 * time.Minute)
			return validate(id, h.code("sms"))
		}},
	}
	for _, c := range cases {
		t.Run(c.code, func(t *testing.T) {
			res := c.answer()
			assert.Equal(t, c.status, res.status)
			assert.Equal(t, "application/json", res.header.Get("Content-Type"))
			assert.Equal(t, compact(t, kaleyraReference[c.code]), res.String())
			assert.Equal(t, c.status, (&verify.Error{Code: c.code}).HTTPStatus())
		})
	}

	t.Run("E909 verify_id", func(t *testing.T) {
		res := validate("4d3d0959-805e-43fa-bece-5815ce0795a2", "123456")
		assert.Equal(t, http.StatusNotFound, res.status)
		assert.Equal(t, `{"error":{"code":"E909","type":"validation_error","parameter":"verify_id","message":"Record not found","reference":""}}`, res.String())
	})
}

func TestKaleyraRecipientErrors(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct{ body, param string }{
		{`{"to":{}}`, "to"},
		{`{"to":{"mobile":"12345"}}`, "to.mobile"},
		{`{"to":{"mobile":"+4791234567","email":"not-an-email"}}`, "to.email"},
	} {
		res := h.kaleyra("/verify", c.body)
		assert.Equal(t, http.StatusBadRequest, res.status, c.body)
		var env struct{ Error verify.Error }
		require.NoError(t, json.Unmarshal(res.body, &env))
		assert.Equal(t, "E804", env.Error.Code, c.body)
		assert.Equal(t, c.param, env.Error.Parameter, c.body)
	}
	assert.Equal(t, 0, h.rec["sms"].Calls())
}
