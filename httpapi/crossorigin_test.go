package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// browserAuth is the basic-auth header a browser keeps sending once it
// was given, the credential a cross-site form post rides on.
var browserAuth = "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+testAdminKey))

// errorOf decodes the JSON error envelope.
func errorOf(t *testing.T, res response) verify.Error {
	t.Helper()
	assert.Equal(t, "application/json", res.header.Get("Content-Type"), "the JSON envelope, not plain text")
	var env struct {
		Error *verify.Error `json:"error"`
	}
	require.NoError(t, json.Unmarshal(res.body, &env), res.String())
	require.NotNil(t, env.Error, res.String())
	return *env.Error
}

func (h *harness) status(id string) verify.Status {
	h.t.Helper()
	v, err := h.eng.Get(h.ctx, id)
	require.NoError(h.t, err)
	return v.Status
}

func (h *harness) flowCount() int {
	h.t.Helper()
	flows, err := h.eng.Flows(h.ctx)
	require.NoError(h.t, err)
	return len(flows)
}

func (h *harness) defaultFlow() string {
	h.t.Helper()
	flows, err := h.eng.Flows(h.ctx)
	require.NoError(h.t, err)
	for _, f := range flows {
		if f.Default {
			return f.ID
		}
	}
	return ""
}

func TestAdminRefusesCrossSiteCancel(t *testing.T) {
	h := newHarness(t)
	id := h.generate(`{"to":{"mobile":"+4791234567"}}`)
	path := "/admin/verifications/" + id + "/cancel"
	form := "Content-Type: application/x-www-form-urlencoded"

	for _, c := range []struct {
		name      string
		headers   []string
		parameter string
	}{
		{"Sec-Fetch-Site cross-site", []string{"Sec-Fetch-Site: cross-site", "Origin: http://evil.example"}, "Sec-Fetch-Site"},
		{"Sec-Fetch-Site same-site", []string{"Sec-Fetch-Site: same-site", "Origin: http://evil.example"}, "Sec-Fetch-Site"},
		{"Origin only", []string{"Origin: http://evil.example"}, "Origin"},
		{"Origin only, X-Admin-Key", []string{"Origin: http://evil.example", adminKey}, "Origin"},
		{"Origin only, no key", []string{"Origin: http://evil.example"}, "Origin"},
	} {
		t.Run(c.name, func(t *testing.T) {
			headers := append([]string{form}, c.headers...)
			if c.name != "Origin only, no key" && c.name != "Origin only, X-Admin-Key" {
				headers = append(headers, browserAuth)
			}
			res := h.do("POST", path, "x=1", headers...)
			assert.Equal(t, http.StatusForbidden, res.status, res.String())
			assert.Empty(t, res.header.Get("WWW-Authenticate"), "a cross-site post must not make the browser ask for the key")
			e := errorOf(t, res)
			assert.Equal(t, verify.ErrUnauthorized.Code, e.Code)
			assert.Equal(t, c.parameter, e.Parameter)
			assert.Contains(t, e.Message, "cross-origin")
			assert.Equal(t, verify.StatusSent, h.status(id), "the verification stays open")
		})
	}
	// Bodyless, as a fetch() without a body would be; the envelope as the
	// README shows it.
	res := h.do("POST", path, "", browserAuth, "Sec-Fetch-Site: cross-site")
	assert.Equal(t, http.StatusForbidden, res.status, res.String())
	assert.Equal(t, `{"error":{"code":"E924","type":"authentication_error","parameter":"Sec-Fetch-Site",`+
		`"message":"cross-origin request refused: the admin API changes state only for requests from its own origin `+
		`or from non-browser clients","reference":""}}`, res.String())
	res = h.do("POST", "/admin/verifications/"+id+"/resend", "", browserAuth, "Sec-Fetch-Site: cross-site")
	assert.Equal(t, http.StatusForbidden, res.status, res.String())
	assert.Equal(t, 1, h.rec["sms"].Calls(), "no resend")
	assert.Equal(t, verify.StatusSent, h.status(id))

	// The same cancel from the server's own origin, and from curl, with no
	// content type: it takes no body.
	for _, c := range []struct {
		name    string
		headers []string
	}{
		{"same-origin", []string{browserAuth, "Sec-Fetch-Site: same-origin", "Origin: " + h.srv.URL}},
		{"Origin matching Host", []string{browserAuth, "Origin: " + h.srv.URL}},
		{"curl", []string{adminKey}},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := h.generate(`{"to":{"mobile":"+4798765432"}}`)
			res := h.do("POST", "/admin/verifications/"+id+"/cancel", "", c.headers...)
			require.Equal(t, http.StatusOK, res.status, res.String())
			assert.Equal(t, verify.StatusCanceled, h.status(id))
		})
	}
}

