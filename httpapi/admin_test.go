package httpapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func (h *harness) admin(method, path, body string) response {
	return h.do(method, "/admin"+path, body, adminKey)
}

func decodeData[T any](t *testing.T, res response) T {
	t.Helper()
	var env struct{ Data T }
	require.NoError(t, json.Unmarshal(res.body, &env), res.String())
	return env.Data
}

func TestAdminTemplatesAndFlows(t *testing.T) {
	h := newHarness(t)

	res := h.admin("POST", "/templates", `{"name":"login","channel":"sms","body":"{brand} login code: {code}"}`)
	require.Equal(t, http.StatusCreated, res.status, res.String())
	tpl := decodeData[verify.Template](t, res)
	assert.Equal(t, verify.TemplatePending, tpl.Status)
	assert.Equal(t, "en", tpl.Language)

	// A pending template cannot be used yet.
	flowBody := `{"name":"login","brand":"Acme","ttl":120,"code_length":4,"max_attempts":3,"steps":[{"channel":"sms","template":"` + tpl.ID + `"},{"channel":"voice","after":30}]}`
	res = h.admin("POST", "/flows", flowBody)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.String(), `"code":"E917"`)

	res = h.admin("POST", "/templates/"+tpl.ID+"/approve", "")
	require.Equal(t, http.StatusOK, res.status, res.String())
	assert.Equal(t, verify.TemplateApproved, decodeData[verify.Template](t, res).Status)

	res = h.admin("POST", "/templates", `{"name":"promo","channel":"sms","body":"Buy now! {code}"}`)
	require.Equal(t, http.StatusCreated, res.status)
	promo := decodeData[verify.Template](t, res)
	res = h.admin("POST", "/templates/"+promo.ID+"/reject", `{"reason":"marketing text"}`)
	require.Equal(t, http.StatusOK, res.status, res.String())
	promo = decodeData[verify.Template](t, res)
	assert.Equal(t, verify.TemplateRejected, promo.Status)
	assert.Equal(t, "marketing text", promo.Reason)
	res = h.admin("POST", "/templates/"+promo.ID+"/reject", `{}`)
	assert.Equal(t, http.StatusBadRequest, res.status)

	res = h.admin("GET", "/templates?status=pending", "")
	assert.Empty(t, decodeData[[]verify.Template](t, res))
	res = h.admin("GET", "/templates", "")
	assert.Len(t, decodeData[[]verify.Template](t, res), 4, "the catalog's sms and email templates and these two")
	res = h.admin("POST", "/templates", `{"name":"x","channel":"sms","body":"no placeholder"}`)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.String(), `"code":"E807"`)

	res = h.admin("POST", "/flows", flowBody)
	require.Equal(t, http.StatusCreated, res.status, res.String())
	flow := decodeData[flowJSON](t, res)
	assert.Equal(t, 120, flow.TTL)
	assert.Equal(t, "numeric", flow.Charset)
	assert.Equal(t, []stepJSON{{Channel: "sms", Template: tpl.ID}, {Channel: "voice", After: 30}}, flow.Steps)

	res = h.admin("GET", "/flows/"+flow.ID, "")
	require.Equal(t, http.StatusOK, res.status)
	assert.Equal(t, flow, decodeData[flowJSON](t, res))

	id := h.generate(`{"flow_id":"` + flow.ID + `","to":{"mobile":"+4791234567"}}`)
	m, _ := h.rec["sms"].Last()
	assert.Equal(t, "Acme login code: "+m.Code, m.Body)
	assert.Len(t, m.Code, 4)
	_ = id

	flow.TTL, flow.Charset, flow.Name = 600, "alphanumeric", "login-v2"
	b, _ := json.Marshal(flow)
	res = h.admin("PUT", "/flows/"+flow.ID, string(b))
	require.Equal(t, http.StatusOK, res.status, res.String())
	updated := decodeData[flowJSON](t, res)
	assert.Equal(t, 600, updated.TTL)
	assert.Equal(t, "alphanumeric", updated.Charset)
	assert.Equal(t, flow.CreatedAt, updated.CreatedAt)

	res = h.admin("GET", "/flows", "")
	var names []string
	for _, f := range decodeData[[]flowJSON](t, res) {
		names = append(names, f.Name)
	}
	sort.Strings(names)
	assert.Equal(t, []string{"default", "login-v2", "sms-then-email"}, names)

	res = h.admin("DELETE", "/flows/"+flow.ID, "")
	assert.Equal(t, http.StatusNoContent, res.status)
	res = h.admin("GET", "/flows/"+flow.ID, "")
	assert.Equal(t, http.StatusNotFound, res.status)
	assert.Equal(t, compact(t, kaleyraReference["E909"]), res.String())

	res = h.admin("POST", "/flows", `{"name":"bad","charset":"emoji","steps":[{"channel":"sms"}]}`)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.String(), `"parameter":"charset"`)
	res = h.admin("POST", "/flows", `{"name":"bad","steps":[{"channel":"pigeon"}]}`)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.String(), `"code":"E808"`)
}

