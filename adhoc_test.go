package verify_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/internal/testutil"
)

// adHoc is a two-step ad-hoc flow: an SMS in the flow's text, then a voice
// call in English a minute later.
func adHoc(name, text string) *verify.Flow {
	return &verify.Flow{Name: name, CodeLength: 5, TTL: 3 * time.Minute, Steps: []verify.Step{
		{Channel: "sms", From: "ACME", Text: text},
		{Channel: "voice", After: time.Minute, Language: "en-US"},
	}}
}

func TestAdHocFlowRunsWithoutTheCatalog(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"}) // a catalog with one flow
	before, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)

	v, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana, Language: "nb",
		Flow: adHoc("signup", "Acme: {code} is your code, valid {minutes} min.")})
	require.NoError(t, err)
	assert.Equal(t, verify.AdHocFlowID("signup"), v.FlowID)
	assert.Equal(t, "adhoc:signup", v.FlowID)
	assert.Equal(t, start.Add(3*time.Minute), v.ExpiresAt, "the ad-hoc flow's TTL")

	m, ok := h.sms.Last()
	require.True(t, ok)
	require.Len(t, m.Code, 5, "the ad-hoc flow's code length")
	assert.Equal(t, "Acme: "+m.Code+" is your code, valid 3 min.", m.Body, "the step's own text")
	assert.Equal(t, "nb", m.Language, "the verification's language")
	assert.Equal(t, "ACME", m.From)
	assert.Empty(t, m.Template)

	h.clock.Add(time.Minute)
	require.Equal(t, 1, h.processDue(), "the fallback step, from the verification's own copy of the flow")
	call, ok := h.voice.Last()
	require.True(t, ok)
	assert.Equal(t, m.Code, call.Code)
	assert.Equal(t, "en", call.Language, "the step's language picks the built-in text (English)")
	assert.Contains(t, call.Body, m.Code)

	after, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, before, after, "an ad-hoc flow is never added to the catalog")
	_, err = h.eng.Flow(h.ctx, v.FlowID)
	assert.ErrorIs(t, err, verify.ErrNotFound)

	_, err = h.check(v.ID, m.Code)
	require.NoError(t, err)
}

func TestAdHocFlowsLeaveTheCatalogAlone(t *testing.T) {
	h := newHarness(t)
	for i := range 200 {
		text := strings.Repeat("x", i) + " {code}"
		_, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+47123" + pad(i)},
			Flow: adHoc("api", text)})
		require.NoError(t, err)
	}
	flows, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	assert.Empty(t, flows)
	templates, err := h.eng.Templates(h.ctx)
	require.NoError(t, err)
	assert.Empty(t, templates)
}

// pad writes i in five digits.
func pad(i int) string { return fmt.Sprintf("%05d", i) }

