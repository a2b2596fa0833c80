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

// thunderReferencePayload is the ThunderSMS reference's example request,
// with its masked digits ("xxx", "XXX", "*.*") filled in.
const thunderReferencePayload = `{
  "channels": [
    {
      "name": "whatsapp",
      "from": "91901912345",
      "recipient": {
        "to": "918919512345"
      },
      "order": 0,
      "wait": 60
    },
    {
      "name": "sms",
      "from": "91901912345",
      "recipient": {
        "to": "918919512345"
      },
      "order": 1,
      "wait": 60
    },
    {
      "name": "voice",
      "from": "918068281234",
      "recipient": {
        "to": "918919512345"
      },
      "flow_id": "5876",
      "language": "en_US",
      "order": 2,
      "wait": 60
    },
    {
      "name": "viber",
      "from": "adef759b-fbb3-4452-9aed-518d1c012345",
      "recipient": {
        "to": "918919512345"
      },
      "ttl": 30,
      "order": 3,
      "wait": 60
    }
  ],
  "payload": {
    "length": 5,
    "timeout": 60,
    "token": "12345",
    "ip_address": "192.168.1.1"
  }
}`

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

func TestThunderSMSReferencePayload(t *testing.T) {
	h := newHarness(t)
	sent, res := h.thunderSend(thunderReferencePayload)
	require.Equal(t, http.StatusOK, res.status, res.String())
	assert.ElementsMatch(t, []string{"id", "status", "foreign_id", "created_at", "expire_at"}, keysOf(t, res.body))
	assert.Contains(t, res.String(), `"foreign_id":null`, "no foreign_id is null, as in the reference")
	assert.Equal(t, "sent", sent.Status)
	assert.Equal(t, "2026-11-25 09:00:00", sent.CreatedAt)
	assert.Equal(t, "2026-11-25 09:01:00", sent.ExpireAt, "payload.timeout is the validity")

	m, ok := h.rec["whatsapp"].Last()
	require.True(t, ok)
	assert.Equal(t, "12345", m.Code, "payload.token is the code")
	assert.Equal(t, "+918919512345", m.To.Phone)
	assert.Equal(t, "91901912345", m.From)
	assert.Equal(t, "en", m.Language, "the voice channel's en_US")

	v, err := h.eng.Get(h.ctx, sent.ID)
	require.NoError(t, err)
	f, err := h.eng.Flow(h.ctx, v.FlowID)
	require.NoError(t, err)
	assert.Equal(t, 5, f.CodeLength)
	assert.Equal(t, time.Minute, f.TTL)
	require.Len(t, f.Steps, 1, "with a 60 s code, a step due after 60 s would carry an expired code")
	assert.Equal(t, "whatsapp", f.Steps[0].Channel)

	res = h.thunderCheck(sent.ID, "12345")
	assert.Equal(t, http.StatusOK, res.status)
	assert.Equal(t, `{"id":"`+sent.ID+`","status":"success"}`, res.String())
}