// seed makes three verifications: one verified by SMS, one still open
// with a wrong attempt, one verified by email.
func (h *harness) seed() (ids []string, codes []string) {
	h.t.Helper()
	a := h.generate(`{"to":{"mobile":"+4791234567"},"foreign_id":"a"}`)
	ca := h.code("sms")
	require.Equal(h.t, http.StatusOK, h.kaleyra("/verify/validate", `{"verify_id":"`+a+`","otp":"`+ca+`"}`).status)
	h.clock.Add(time.Millisecond)
	b := h.generate(`{"to":{"mobile":"+4798765432"},"foreign_id":"b"}`)
	cb := h.code("sms")
	wrong := "000000"
	if cb == wrong {
		wrong = "111111"
	}
	require.Equal(h.t, http.StatusBadRequest, h.kaleyra("/verify/validate", `{"verify_id":"`+b+`","otp":"`+wrong+`"}`).status)
	h.clock.Add(time.Millisecond)
	res := h.ways("/send", `{"to":"ana@example.com","channel":"email"}`)
	require.Equal(h.t, http.StatusOK, res.status)
	var sent struct {
		SessionID string `json:"session_id"`
	}
	require.NoError(h.t, json.Unmarshal(res.body, &sent))
	cc := h.code("email")
	require.Equal(h.t, http.StatusOK, h.ways("/check", `{"session_id":"`+sent.SessionID+`","code":"`+cc+`"}`).status)
	return []string{a, b, sent.SessionID}, []string{ca, cb, cc}
}

func TestAdminReports(t *testing.T) {
	h := newHarness(t)
	ids, _ := h.seed()

	res := h.admin("GET", "/verifications", "")
	require.Equal(t, http.StatusOK, res.status, res.String())
	var page verify.Page
	require.NoError(t, json.Unmarshal(res.body, &page))
	require.Len(t, page.Verifications, 3)
	assert.Equal(t, ids[2], page.Verifications[0].ID, "newest first")
	assert.Equal(t, "a***@example.com", page.Verifications[0].To.Email)
	assert.Equal(t, "+47******67", page.Verifications[2].To.Phone)
	assert.NotContains(t, res.String(), "+4791234567", "masked by default")

	res = h.admin("GET", "/verifications?unmasked=1&status=verified", "")
	require.NoError(t, json.Unmarshal(res.body, &page))
	require.Len(t, page.Verifications, 2)
	assert.Equal(t, "+4791234567", page.Verifications[1].To.Phone)

	res = h.admin("GET", "/verifications?limit=2", "")
	require.NoError(t, json.Unmarshal(res.body, &page))
	require.Len(t, page.Verifications, 2)
	require.NotEmpty(t, page.Next)
	res = h.admin("GET", "/verifications?limit=2&cursor="+url.QueryEscape(page.Next), "")
	page = verify.Page{}
	require.NoError(t, json.Unmarshal(res.body, &page))
	require.Len(t, page.Verifications, 1)
	assert.Equal(t, ids[0], page.Verifications[0].ID)
	assert.Empty(t, page.Next)

	res = h.admin("GET", "/verifications?channel=email", "")
	require.NoError(t, json.Unmarshal(res.body, &page))
	require.Len(t, page.Verifications, 1)

	for _, bad := range []string{"status=lost", "limit=0x", "from=yesterday", "cursor=nope"} {
		res = h.admin("GET", "/verifications?"+bad, "")
		assert.Equal(t, http.StatusBadRequest, res.status, bad)
		assert.Contains(t, res.String(), `"code":"E809"`, bad)
	}

	res = h.admin("GET", "/verifications/"+ids[1], "")
	require.Equal(t, http.StatusOK, res.status)
	v := decodeData[verify.Verification](t, res)
	assert.Equal(t, 1, v.Attempts)
	assert.Equal(t, "+47******32", v.To.Phone)
	res = h.admin("POST", "/verifications/"+ids[1]+"/cancel", "")
	require.Equal(t, http.StatusOK, res.status)
	assert.Equal(t, verify.StatusCanceled, decodeData[verify.Verification](t, res).Status)
	res = h.admin("POST", "/verifications/"+ids[1]+"/resend", "")
	assert.Equal(t, http.StatusGone, res.status)
	assert.Contains(t, res.String(), `"code":"E914"`)

	res = h.admin("GET", "/stats", "")
	require.Equal(t, http.StatusOK, res.status, res.String())
	var st statsJSON
	require.NoError(t, json.Unmarshal(res.body, &st))
	assert.Equal(t, 3, st.Total)
	assert.Equal(t, 3, st.Sent)
	assert.Equal(t, 2, st.Verified)
	assert.Equal(t, 2, st.ByStatus[verify.StatusVerified])
	assert.Equal(t, 1, st.ByStatus[verify.StatusCanceled])
	assert.Equal(t, verify.ChannelStats{Deliveries: 2, Sent: 2, Verifications: 2, Verified: 1, Conversion: 0.5}, st.Channels["sms"])
	assert.Equal(t, 1.0, st.Channels["email"].Conversion)

	res = h.admin("GET", "/report.csv", "")
	require.Equal(t, http.StatusOK, res.status)
	assert.Equal(t, "text/csv; charset=utf-8", res.header.Get("Content-Type"))
	rows, err := csv.NewReader(strings.NewReader(res.String())).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 4)
	assert.Equal(t, verify.CSVHeader, rows[0])
	assert.Equal(t, "+47******67", rows[3][4])
	assert.NotContains(t, res.String(), "+4791234567")

	res = h.admin("GET", "/report.csv?unmasked=1&status=verified", "")
	rows, err = csv.NewReader(strings.NewReader(res.String())).ReadAll()
	require.NoError(t, err)
	require.Len(t, rows, 3)
	assert.Equal(t, "+4791234567", rows[2][4])

	res = h.admin("GET", "/report.csv?from=nope", "")
	assert.Equal(t, http.StatusBadRequest, res.status)
}

