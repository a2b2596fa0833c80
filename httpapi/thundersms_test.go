package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

type thunderSent struct {
	ID        string  `json:"id"`
	Status    string  `json:"status"`
	ForeignID *string `json:"foreign_id"`
	CreatedAt string  `json:"created_at"`
	ExpireAt  string  `json:"expire_at"`
}

func (h *harness) thunderSend(body string) (thunderSent, response) {
	h.t.Helper()
	res := h.do(http.MethodPost, "/api/v2/verify/send", body, thunderKey)
	var out thunderSent
	if res.status == http.StatusOK {
		require.NoError(h.t, json.Unmarshal(res.body, &out))
	}
	return out, res
}

func (h *harness) thunderCheck(id, token string) response {
	return h.do(http.MethodGet, "/api/v2/verify/check/"+id+"/"+token, "", thunderKey)
}

// permissive allows a request's own texts and any sender ID.
var permissive = WithInlinePolicy(InlinePolicy{Text: true, Senders: []string{"*"}})

// stepsOf reads the steps a verification runs, as the store keeps them.
func (h *harness) stepsOf(id string) []verify.Step {
	h.t.Helper()
	rec, err := h.store.GetVerification(h.ctx, id)
	require.NoError(h.t, err)
	return rec.Steps
}

func TestThunderSMSFallback(t *testing.T) {
	h := newHarness(t, permissive)
	body := `{"channels":[
		{"name":"sms","from":"ACME","recipient":{"to":"4791234567"},"order":1,"wait":45},
		{"name":"whatsapp","from":"+4790000000","recipient":{"to":"4791234567"},"order":0,"wait":30},
		{"name":"email","from":"otp@acme.example","recipient":{"to":"ana@example.com"},"order":2}
	],"payload":{"length":"8","timeout":300,"foreign_id":"order-1"}}`
	sent, res := h.thunderSend(body)
	require.Equal(t, http.StatusOK, res.status, res.String())
	require.NotNil(t, sent.ForeignID)
	assert.Equal(t, "order-1", *sent.ForeignID)
	assert.Equal(t, "2026-11-25 09:06:15", sent.ExpireAt, "timeout (300 s) after the last channel's turn (75 s)")

	v, err := h.eng.Get(h.ctx, sent.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.AdHocFlowID("thundersms"), v.FlowID)
	assert.Equal(t, []verify.Step{
		{Channel: "whatsapp", From: "+4790000000"},
		{Channel: "sms", From: "ACME", After: 30 * time.Second},
		{Channel: "email", From: "otp@acme.example", After: 45 * time.Second},
	}, h.stepsOf(sent.ID), "ordered by order; each waits the previous channel's wait")
	assert.Len(t, h.code("whatsapp"), 8)

	h.clock.Add(30 * time.Second)
	require.Equal(t, 1, h.processDue())
	assert.Equal(t, h.code("whatsapp"), h.code("sms"), "the fallback sends the same code")
	h.clock.Add(45 * time.Second)
	require.Equal(t, 1, h.processDue())
	assert.Equal(t, h.code("whatsapp"), h.code("email"))
	m, _ := h.rec["email"].Last()
	assert.Equal(t, "ana@example.com", m.To.Email)

	h.clock.Add(300*time.Second - time.Millisecond)
	res = h.thunderCheck(sent.ID, h.code("email"))
	assert.Equal(t, `{"id":"`+sent.ID+`","status":"success"}`, res.String(), "the last channel's message has the whole timeout")
}

func (h *harness) processDue() int {
	h.t.Helper()
	n, err := h.eng.ProcessDue(h.ctx)
	require.NoError(h.t, err)
	return n
}

func TestThunderSMSPerChannelLanguage(t *testing.T) {
	h := newHarness(t)
	sent, res := h.thunderSend(`{"channels":[
		{"name":"sms","recipient":{"to":"919019955622"},"wait":10},
		{"name":"voice","recipient":{"to":"919019955622"},"language":"en_US"}]}`)
	require.Equal(t, http.StatusOK, res.status, res.String())
	sms, _ := h.rec["sms"].Last()
	assert.Equal(t, "hi", sms.Language, "the SMS in the language of the number's country (+91)")
	h.clock.Add(10 * time.Second)
	require.Equal(t, 1, h.processDue())
	call, _ := h.rec["voice"].Last()
	assert.Equal(t, "en", call.Language, "the voice call in the channel's own language, en_US")
	assert.Equal(t, sms.Code, call.Code)
	assert.Equal(t, "en-US", h.stepsOf(sent.ID)[1].Language)
}