func TestAdminRequiresJSONContentType(t *testing.T) {
	h := newHarness(t)
	flows, def := h.flowCount(), h.defaultFlow()
	require.NotEmpty(t, def)
	body := `{"name":"evil","steps":[{"channel":"sms"}],"default":true}`

	for _, ct := range []string{"text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
		"multipart/form-data; boundary=x", "application/jsonx", "json", ""} {
		t.Run("Content-Type "+ct, func(t *testing.T) {
			res := h.do("POST", "/admin/flows", body, adminKey, "Content-Type: "+ct)
			assert.Equal(t, http.StatusUnsupportedMediaType, res.status, res.String())
			e := errorOf(t, res)
			assert.Equal(t, verify.ErrInvalidParameter.Code, e.Code)
			assert.Equal(t, "Content-Type", e.Parameter)
			assert.Contains(t, e.Message, "application/json")
			assert.Equal(t, flows, h.flowCount(), "no flow was created")
			assert.Equal(t, def, h.defaultFlow(), "the default flow is unchanged")
		})
	}
	// text/plain is one of the types a cross-site form may send; refused
	// cross-site before the type is looked at.
	res := h.do("POST", "/admin/flows", body, browserAuth, "Content-Type: text/plain", "Sec-Fetch-Site: cross-site")
	assert.Equal(t, http.StatusForbidden, res.status, res.String())
	res = h.do("POST", "/admin/flows", body, browserAuth, "Content-Type: text/plain", "Origin: http://evil.example")
	assert.Equal(t, http.StatusForbidden, res.status, res.String())
	assert.Equal(t, flows, h.flowCount())

	// The other admin routes that take a body.
	tpl := h.flowByName("default").Steps[0].Template
	for _, c := range []struct{ method, path, body string }{
		{"PUT", "/admin/flows/" + def, `{"name":"default","ttl":1,"steps":[{"channel":"sms"}]}`},
		{"POST", "/admin/templates", `{"name":"t","channel":"sms","body":"{code}"}`},
		{"POST", "/admin/templates/" + tpl + "/reject", `{"reason":"x"}`},
	} {
		res := h.do(c.method, c.path, c.body, adminKey, "Content-Type: text/plain")
		assert.Equal(t, http.StatusUnsupportedMediaType, res.status, "%s %s: %s", c.method, c.path, res)
	}
	f, err := h.eng.Flow(h.ctx, def)
	require.NoError(t, err)
	assert.NotEqual(t, 1, int(f.TTL.Seconds()), "the flow was not updated")
	got, err := h.eng.Template(h.ctx, tpl)
	require.NoError(t, err)
	assert.Equal(t, verify.TemplateApproved, got.Status, "the template was not rejected")

	// Same-origin and curl with application/json (parameters allowed).
	for i, headers := range [][]string{
		{browserAuth, "Sec-Fetch-Site: same-origin", "Origin: " + h.srv.URL, "Content-Type: application/json"},
		{adminKey, "Content-Type: application/json; charset=utf-8"},
		{adminKey, "Content-Type: Application/JSON ; charset=UTF-8"},
	} {
		name := []string{"a", "b", "c"}[i]
		res := h.do("POST", "/admin/flows", `{"name":"`+name+`","steps":[{"channel":"sms"}]}`, headers...)
		require.Equal(t, http.StatusCreated, res.status, res.String())
		assert.Equal(t, flows+i+1, h.flowCount())
	}
	res = h.do("PUT", "/admin/flows/"+def, `{"name":"default","ttl":600,"steps":[{"channel":"sms"}],"default":true}`,
		browserAuth, "Sec-Fetch-Site: same-origin")
	require.Equal(t, http.StatusOK, res.status, res.String())
	assert.Equal(t, def, h.defaultFlow())
}

func TestAdminCrossSiteDeleteAndApprove(t *testing.T) {
	h := newHarness(t)
	res := h.admin("POST", "/templates", `{"name":"login","channel":"sms","body":"{code}"}`)
	require.Equal(t, http.StatusCreated, res.status, res.String())
	tpl := decodeData[verify.Template](t, res)
	res = h.do("POST", "/admin/templates/"+tpl.ID+"/approve", "", browserAuth, "Sec-Fetch-Site: cross-site")
	assert.Equal(t, http.StatusForbidden, res.status, res.String())
	got, err := h.eng.Template(h.ctx, tpl.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.TemplatePending, got.Status)

	flow := h.flowByName("sms-then-email")
	res = h.do("DELETE", "/admin/flows/"+flow.ID, "", browserAuth, "Origin: http://evil.example")
	assert.Equal(t, http.StatusForbidden, res.status, res.String())
	_, err = h.eng.Flow(h.ctx, flow.ID)
	require.NoError(t, err, "the flow is still there")

	res = h.do("POST", "/admin/templates/"+tpl.ID+"/approve", "", browserAuth, "Sec-Fetch-Site: same-origin")
	require.Equal(t, http.StatusOK, res.status, res.String())
	res = h.do("DELETE", "/admin/flows/"+flow.ID, "", adminKey)
	assert.Equal(t, http.StatusNoContent, res.status, res.String())
}

// GET stays as it was, a cross-site link to the CSV included: it changes
// nothing.
func TestAdminGetsAllowedCrossSite(t *testing.T) {
	h := newHarness(t)
	for _, path := range []string{"/admin/flows", "/admin/verifications", "/admin/stats", "/admin/report.csv"} {
		for _, headers := range [][]string{
			{browserAuth, "Sec-Fetch-Site: cross-site"},
			{browserAuth, "Sec-Fetch-Site: same-origin"},
			{adminKey},
		} {
			res := h.do("GET", path, "", headers...)
			assert.Equal(t, http.StatusOK, res.status, "%s %v: %s", path, headers, res)
		}
	}
	res := h.do("GET", "/admin/flows", "", "Sec-Fetch-Site: cross-site")
	assert.Equal(t, http.StatusUnauthorized, res.status, "the key is still required")
}