func TestAdHocFlowValidation(t *testing.T) {
	h := newHarness(t)
	tpl, err := h.eng.CreateTemplate(h.ctx, verify.Template{Name: "t", Channel: "sms", Body: "{code}"})
	require.NoError(t, err)
	require.NoError(t, h.eng.ApproveTemplate(h.ctx, tpl.ID))
	good := func() *verify.Flow { return adHoc("x", "{code}") }
	cases := []struct {
		name      string
		req       verify.SendRequest
		code      string
		parameter string
	}{
		{"flow_id and flow", verify.SendRequest{FlowID: "f", Flow: good()}, verify.ErrInvalidParameter.Code, "flow_id"},
		{"id", verify.SendRequest{Flow: func() *verify.Flow { f := good(); f.ID = "mine"; return f }()}, verify.ErrInvalidFlow.Code, "id"},
		{"default", verify.SendRequest{Flow: func() *verify.Flow { f := good(); f.Default = true; return f }()}, verify.ErrInvalidFlow.Code, "default"},
		{"no name", verify.SendRequest{Flow: func() *verify.Flow { f := good(); f.Name = " "; return f }()}, verify.ErrMissingField.Code, "name"},
		{"long name", verify.SendRequest{Flow: func() *verify.Flow { f := good(); f.Name = strings.Repeat("n", 101); return f }()}, verify.ErrInvalidFlow.Code, "name"},
		{"control in name", verify.SendRequest{Flow: func() *verify.Flow { f := good(); f.Name = "a\nb"; return f }()}, verify.ErrInvalidFlow.Code, "name"},
		{"no steps", verify.SendRequest{Flow: &verify.Flow{Name: "x"}}, verify.ErrInvalidFlow.Code, "steps"},
		{"text without code", verify.SendRequest{Flow: adHoc("x", "Your account is locked, call 555")}, verify.ErrInvalidFlow.Code, "steps[0].text"},
		{"unknown placeholder", verify.SendRequest{Flow: adHoc("x", "{code} {url}")}, verify.ErrInvalidFlow.Code, "steps[0].text"},
		{"text too long", verify.SendRequest{Flow: adHoc("x", "{code}"+strings.Repeat("é", 1595))}, verify.ErrInvalidFlow.Code, "steps[0].text"},
		{"text with NUL", verify.SendRequest{Flow: adHoc("x", "{code}\x00")}, verify.ErrInvalidFlow.Code, "steps[0].text"},
		{"text and template", verify.SendRequest{Flow: func() *verify.Flow { f := good(); f.Steps[0].Template = tpl.ID; return f }()}, verify.ErrInvalidFlow.Code, "steps[0].text"},
		{"bad step language", verify.SendRequest{Flow: func() *verify.Flow { f := good(); f.Steps[1].Language = "english!"; return f }()}, verify.ErrInvalidFlow.Code, "steps[1].language"},
		{"unregistered channel", verify.SendRequest{Flow: &verify.Flow{Name: "x", Steps: []verify.Step{{Channel: "fax"}}}}, verify.ErrUnknownChannel.Code, "steps[0].channel"},
		{"step after expiry", verify.SendRequest{Flow: &verify.Flow{Name: "x", TTL: time.Minute, Steps: []verify.Step{{Channel: "sms"}, {Channel: "voice", After: time.Minute}}}}, verify.ErrInvalidFlow.Code, "steps[1].after"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.req.To = ana
			_, err := h.eng.Send(h.ctx, c.req)
			ve, ok := verify.AsError(err)
			require.True(t, ok, "%v", err)
			assert.Equal(t, c.code, ve.Code, ve.Message)
			assert.Equal(t, c.parameter, ve.Parameter, ve.Message)
		})
	}
	assert.Empty(t, h.sms.Messages(), "a refused ad-hoc flow sends nothing")

	// A text that just fits is fine.
	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: ana, Flow: adHoc("x", "{code}"+strings.Repeat("é", 1594))})
	require.NoError(t, err)
	// The same ad-hoc flow with a template instead of a text is fine too.
	f := good()
	f.Steps[0].Text, f.Steps[0].Template = "", tpl.ID
	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4799999999"}, Flow: f})
	require.NoError(t, err)
}

func TestCatalogFlowsRefuseStepText(t *testing.T) {
	h := newHarness(t)
	_, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "f", Steps: []verify.Step{{Channel: "sms", Text: "{code}"}}})
	ve, ok := verify.AsError(err)
	require.True(t, ok, "%v", err)
	assert.Equal(t, verify.ErrInvalidFlow.Code, ve.Code)
	assert.Equal(t, "steps[0].text", ve.Parameter)

	f := h.flow(verify.Step{Channel: "sms"})
	f.Steps[0].Text = "{code}"
	_, err = h.eng.UpdateFlow(h.ctx, f)
	assert.ErrorIs(t, err, verify.ErrInvalidFlow)

	// A step's language is fine in the catalog.
	f.Steps[0].Text = ""
	f.Steps[0].Language = "de"
	_, err = h.eng.UpdateFlow(h.ctx, f)
	require.NoError(t, err)
}

