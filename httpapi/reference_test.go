package httpapi

import (
	"encoding/json"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// These tests replay the example requests of the reference documents
// (WAYSCloud's "Send OTP Verification" guide, ThunderSMS's Verify API),
// with their placeholders filled in and nothing else changed, and compare
// each answer with the document's example answer field by field. Kaleyra's
// Validate OTP examples are replayed in kaleyra_test.go
// (TestKaleyraErrorEnvelopes, TestKaleyraGenerateAndValidate), byte for
// byte. WAYSCloud's activation call (POST /v1/dashboard/verify/activate)
// is its account dashboard issuing an API key, not the Verify API: here
// keys come from WithAPIKeys.

// matchDocument compares an answer with a document's example answer: the
// same names at every level of nesting, the same JSON types, and the same
// values, except at the paths in vary, whose values are this request's
// own (an ID, a time): there the type must match, and the format when the
// document's value is a UUID or a ThunderSMS time.
func matchDocument(t testingT, doc string, got []byte, vary ...string) {
	t.Helper()
	var d, g any
	require.NoError(t, json.Unmarshal([]byte(doc), &d), "the document's example")
	require.NoError(t, json.Unmarshal(got, &g), "the answer: %s", got)
	varies := map[string]bool{}
	for _, p := range vary {
		varies[p] = true
	}
	matchValue(t, "", d, g, varies)
}

// testingT is what matchDocument needs of a *testing.T.
type testingT interface {
	Helper()
	Errorf(format string, args ...any)
	FailNow()
}

var (
	uuidRE        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	thunderTimeRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$`)
)

func matchValue(t testingT, path string, doc, got any, vary map[string]bool) {
	t.Helper()
	where := path
	if where == "" {
		where = "(top level)"
	}
	switch d := doc.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !assert.True(t, ok, "%s: an object in the document, %T in the answer", where, got) {
			return
		}
		assert.Equal(t, sortedKeys(d), sortedKeys(g), "%s: the field names", where)
		for k, dv := range d {
			if gv, ok := g[k]; ok {
				p := k
				if path != "" {
					p = path + "." + k
				}
				matchValue(t, p, dv, gv, vary)
			}
		}
	case string:
		g, ok := got.(string)
		if !assert.True(t, ok, "%s: a string in the document, %T in the answer", where, got) {
			return
		}
		if !vary[path] {
			assert.Equal(t, d, g, where)
			return
		}
		if uuidRE.MatchString(d) {
			assert.Regexp(t, uuidRE, g, "%s: a UUID, as in the document", where)
		}
		if thunderTimeRE.MatchString(d) {
			_, err := time.Parse(thunderTime, g)
			assert.NoError(t, err, "%s: a time as the document writes it (%s)", where, d)
		}
		assert.NotEmpty(t, g, where)
	case float64:
		g, ok := got.(float64)
		if assert.True(t, ok, "%s: a number in the document, %T in the answer", where, got) && !vary[path] {
			assert.Equal(t, d, g, where)
		}
	case nil:
		assert.Nil(t, got, "%s: null in the document", where)
	default:
		assert.Equal(t, doc, got, where)
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// mismatches counts the failures matchDocument reports.
type mismatches struct{ n int }

func (m *mismatches) Helper()               {}
func (m *mismatches) Errorf(string, ...any) { m.n++ }
func (m *mismatches) FailNow()              { m.n++ }

// TestMatchDocument shows the comparison fails on each kind of difference.
func TestMatchDocument(t *testing.T) {
	doc := `{"id":"bdd56db3-ecd3-4d20-8ab5-988bdc76795a","status":"sent","foreign_id":null,"n":300,"at":"2023-12-05 08:24:48","o":{"k":"v"}}`
	ok := `{"id":"0b4f6a5e-1c2d-4e3f-8a9b-0c1d2e3f4a5b","status":"sent","foreign_id":null,"n":300,"at":"2026-11-25 09:00:00","o":{"k":"v"}}`
	m := &mismatches{}
	matchDocument(m, doc, []byte(ok), "id", "at")
	assert.Zero(t, m.n, "the same shape")
	for name, answer := range map[string]string{
		"missing field": `{"id":"0b4f6a5e-1c2d-4e3f-8a9b-0c1d2e3f4a5b","status":"sent","n":300,"at":"2026-11-25 09:00:00","o":{"k":"v"}}`,
		"extra field":   strings.Replace(ok, `"n":300`, `"n":300,"x":1`, 1),
		"other value":   strings.Replace(ok, `"sent"`, `"pending"`, 1),
		"other type":    strings.Replace(ok, `"n":300`, `"n":"300"`, 1),
		"not null":      strings.Replace(ok, `"foreign_id":null`, `"foreign_id":""`, 1),
		"not a uuid":    strings.Replace(ok, `0b4f6a5e-1c2d-4e3f-8a9b-0c1d2e3f4a5b`, `sess_1`, 1),
		"other time":    strings.Replace(ok, `2026-11-25 09:00:00`, `2026-11-25T09:00:00Z`, 1),
		"nested":        strings.Replace(ok, `{"k":"v"}`, `{"k":"w"}`, 1),
	} {
		m := &mismatches{}
		matchDocument(m, doc, []byte(answer), "id", "at")
		assert.NotZero(t, m.n, name)
	}
}

// The WAYSCloud guide's example requests and answers.
const (
	waysSMSExample   = `{"to": "+4712345678", "channel": "sms"}`
	waysVoiceExample = `{"to": "+4712345678", "channel": "voice"}`
	waysEmailExample = `{"to": "user@example.com", "channel": "email"}`
	waysSendAnswer   = `{
  "session_id": "sess_abc123",
  "status": "sent",
  "channel": "sms",
  "expires_in": 300
}`
	waysCheckExample = `{
    "session_id": "sess_abc123",
    "code": "123456"
  }`
	waysVerifiedAnswer = `{
  "session_id": "sess_abc123",
  "status": "verified",
  "channel": "sms"
}`
	waysFailedAnswer = `{
  "session_id": "sess_abc123",
  "status": "failed",
  "attempts_remaining": 2
}`
)

// fill replaces a document's placeholders with this test's values.
func fill(doc string, pairs ...string) string {
	return strings.NewReplacer(pairs...).Replace(doc)
}

func TestWAYSCloudReferenceExamples(t *testing.T) {
	for _, c := range []struct{ request, channel, to string }{
		{waysSMSExample, "sms", "+4712345678"},
		{waysVoiceExample, "voice", "+4712345678"},
		{waysEmailExample, "email", "user@example.com"},
	} {
		t.Run(c.channel, func(t *testing.T) {
			h := newHarness(t)
			res := h.ways("/send", c.request)
			require.Equal(t, http.StatusOK, res.status, res.String())
			// The guide shows one answer for the three requests: the
			// channel is the request's.
			matchDocument(t, fill(waysSendAnswer, `"sms"`, `"`+c.channel+`"`), res.body, "session_id")
			var sent struct {
				SessionID string `json:"session_id"`
			}
			require.NoError(t, json.Unmarshal(res.body, &sent))
			code := h.code(c.channel)
			m, _ := h.rec[c.channel].Last()
			assert.Equal(t, c.to, m.To.Phone+m.To.Email)

			// Three wrong codes leave the document's two attempts.
			wrong := "000000"
			if code == wrong {
				wrong = "111111"
			}
			for range 2 {
				require.Equal(t, http.StatusOK, h.ways("/check", fill(waysCheckExample, "sess_abc123", sent.SessionID, "123456", wrong)).status)
			}
			res = h.ways("/check", fill(waysCheckExample, "sess_abc123", sent.SessionID, "123456", wrong))
			assert.Equal(t, http.StatusOK, res.status)
			matchDocument(t, fill(waysFailedAnswer, "sess_abc123", sent.SessionID), res.body)

			res = h.ways("/check", fill(waysCheckExample, "sess_abc123", sent.SessionID, "123456", code))
			assert.Equal(t, http.StatusOK, res.status)
			matchDocument(t, fill(waysVerifiedAnswer, "sess_abc123", sent.SessionID, `"sms"`, `"`+c.channel+`"`), res.body)
		})
	}
}

// TestWAYSCloudReferenceClient runs the guide's Python client as Go: it
// reads session_id from the send and "status" from every check answer,
// which every outcome carries.
func TestWAYSCloudReferenceClient(t *testing.T) {
	h := newHarness(t)
	status := func(res response) string {
		var out map[string]any
		require.NoError(t, json.Unmarshal(res.body, &out), res.String())
		s, ok := out["status"].(string)
		require.True(t, ok, `check.json()["status"] would raise: %s`, res)
		return s
	}
	resp := h.ways("/send", `{"to": "+4712345678", "channel": "sms"}`)
	var sent map[string]any
	require.NoError(t, json.Unmarshal(resp.body, &sent))
	sessionID, _ := sent["session_id"].(string)
	require.NotEmpty(t, sessionID)
	code := h.code("sms")
	assert.Equal(t, "verified", status(h.ways("/check", `{"session_id":"`+sessionID+`","code":"`+code+`"}`)))
	// Every other outcome has a status too, none of them "verified".
	for _, body := range []string{
		`{"session_id":"` + sessionID + `","code":"` + code + `"}`, // already verified
		`{"session_id":"sess_abc123","code":"123456"}`,             // unknown session
		`{"session_id":"` + sessionID + `"}`,                       // no code
		`{"session_id":"` + sessionID + `","code":"12-456"}`,       // not alphanumeric
		`not json`,
	} {
		assert.NotEqual(t, "verified", status(h.ways("/check", body)), body)
	}
	assert.Equal(t, "unauthorized", status(h.do(http.MethodPost, "/v1/verify/check", `{"session_id":"x","code":"1"}`, "X-API-Key: wrong")))
	h.clock.Add(5 * time.Minute)
	resp = h.ways("/send", `{"to": "+4712345679", "channel": "sms"}`)
	require.NoError(t, json.Unmarshal(resp.body, &sent))
	h.clock.Add(5 * time.Minute)
	assert.Equal(t, "expired", status(h.ways("/check", `{"session_id":"`+sent["session_id"].(string)+`","code":"`+h.code("sms")+`"}`)))
}

// thunderReferencePayload is the ThunderSMS reference's example request
// with its placeholder digits ("xxx", "XXX", "xxxxx") filled in; the masked
// ip_address is the document's own.
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
    "ip_address": "192.168.*.*"
  }
}`

// thunderReferenceAnswer is the reference's example answer.
const thunderReferenceAnswer = `{
    "id": "bdd56db3-ecd3-4d20-8ab5-988bdc76795a",
    "status": "sent",
    "foreign_id": null,
    "created_at": "2023-12-05 08:24:48",
    "expire_at": "2023-12-05 08:26:48"
}`

// thunderReferenceSenders are the example's sender IDs, which a server
// must allow (WithInlinePolicy) for the example to pass.
var thunderReferenceSenders = WithInlinePolicy(InlinePolicy{Senders: []string{
	"91901912345", "918068281234", "adef759b-fbb3-4452-9aed-518d1c012345"}})

// TestThunderSMSReferenceExample replays the reference's example: its four
// channels go out in order, a minute apart, while the code is unverified,
// and the code (the example's token) stays valid for the timeout after the
// last one.
func TestThunderSMSReferenceExample(t *testing.T) {
	h := newHarness(t, thunderReferenceSenders)
	sent, res := h.thunderSend(thunderReferencePayload)
	require.Equal(t, http.StatusOK, res.status, res.String())
	matchDocument(t, thunderReferenceAnswer, res.body, "id", "created_at", "expire_at")
	assert.Equal(t, "2026-11-25 09:00:00", sent.CreatedAt)
	assert.Equal(t, "2026-11-25 09:04:00", sent.ExpireAt, "the last channel goes out at 180 s; the code is good for 60 s after it")

	order := []string{"whatsapp", "sms", "voice", "viber"}
	from := []string{"91901912345", "91901912345", "918068281234", "adef759b-fbb3-4452-9aed-518d1c012345"}
	for i, ch := range order {
		if i > 0 {
			h.clock.Add(time.Minute - time.Millisecond)
			require.Equal(t, 0, h.processDue(), "%s is not due before its minute", ch)
			h.clock.Add(time.Millisecond)
			require.Equal(t, 1, h.processDue(), "%s goes out a minute after the previous channel", ch)
		}
		m, ok := h.rec[ch].Last()
		require.True(t, ok, "nothing on %s", ch)
		assert.Equal(t, "12345", m.Code, "payload.token is the code")
		assert.Equal(t, "+918919512345", m.To.Phone)
		assert.Equal(t, from[i], m.From)
		if ch == "voice" {
			assert.Equal(t, "en", m.Language, "the voice channel's language, en_US")
		} else {
			assert.Equal(t, "hi", m.Language, "the recipient's language, from +91")
		}
	}
	rec, err := h.store.GetVerification(h.ctx, sent.ID)
	require.NoError(t, err)
	assert.Equal(t, "192.168.0.0", rec.IPAddress, "the masked address, as its network")
	assert.Equal(t, verify.AdHocFlowID("thundersms"), rec.FlowID)

	h.clock.Add(time.Minute - time.Millisecond)
	res = h.thunderCheck(sent.ID, "12345")
	assert.Equal(t, `{"id":"`+sent.ID+`","status":"success"}`, res.String(), "viber's message still has its minute")
}

// TestThunderSMSReferenceExampleStopsWhenVerified: once the code is
// verified, the channels still waiting are not sent.
func TestThunderSMSReferenceExampleStopsWhenVerified(t *testing.T) {
	h := newHarness(t, thunderReferenceSenders)
	sent, res := h.thunderSend(thunderReferencePayload)
	require.Equal(t, http.StatusOK, res.status, res.String())
	h.clock.Add(time.Minute)
	require.Equal(t, 1, h.processDue())
	assert.Equal(t, 1, h.rec["sms"].Calls())
	res = h.thunderCheck(sent.ID, "12345")
	require.Equal(t, `{"id":"`+sent.ID+`","status":"success"}`, res.String())
	h.clock.Add(5 * time.Minute)
	h.processDue()
	assert.Equal(t, 0, h.rec["voice"].Calls()+h.rec["viber"].Calls(), "nothing after the code was verified")
}

// TestThunderSMSReferenceExampleDefaultPolicy: on a server that allows no
// sender IDs (the default), the example is refused at its first "from",
// saying how to send it, and nothing goes out.
func TestThunderSMSReferenceExampleDefaultPolicy(t *testing.T) {
	h := newHarness(t)
	_, res := h.thunderSend(thunderReferencePayload)
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Equal(t, `{"error":{"code":"E809","type":"VALIDATION_ERROR","parameter":"channels[0].from","message":"sender ID \"91901912345\" is not allowed on this server; leave from out to use the channel's own sender","reference":""}}`, res.String())
	var withoutFrom map[string]any
	require.NoError(t, json.Unmarshal([]byte(thunderReferencePayload), &withoutFrom))
	for _, c := range withoutFrom["channels"].([]any) {
		delete(c.(map[string]any), "from")
	}
	b, err := json.Marshal(withoutFrom)
	require.NoError(t, err)
	_, res = h.thunderSend(string(b))
	require.Equal(t, http.StatusOK, res.status, res.String())
	matchDocument(t, thunderReferenceAnswer, res.body, "id", "created_at", "expire_at")
	m, _ := h.rec["whatsapp"].Last()
	assert.Empty(t, m.From, "the channel's own sender")
}