func TestThunderSMSTopLevelParameters(t *testing.T) {
	h := newHarness(t, permissive)
	sent, res := h.thunderSend(`{"channels":[{"name":"sms","recipient":{"to":"4791234567"}}],
		"foreign_id":"top-1","template":"Acme code: {token}","timeout":60,"length":4}`)
	require.Equal(t, http.StatusOK, res.status, res.String())
	require.NotNil(t, sent.ForeignID)
	assert.Equal(t, "top-1", *sent.ForeignID)
	assert.Equal(t, "2026-11-25 09:01:00", sent.ExpireAt)
	m, _ := h.rec["sms"].Last()
	assert.Len(t, m.Code, 4)
	assert.Equal(t, "Acme code: "+m.Code, m.Body)

	// In both places, they must agree.
	_, res = h.thunderSend(`{"channels":[{"name":"sms","recipient":{"to":"4791234568"}}],"foreign_id":"a","payload":{"foreign_id":"a"}}`)
	assert.Equal(t, http.StatusOK, res.status, res.String())
	_, res = h.thunderSend(`{"channels":[{"name":"sms","recipient":{"to":"4791234569"}}],"length":5,"payload":{"length":6}}`)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.String(), `"parameter":"length"`)
}

func TestThunderSMSCustomTemplate(t *testing.T) {
	h := newHarness(t, WithInlinePolicy(InlinePolicy{Text: true, MaxText: 40}))
	_, res := h.thunderSend(`{"channels":[{"name":"sms","recipient":{"to":"+4791234567"}}],
		"payload":{"template":"Use {token} to sign in to Acme"}}`)
	require.Equal(t, http.StatusOK, res.status, res.String())
	m, ok := h.rec["sms"].Last()
	require.True(t, ok)
	assert.Equal(t, "Use "+m.Code+" to sign in to Acme", m.Body)

	for _, c := range []struct{ template, want string }{
		{"no code here", `{"error":{"code":"E807","type":"VALIDATION_ERROR","parameter":"payload.template","message":"template must contain the {token} placeholder","reference":""}}`},
		{"{token} " + strings.Repeat("x", 33), `{"error":{"code":"E807","type":"VALIDATION_ERROR","parameter":"payload.template","message":"template must be at most 40 characters, got 41","reference":""}}`},
		{"{token} {link}", `{"error":{"code":"E807","type":"VALIDATION_ERROR","parameter":"payload.template","message":"unknown placeholder {link} (use {code}, {token}, {minutes}, {brand} or {app})","reference":""}}`},
	} {
		_, res = h.thunderSend(`{"channels":[{"name":"sms","recipient":{"to":"+4791234567"}}],"payload":{"template":"` + c.template + `"}}`)
		assert.Equal(t, http.StatusBadRequest, res.status)
		assert.Equal(t, c.want, res.String())
	}
	assert.Equal(t, 1, h.rec["sms"].Calls())
}