func TestThunderSMSFallbackAndFlowReuse(t *testing.T) {
	h := newHarness(t)
	body := func(to, foreign string) string {
		return `{"channels":[
			{"name":"sms","from":"ACME","recipient":{"to":"` + to + `"},"order":1,"wait":45},
			{"name":"whatsapp","from":"+4790000000","recipient":{"to":"` + to + `"},"order":0,"wait":30},
			{"name":"email","from":"otp@acme.example","recipient":{"to":"ana@example.com"},"order":2}
		],"payload":{"length":"8","timeout":300,"foreign_id":"` + foreign + `"}}`
	}
	before, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	sent, res := h.thunderSend(body("4791234567", "order-1"))
	require.Equal(t, http.StatusOK, res.status, res.String())
	require.NotNil(t, sent.ForeignID)
	assert.Equal(t, "order-1", *sent.ForeignID)
	assert.Equal(t, "2026-11-25 09:05:00", sent.ExpireAt)

	v, err := h.eng.Get(h.ctx, sent.ID)
	require.NoError(t, err)
	f, err := h.eng.Flow(h.ctx, v.FlowID)
	require.NoError(t, err)
	assert.Equal(t, []verify.Step{
		{Channel: "whatsapp", From: "+4790000000"},
		{Channel: "sms", From: "ACME", After: 30 * time.Second},
		{Channel: "email", From: "otp@acme.example", After: 45 * time.Second},
	}, f.Steps, "ordered by order; each waits the previous channel's wait")
	assert.Equal(t, 8, f.CodeLength)
	assert.Len(t, h.code("whatsapp"), 8)

	h.clock.Add(30 * time.Second)
	_, err = h.eng.ProcessDue(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, h.code("whatsapp"), h.code("sms"), "the fallback sends the same code")

	// The same channels for another recipient reuse the flow; other
	// channels make another.
	sent2, res := h.thunderSend(body("4791234568", "order-2"))
	require.Equal(t, http.StatusOK, res.status, res.String())
	v2, err := h.eng.Get(h.ctx, sent2.ID)
	require.NoError(t, err)
	assert.Equal(t, v.FlowID, v2.FlowID)
	_, res = h.thunderSend(strings.Replace(body("4791234569", "order-3"), `"wait":45`, `"wait":46`, 1))
	require.Equal(t, http.StatusOK, res.status, res.String())
	after, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	assert.Len(t, after, len(before)+2)

	// A flow an admin deleted is made again.
	require.NoError(t, h.eng.DeleteFlow(h.ctx, v.FlowID))
	_, res = h.thunderSend(body("4791234570", "order-4"))
	assert.Equal(t, http.StatusOK, res.status, res.String())
}

func TestThunderSMSCustomTemplate(t *testing.T) {
	h := newHarness(t)
	_, res := h.thunderSend(`{"channels":[{"name":"sms","recipient":{"to":"+4791234567"}}],
		"payload":{"template":"Use {token} to sign in to Acme"}}`)
	require.Equal(t, http.StatusOK, res.status, res.String())
	m, ok := h.rec["sms"].Last()
	require.True(t, ok)
	assert.Equal(t, "Use "+m.Code+" to sign in to Acme", m.Body)

	_, res = h.thunderSend(`{"channels":[{"name":"sms","recipient":{"to":"+4791234567"}}],"payload":{"template":"no code here"}}`)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Equal(t, `{"error":{"code":"E807","type":"VALIDATION_ERROR","parameter":"payload.template","message":"body must contain the {code} placeholder","reference":""}}`, res.String())
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
	h := newHarness(t)
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
		{"ttl too short", ch(`,"ttl":10`) + `}`, "E809", "channels[0].ttl"},
		{"length too long", ch("") + `,"payload":{"length":11}}`, "E809", "payload.length"},
		{"timeout zero", ch("") + `,"payload":{"timeout":0}}`, "E809", "payload.timeout"},
		{"token length", ch("") + `,"payload":{"length":5,"token":"1234"}}`, "E809", "payload.token"},
		{"token charset", ch("") + `,"payload":{"length":4,"token":"12ab"}}`, "E805", "payload.token"},
		{"bad ip", ch("") + `,"payload":{"ip_address":"192.168.*.*"}}`, "E809", "payload.ip_address"},
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

func TestThunderSMSConcurrentSendsShareOneFlow(t *testing.T) {
	h := newHarness(t)
	before, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := h.do(http.MethodPost, "/api/v2/verify/send",
				fmt.Sprintf(`{"channels":[{"name":"sms","recipient":{"to":"47912345%02d"}},{"name":"voice","recipient":{"to":"47912345%02d"}}]}`, i, i), thunderKey)
			if res.status != http.StatusOK {
				errs <- res.String()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	after, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	assert.Len(t, after, len(before)+1)
}