func TestAdHocFlowIdentity(t *testing.T) {
	p := verify.NoProtection()
	p.FlowSends = verify.Rate{Limit: 2, Per: time.Hour}
	h := newHarness(t, verify.WithProtection(p))
	send := func(name, phone, text string) (verify.Verification, error) {
		return h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: phone}, Flow: adHoc(name, text)})
	}

	// The per-flow limit counts every ad-hoc send of one name, whatever
	// its steps, and no other name's.
	_, err := send("a", "+4711111111", "{code} one")
	require.NoError(t, err)
	_, err = send("a", "+4722222222", "{code} two")
	require.NoError(t, err)
	_, err = send("a", "+4733333333", "{code} three")
	assert.ErrorIs(t, err, verify.ErrRateLimited)
	_, err = send("b", "+4733333333", "{code} three")
	require.NoError(t, err)
}

func TestAdHocFlowDuplicates(t *testing.T) {
	h := newHarness(t)
	send := func(name, text string) verify.Verification {
		v, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana, Flow: adHoc(name, text)})
		require.NoError(t, err)
		return v
	}
	first := send("login", "{code} A")
	again := send("login", "{code} A")
	assert.Equal(t, first.ID, again.ID, "the same ad-hoc flow reuses the open verification (DuplicateReuse)")
	assert.Len(t, h.sms.Messages(), 2, "and resends its code")

	other := send("login", "{code} B")
	assert.NotEqual(t, first.ID, other.ID, "other steps are another request: the open one is replaced")
	old, err := h.eng.Get(h.ctx, first.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.StatusCanceled, old.Status)
	m, _ := h.sms.Last()
	assert.Equal(t, m.Code+" B", m.Body)

	elsewhere := send("signup", "{code} B")
	assert.NotEqual(t, other.ID, elsewhere.ID, "another name is another flow")
	still, err := h.eng.Get(h.ctx, other.ID)
	require.NoError(t, err)
	assert.True(t, still.Status.Open(), "and leaves this one open")
}

func TestAdHocFlowIdempotency(t *testing.T) {
	h := newHarness(t)
	req := verify.SendRequest{To: ana, IdempotencyKey: "k1", Flow: adHoc("login", "{code} A")}
	v1, err := h.eng.Send(h.ctx, req)
	require.NoError(t, err)
	v2, err := h.eng.Send(h.ctx, req)
	require.NoError(t, err)
	assert.Equal(t, v1.ID, v2.ID)
	assert.Len(t, h.sms.Messages(), 1)

	req.Flow = adHoc("login", "{code} B")
	_, err = h.eng.Send(h.ctx, req)
	assert.ErrorIs(t, err, verify.ErrIdempotencyMismatch, "the same key with other steps is another request")
}

// TestAdHocFlowConcurrentSends races sends of one ad-hoc flow name with
// different steps to one recipient: one verification stays open, and the
// catalog stays empty.
func TestAdHocFlowConcurrentSends(t *testing.T) {
	h := newHarness(t)
	engines := []*verify.Engine{h.eng, h.engine(), h.engine()}
	testutil.AtOnce(48, func(i int) {
		_, err := engines[i%len(engines)].Send(h.ctx, verify.SendRequest{To: ana,
			Flow: adHoc("login", "{code} variant "+pad(i%4))})
		if err != nil {
			assert.ErrorIs(t, err, verify.ErrRateLimited, "a Send that keeps losing the race answers E918")
		}
	})
	open, err := h.eng.List(h.ctx, verify.Query{FlowID: verify.AdHocFlowID("login"),
		Statuses: []verify.Status{verify.StatusPending, verify.StatusSent, verify.StatusDelivered}})
	require.NoError(t, err)
	assert.Len(t, open.Verifications, 1, "one verification of the ad-hoc flow stays open for the recipient")
	flows, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	assert.Empty(t, flows)
}