// TestThunderSMSInlinePolicy: by default a request can neither write its
// own text nor pick a sender ID; the policy opens one or both.
func TestThunderSMSInlinePolicy(t *testing.T) {
	phishing := `{"channels":[{"name":"sms","from":"BANK","recipient":{"to":"4791234567"}}],
		"payload":{"template":"BANK: Your account is locked, call +4780000000 and give them {token}"}}`
	text := `{"channels":[{"name":"sms","recipient":{"to":"4791234567"}}],"payload":{"template":"Acme: {token}"}}`
	sender := `{"channels":[{"name":"sms","from":"BANK","recipient":{"to":"4791234567"}}]}`

	h := newHarness(t)
	for _, body := range []string{phishing, text} {
		_, res := h.thunderSend(body)
		assert.Equal(t, http.StatusBadRequest, res.status)
		assert.Equal(t, `{"error":{"code":"E917","type":"validation_error","parameter":"payload.template","message":"a request's own message text is not allowed on this server; the built-in or approved texts are used when template is left out","reference":""}}`, res.String())
	}
	_, res := h.thunderSend(sender)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Equal(t, `{"error":{"code":"E809","type":"VALIDATION_ERROR","parameter":"channels[0].from","message":"sender ID \"BANK\" is not allowed on this server; leave from out to use the channel's own sender","reference":""}}`, res.String())
	assert.Equal(t, 0, h.rec["sms"].Calls(), "nothing was sent")

	// An allow-list of senders, texts still off.
	h = newHarness(t, WithInlinePolicy(InlinePolicy{Senders: []string{"ACME", "Acme Inc"}}))
	_, res = h.thunderSend(sender)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.String(), `"parameter":"channels[0].from"`)
	_, res = h.thunderSend(strings.Replace(sender, "BANK", "Acme Inc", 1))
	require.Equal(t, http.StatusOK, res.status, res.String())
	m, _ := h.rec["sms"].Last()
	assert.Equal(t, "Acme Inc", m.From)
	_, res = h.thunderSend(text)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.String(), `"code":"E917"`)
}

func TestThunderSMSCheckStatuses(t *testing.T) {
	h := newHarness(t)
	send := func(to string) string {
		sent, res := h.thunderSend(`{"channels":[{"name":"sms","recipient":{"to":"` + to + `"}}]}`)
		require.Equal(t, http.StatusOK, res.status, res.String())
		return sent.ID
	}
	id := send("4791234567")
	code := h.code("sms")
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	for _, c := range []struct{ id, token, status string }{
		{id, wrong, "invalid"},
		{id, code, "success"},
		{id, code, "OTP already verified"},
		{"41379328-d3a7-4fcd-be90-d5237f911d76", "123456", "failed"},
	} {
		res := h.thunderCheck(c.id, c.token)
		assert.Equal(t, http.StatusOK, res.status)
		assert.Equal(t, `{"id":"`+c.id+`","status":"`+c.status+`"}`, res.String())
	}

	// The POST form keeps the code out of the URL.
	id = send("4791234568")
	res := h.do(http.MethodPost, "/api/v2/verify/check", `{"id":"`+id+`","token":"`+h.code("sms")+`"}`, thunderKey)
	assert.Equal(t, `{"id":"`+id+`","status":"success"}`, res.String())

	id = send("4791234569")
	h.clock.Add(2 * time.Minute) // the reference's default timeout is 120 s
	res = h.thunderCheck(id, h.code("sms"))
	assert.Equal(t, `{"id":"`+id+`","status":"expired"}`, res.String())

	res = h.thunderCheck(id, "12ab!")
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Equal(t, `{"error":{"code":"E803","type":"VALIDATION_ERROR","parameter":"token","message":"OTP can contain only alphanumeric values.","reference":""}}`, res.String())
}

func TestThunderSMSSearch(t *testing.T) {
	h := newHarness(t, WithInlinePolicy(InlinePolicy{Senders: []string{"VERIFY"}}))
	sent, res := h.thunderSend(`{"channels":[{"name":"sms","from":"VERIFY","recipient":{"to":"919019955622"}}],"payload":{"foreign_id":"ref-1"}}`)
	require.Equal(t, http.StatusOK, res.status, res.String())
	res = h.do(http.MethodGet, "/api/v2/verify/search/"+sent.ID, "", thunderKey)
	require.Equal(t, http.StatusOK, res.status)
	assert.ElementsMatch(t, []string{"id", "to", "reference", "status", "created_at", "expire_at", "channels"}, keysOf(t, res.body))
	var out struct {
		To        string `json:"to"`
		Reference string `json:"reference"`
		Status    string `json:"status"`
		Channels  []struct {
			ID, To, From, Channel, Status string
		} `json:"channels"`
	}
	require.NoError(t, json.Unmarshal(res.body, &out))
	assert.Equal(t, "+919019955622", out.To)
	assert.Equal(t, "ref-1", out.Reference)
	assert.Equal(t, "sent", out.Status)
	require.Len(t, out.Channels, 1)
	assert.Equal(t, sent.ID+"-0", out.Channels[0].ID)
	assert.Equal(t, "VERIFY", out.Channels[0].From)
	assert.Equal(t, "sms", out.Channels[0].Channel)

	res = h.do(http.MethodGet, "/api/v2/verify/search/nope", "", thunderKey)
	assert.Equal(t, http.StatusNotFound, res.status)
	assert.Equal(t, `{"error":{"code":"E909","type":"validation_error","parameter":"id","message":"Record not found","reference":""}}`, res.String())
}