// twilioSign signs a callback as Twilio does: Base64(HMAC-SHA1(token,
// URL + each POST parameter's name and value, sorted by name)).
func twilioSign(token, fullURL string, form url.Values) string {
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(fullURL))
	for _, k := range keys {
		mac.Write([]byte(k + form.Get(k)))
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func TestTwilioStatusCallback(t *testing.T) {
	const token, public = "twilio-auth-token", "https://verify.example.com/hooks/twilio"
	h := newHarness(t, WithTwilioHook(TwilioHook{AuthToken: token, PublicURL: public}))
	id := h.generate(`{"to":{"mobile":"+4791234567"}}`)
	msgID := id + "-0"

	post := func(form url.Values, sig string) response {
		return h.do("POST", "/hooks/twilio?message_id="+url.QueryEscape(msgID), form.Encode(),
			"Content-Type: application/x-www-form-urlencoded", "X-Twilio-Signature: "+sig)
	}
	form := url.Values{"MessageSid": {"SM123"}, "MessageStatus": {"delivered"}}
	res := post(form, "bm90IGEgc2lnbmF0dXJl")
	assert.Equal(t, http.StatusForbidden, res.status)

	res = post(form, twilioSign(token, public+"?message_id="+url.QueryEscape(msgID), form))
	require.Equal(t, http.StatusNoContent, res.status, res.String())
	v, err := h.eng.Get(h.ctx, id)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusDelivered, v.Status)
	assert.Equal(t, verify.DeliveryDelivered, v.Deliveries[0].Status)

	// Without Twilio configured there is no such route.
	h2 := newHarness(t)
	assert.Equal(t, http.StatusNotFound, h2.do("POST", "/hooks/twilio", "x=1").status)
}

// TestAdminStepLanguageAndText: a catalog flow's step may have its own
// language; a text of its own is for ad-hoc flows only, and "text" is not
// a field of the admin API's steps.
func TestAdminStepLanguageAndText(t *testing.T) {
	h := newHarness(t)
	res := h.admin("POST", "/flows", `{"name":"call-in-english","steps":[{"channel":"sms"},{"channel":"voice","after":30,"language":"en-US"}]}`)
	require.Equal(t, http.StatusCreated, res.status, res.String())
	f := decodeData[flowJSON](t, res)
	assert.Equal(t, "en-US", f.Steps[1].Language)
	stored, err := h.eng.Flow(h.ctx, f.ID)
	require.NoError(t, err)
	assert.Equal(t, "en-US", stored.Steps[1].Language)

	res = h.admin("POST", "/flows", `{"name":"x","steps":[{"channel":"voice","language":"English"}]}`)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.String(), `"parameter":"steps[0].language"`)
	res = h.admin("POST", "/flows", `{"name":"x","steps":[{"channel":"sms","text":"{code}"}]}`)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.String(), `unknown field \"text\"`)
}