func TestThunderSMSSendErrors(t *testing.T) {
	h := newHarness(t)
	ch := func(extra string) string {
		return `{"channels":[{"name":"sms","recipient":{"to":"4791234567"}` + extra + `}]`
	}
	for _, c := range []struct {
		name, body, code, param string
	}{
		{"no channels", `{"payload":{}}`, "E802", "channels"},
		{"no name", `{"channels":[{"recipient":{"to":"4791234567"}}]}`, "E802", "channels[0].name"},
		{"no recipient", `{"channels":[{"name":"sms"}]}`, "E802", "channels[0].recipient.to"},
		{"unknown channel", `{"channels":[{"name":"rcs","recipient":{"to":"4791234567"}}]}`, "E808", "channels[0].name"},
		{"same order", `{"channels":[{"name":"sms","recipient":{"to":"4791234567"},"order":1},{"name":"voice","recipient":{"to":"4791234567"},"order":1}]}`, "E809", "channels[1].order"},
		{"two numbers", `{"channels":[{"name":"sms","recipient":{"to":"4791234567"}},{"name":"voice","recipient":{"to":"4791234568"}}]}`, "E809", "channels[1].recipient.to"},
		{"negative wait", ch(`,"wait":-1`) + `}`, "E809", "channels[0].wait"},
		{"huge wait", ch(`,"wait":36028797018964268`) + `}`, "E809", "channels[0].wait"},
		{"ttl too short", ch(`,"ttl":10`) + `}`, "E809", "channels[0].ttl"},
		{"ttl too long", ch(`,"ttl":36028797018964268`) + `}`, "E809", "channels[0].ttl"},
		{"flow_id too long", ch(`,"flow_id":"`+strings.Repeat("9", 65)+`"`) + `}`, "E809", "channels[0].flow_id"},
		{"bad language", ch(`,"language":"English please"`) + `}`, "E809", "channels[0].language"},
		{"bad language, reordered", `{"channels":[{"name":"sms","recipient":{"to":"4791234567"},"order":1,"language":"en_US!"},` +
			`{"name":"voice","recipient":{"to":"4791234567"},"order":0}]}`, "E809", "channels[0].language"},
		{"length too long", ch("") + `,"payload":{"length":11}}`, "E809", "payload.length"},
		{"timeout zero", ch("") + `,"payload":{"timeout":0}}`, "E809", "payload.timeout"},
		{"timeout huge", ch("") + `,"payload":{"timeout":36028797018964268}}`, "E809", "payload.timeout"},
		{"waits past a day", `{"channels":[{"name":"sms","recipient":{"to":"4791234567"},"wait":86400},{"name":"voice","recipient":{"to":"4791234567"}}],"payload":{"timeout":60}}`, "E809", "payload.timeout"},
		{"token length", ch("") + `,"payload":{"length":5,"token":"1234"}}`, "E809", "payload.token"},
		{"token charset", ch("") + `,"payload":{"length":4,"token":"12ab"}}`, "E805", "payload.token"},
		{"bad ip", ch("") + `,"payload":{"ip_address":"not-an-ip"}}`, "E809", "payload.ip_address"},
		{"mask not trailing", ch("") + `,"payload":{"ip_address":"192.*.1.*"}}`, "E809", "payload.ip_address"},
		{"bad number", `{"channels":[{"name":"sms","recipient":{"to":"12"}}]}`, "E804", "to.mobile"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, res := h.thunderSend(c.body)
			assert.Equal(t, http.StatusBadRequest, res.status, res.String())
			var env struct{ Error verify.Error }
			require.NoError(t, json.Unmarshal(res.body, &env))
			assert.Equal(t, c.code, env.Error.Code, res.String())
			assert.Equal(t, c.param, env.Error.Parameter, res.String())
		})
	}
	assert.Equal(t, 0, h.rec["sms"].Calls())
}

func TestMaskedIP(t *testing.T) {
	for in, want := range map[string]string{
		"192.168.1.1":        "192.168.1.1",
		"192.168.*.*":        "192.168.0.0",
		"10.1.2.*":           "10.1.2.0",
		"10.*.*.*":           "10.0.0.0",
		"2001:db8::1":        "2001:db8::1",
		"::ffff:192.0.2.128": "192.0.2.128",
		"*.*.*.*":            "",
		"192.*.1.*":          "",
		"192.168.*":          "",
		"192.168.300.*":      "",
		"2001:db8::*":        "",
		"":                   "",
	} {
		got, ok := maskedIP(in)
		assert.Equal(t, want != "", ok, in)
		assert.Equal(t, want, got, in)
	}
}

// TestThunderSMSMaskedIPAddress: the reference's masked ip_address is the
// end user's network for the flow's allow-list and the per-IP limits.
func TestThunderSMSMaskedIPAddress(t *testing.T) {
	p := verify.NoProtection()
	p.IPSends = verify.Rate{Limit: 2, Per: time.Hour}
	h := newHarness(t, WithAdHocFlow(verify.Flow{AllowedIPs: []string{"192.168.0.0/16"}}))
	h.serveOn(h.store, p)
	send := func(to, ip string) response {
		_, res := h.thunderSend(`{"channels":[{"name":"sms","recipient":{"to":"` + to + `"}}],"payload":{"ip_address":"` + ip + `"}}`)
		return res
	}
	assert.Equal(t, http.StatusOK, send("4791234501", "192.168.*.*").status)
	assert.Equal(t, http.StatusOK, send("4791234502", "192.168.*.*").status)
	res := send("4791234503", "192.168.*.*")
	assert.Equal(t, http.StatusTooManyRequests, res.status, "192.168.*.* counts as one client: %s", res)
	assert.Equal(t, http.StatusOK, send("4791234503", "192.168.7.9").status, "an unmasked address is its own client")
	res = send("4791234504", "10.0.*.*")
	assert.Equal(t, http.StatusForbidden, res.status, "not on the allow-list: %s", res)
}

func TestE164ish(t *testing.T) {
	for in, want := range map[string]string{
		"918919512345":    "+918919512345",
		"00918919512345":  "+918919512345",
		"+4791234567":     "+4791234567",
		"ana@example.com": "ana@example.com",
		"91 89195":        "91 89195",
		"":                "",
	} {
		assert.Equal(t, want, e164ish(in), in)
	}
}

// TestThunderSMSSendsLeaveTheCatalogAlone sends 1,000 requests with
// different payloads (channels, orders, waits, lengths, timeouts, texts,
// senders), eight at a time: every one is accepted, and the catalog has
// as many flows and templates as before.
func TestThunderSMSSendsLeaveTheCatalogAlone(t *testing.T) {
	h := newHarness(t, permissive)
	flows, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	templates, err := h.eng.Templates(h.ctx)
	require.NoError(t, err)

	const n, workers = 1000, 8
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				to := fmt.Sprintf("4791%06d", i)
				second := []string{"voice", "whatsapp", "viber"}[i%3]
				body := fmt.Sprintf(`{"channels":[
					{"name":"sms","from":"S%d","recipient":{"to":"%s"},"order":%d,"wait":%d},
					{"name":"%s","recipient":{"to":"%s"},"order":%d}],
					"payload":{"length":%d,"timeout":%d,"template":"Code %d: {token}"}}`,
					i%7, to, i%2, 10+i%50, second, to, 1-i%2, 4+i%7, 60+i, i)
				res := h.do(http.MethodPost, "/api/v2/verify/send", body, thunderKey)
				if res.status != http.StatusOK {
					t.Errorf("send %d: %d %s", i, res.status, res)
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()

	after, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, flows, after, "no flow was added")
	afterT, err := h.eng.Templates(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, templates, afterT, "no template was added")
	page, err := h.eng.List(h.ctx, verify.Query{FlowID: verify.AdHocFlowID("thundersms"), Limit: 1000})
	require.NoError(t, err)
	assert.Len(t, page.Verifications, n)
}
