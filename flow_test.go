package verify_test

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
)

func TestCreateFlowDefaults(t *testing.T) {
	h := newHarness(t)
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: " login ", Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	assert.NotEmpty(t, f.ID)
	assert.Equal(t, "login", f.Name)
	assert.Equal(t, 6, f.CodeLength)
	assert.Equal(t, verify.Numeric, f.Charset)
	assert.Equal(t, 5*time.Minute, f.TTL)
	assert.Equal(t, 5, f.MaxAttempts)
	assert.Equal(t, start, f.CreatedAt)
	got, err := h.eng.Flow(h.ctx, f.ID)
	require.NoError(t, err)
	assert.Equal(t, f, got)
}

func TestCreateFlowRejects(t *testing.T) {
	h := newHarness(t)
	pending, err := h.eng.CreateTemplate(h.ctx, verify.Template{Name: "p", Channel: "sms", Body: "Code {code}"})
	require.NoError(t, err)
	emailT, err := h.eng.CreateTemplate(h.ctx, verify.Template{Name: "e", Channel: "email", Body: "Code {code}"})
	require.NoError(t, err)
	require.NoError(t, h.eng.ApproveTemplate(h.ctx, emailT.ID))
	sms := []verify.Step{{Channel: "sms"}}

	cases := []struct {
		name  string
		flow  verify.Flow
		code  *verify.Error
		param string
	}{
		{"no name", verify.Flow{Steps: sms}, verify.ErrMissingField, "name"},
		{"no steps", verify.Flow{Name: "x"}, verify.ErrInvalidFlow, "steps"},
		{"too many steps", verify.Flow{Name: "x", Steps: make([]verify.Step, 11)}, verify.ErrInvalidFlow, "steps"},
		{"length 3", verify.Flow{Name: "x", CodeLength: 3, Steps: sms}, verify.ErrInvalidFlow, "code_length"},
		{"length 11", verify.Flow{Name: "x", CodeLength: 11, Steps: sms}, verify.ErrInvalidFlow, "code_length"},
		{"negative length", verify.Flow{Name: "x", CodeLength: -6, Steps: sms}, verify.ErrInvalidFlow, "code_length"},
		{"charset", verify.Flow{Name: "x", Charset: 7, Steps: sms}, verify.ErrInvalidFlow, "charset"},
		{"negative ttl", verify.Flow{Name: "x", TTL: -time.Second, Steps: sms}, verify.ErrInvalidFlow, "ttl"},
		{"ttl too long", verify.Flow{Name: "x", TTL: 25 * time.Hour, Steps: sms}, verify.ErrInvalidFlow, "ttl"},
		{"negative attempts", verify.Flow{Name: "x", MaxAttempts: -1, Steps: sms}, verify.ErrInvalidFlow, "max_attempts"},
		{"too many attempts", verify.Flow{Name: "x", MaxAttempts: 101, Steps: sms}, verify.ErrInvalidFlow, "max_attempts"},
		{"unknown channel", verify.Flow{Name: "x", Steps: []verify.Step{{Channel: "fax"}}}, verify.ErrUnknownChannel, "steps[0].channel"},
		{"empty channel", verify.Flow{Name: "x", Steps: []verify.Step{{}}}, verify.ErrMissingField, "steps[0].channel"},
		{"negative after", verify.Flow{Name: "x", Steps: []verify.Step{{Channel: "sms"}, {Channel: "email", After: -time.Second}}},
			verify.ErrInvalidFlow, "steps[1].after"},
		{"first step delayed", verify.Flow{Name: "x", Steps: []verify.Step{{Channel: "sms", After: time.Second}}},
			verify.ErrInvalidFlow, "steps[0].after"},
		{"step after expiry", verify.Flow{Name: "x", TTL: time.Minute, Steps: []verify.Step{{Channel: "sms"}, {Channel: "email", After: 40 * time.Second}, {Channel: "voice", After: 20 * time.Second}}},
			verify.ErrInvalidFlow, "steps[2].after"},
		{"unknown template", verify.Flow{Name: "x", Steps: []verify.Step{{Channel: "sms", Template: "nope"}}}, verify.ErrNotFound, "steps[0].template"},
		{"pending template", verify.Flow{Name: "x", Steps: []verify.Step{{Channel: "sms", Template: pending.ID}}}, verify.ErrTemplateNotApproved, "steps[0].template"},
		{"template of another channel", verify.Flow{Name: "x", Steps: []verify.Step{{Channel: "sms", Template: emailT.ID}}}, verify.ErrInvalidFlow, "steps[0].template"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.eng.CreateFlow(h.ctx, c.flow)
			e := requireCode(t, err, c.code)
			assert.Equal(t, c.param, e.Parameter)
			assert.NotEmpty(t, e.Message)
		})
	}
	flows, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	assert.Empty(t, flows, "nothing is stored for a rejected flow")
}

func TestDefaultFlow(t *testing.T) {
	h := newHarness(t)
	_, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	e := requireCode(t, err, verify.ErrNotFound)
	assert.Equal(t, "flow_id", e.Parameter)

	a, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "a", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	b, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "b", Default: true, Steps: []verify.Step{{Channel: "email"}}})
	require.NoError(t, err)
	a, err = h.eng.Flow(h.ctx, a.ID)
	require.NoError(t, err)
	assert.False(t, a.Default, "a new default flow unsets the old one")
	v, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, b.ID, v.FlowID)
	assert.Equal(t, 1, h.email.Len())

	_, err = h.eng.Send(h.ctx, verify.SendRequest{FlowID: "4d3d0959-805e-43fa-bece-5815ce0795a2", To: ana})
	e = requireCode(t, err, verify.ErrNotFound)
	assert.Equal(t, "flow_id", e.Parameter)
}

func TestUpdateAndDeleteFlow(t *testing.T) {
	h := newHarness(t)
	f := h.flow(verify.Step{Channel: "sms"}, verify.Step{Channel: "email", After: 30 * time.Second})
	v, code := h.send()

	f.Steps = []verify.Step{{Channel: "voice"}}
	f.MaxAttempts = 2
	upd, err := h.eng.UpdateFlow(h.ctx, f)
	require.NoError(t, err)
	assert.Equal(t, 2, upd.MaxAttempts)
	assert.Equal(t, start, upd.CreatedAt)
	_, err = h.eng.UpdateFlow(h.ctx, verify.Flow{ID: "nope", Name: "x", Steps: f.Steps})
	requireCode(t, err, verify.ErrNotFound)
	_, err = h.eng.UpdateFlow(h.ctx, verify.Flow{ID: f.ID, Name: "x"})
	requireCode(t, err, verify.ErrInvalidFlow)

	require.NoError(t, h.eng.DeleteFlow(h.ctx, f.ID))
	requireCode(t, h.eng.DeleteFlow(h.ctx, f.ID), verify.ErrNotFound)
	_, err = h.eng.Flow(h.ctx, f.ID)
	requireCode(t, err, verify.ErrNotFound)

	// The started verification keeps the steps it started with.
	h.clock.Add(30 * time.Second)
	assert.Equal(t, 1, h.processDue())
	assert.Equal(t, 1, h.email.Len())
	assert.Equal(t, 0, h.voice.Len())
	_, err = h.check(v.ID, code)
	require.NoError(t, err)
}

func TestTemplates(t *testing.T) {
	h := newHarness(t)
	tpl, err := h.eng.CreateTemplate(h.ctx, verify.Template{Name: "login", Channel: "sms",
		Body: "{brand}: {token} is your code, valid {minutes} min. {app}", Language: "pt-BR"})
	require.NoError(t, err)
	assert.Equal(t, verify.TemplatePending, tpl.Status)

	_, err = h.eng.CreateFlow(h.ctx, verify.Flow{Name: "x", Steps: []verify.Step{{Channel: "sms", Template: tpl.ID}}})
	requireCode(t, err, verify.ErrTemplateNotApproved)

	require.NoError(t, h.eng.RejectTemplate(h.ctx, tpl.ID, "no opt-out"))
	got, err := h.eng.Template(h.ctx, tpl.ID)
	require.NoError(t, err)
	assert.Equal(t, verify.TemplateRejected, got.Status)
	assert.Equal(t, "no opt-out", got.Reason)

	require.NoError(t, h.eng.ApproveTemplate(h.ctx, tpl.ID))
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "x", Brand: "Acme", TTL: 10 * time.Minute, Duplicates: verify.DuplicateAllow,
		Steps: []verify.Step{{Channel: "sms", Template: tpl.ID}, {Channel: "email", After: time.Minute}}})
	require.NoError(t, err)
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	m, _ := h.sms.Last()
	assert.Equal(t, "Acme: "+m.Code+" is your code, valid 10 min. Acme", m.Body)
	assert.Equal(t, "pt-BR", m.Language)
	assert.Equal(t, tpl.ID, m.Template)

	// The built-in text with a brand.
	h.clock.Add(time.Minute)
	h.processDue()
	em, _ := h.email.Last()
	assert.Equal(t, "Acme: Your verification code is "+m.Code+". It expires in 9 minutes.", em.Body)

	// A template rejected after the flow was made: its step fails and the
	// next one is tried.
	require.NoError(t, h.eng.RejectTemplate(h.ctx, tpl.ID, "revoked"))
	v2, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	require.Len(t, v2.Deliveries, 2)
	assert.Equal(t, verify.DeliveryFailed, v2.Deliveries[0].Status)
	assert.Contains(t, v2.Deliveries[0].Error, "not approved")
	assert.Equal(t, "email", v2.Deliveries[1].Channel)
	_ = v

	list, err := h.eng.Templates(h.ctx)
	require.NoError(t, err)
	assert.Len(t, list, 1)
	requireCode(t, h.eng.ApproveTemplate(h.ctx, "nope"), verify.ErrNotFound)
	requireCode(t, h.eng.ApproveTemplate(h.ctx, ""), verify.ErrMissingField)
	_, err = h.eng.Template(h.ctx, "nope")
	requireCode(t, err, verify.ErrNotFound)
}

func TestTemplateValidation(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name  string
		tpl   verify.Template
		code  *verify.Error
		param string
	}{
		{"no name", verify.Template{Channel: "sms", Body: "{code}"}, verify.ErrMissingField, "name"},
		{"no channel", verify.Template{Name: "x", Body: "{code}"}, verify.ErrMissingField, "channel"},
		{"unknown channel", verify.Template{Name: "x", Channel: "fax", Body: "{code}"}, verify.ErrUnknownChannel, "channel"},
		{"no body", verify.Template{Name: "x", Channel: "sms", Body: "  "}, verify.ErrMissingField, "body"},
		{"no code placeholder", verify.Template{Name: "x", Channel: "sms", Body: "Hello {minutes}"}, verify.ErrInvalidTemplate, "body"},
		{"unknown placeholder", verify.Template{Name: "x", Channel: "sms", Body: "{code} {name}"}, verify.ErrInvalidTemplate, "body"},
		{"bad language", verify.Template{Name: "x", Channel: "sms", Body: "{code}", Language: "english!"}, verify.ErrInvalidTemplate, "language"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.eng.CreateTemplate(h.ctx, c.tpl)
			e := requireCode(t, err, c.code)
			assert.Equal(t, c.param, e.Parameter)
		})
	}
	tpl, err := h.eng.CreateTemplate(h.ctx, verify.Template{Name: "x", Channel: "sms", Body: "{code}"})
	require.NoError(t, err)
	assert.Equal(t, "en", tpl.Language, "language defaults to en")
}

func TestRecipientValidation(t *testing.T) {
	h := newHarness(t)
	smsOnly := h.flow(verify.Step{Channel: "sms"})
	emailOnly, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "e", Steps: []verify.Step{{Channel: "email"}}})
	require.NoError(t, err)
	both, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "b", Steps: []verify.Step{{Channel: "sms"}, {Channel: "email", After: time.Minute}}})
	require.NoError(t, err)

	cases := []struct {
		name  string
		flow  string
		to    verify.Recipient
		param string
	}{
		{"empty", smsOnly.ID, verify.Recipient{}, "to"},
		{"no plus", smsOnly.ID, verify.Recipient{Phone: "4712345678"}, "to.mobile"},
		{"letters", smsOnly.ID, verify.Recipient{Phone: "+47123abc78"}, "to.mobile"},
		{"too short", smsOnly.ID, verify.Recipient{Phone: "+4712"}, "to.mobile"},
		{"too long", smsOnly.ID, verify.Recipient{Phone: "+1234567890123456"}, "to.mobile"},
		{"leading zero", smsOnly.ID, verify.Recipient{Phone: "+0712345678"}, "to.mobile"},
		{"email only for sms", smsOnly.ID, verify.Recipient{Email: "ana@example.com"}, "to.mobile"},
		{"phone only for email", emailOnly.ID, verify.Recipient{Phone: "+4712345678"}, "to.email"},
		{"display name", emailOnly.ID, verify.Recipient{Email: "Ana <ana@example.com>"}, "to.email"},
		{"no at", emailOnly.ID, verify.Recipient{Email: "ana.example.com"}, "to.email"},
		{"both needed", both.ID, verify.Recipient{Phone: "+4712345678"}, "to.email"},
		{"bad extra email", smsOnly.ID, verify.Recipient{Phone: "+4712345678", Email: "nope"}, "to.email"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: c.flow, To: c.to})
			e := requireCode(t, err, verify.ErrInvalidRecipient)
			assert.Equal(t, c.param, e.Parameter)
		})
	}
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: both.ID, To: verify.Recipient{Phone: " +4712345678 ", Email: "ana@example.com"}})
	require.NoError(t, err)
	assert.Equal(t, "+4712345678", v.To.Phone, "surrounding spaces are trimmed")
}

func TestNewValidation(t *testing.T) {
	_, err := verify.New(nil)
	assert.ErrorContains(t, err, "memstore.New()")
	h := newHarness(t)
	for name, opts := range map[string][]verify.Option{
		"short secret":     {verify.WithSecret([]byte("short"))},
		"no secret":        {verify.WithSecret()},
		"duplicate":        {verify.WithChannels(h.sms, h.sms)},
		"nil channel":      {verify.WithChannels(nil)},
		"nil clock":        {verify.WithClock(nil)},
		"nil logger":       {verify.WithLogger(nil)},
		"zero max sends":   {verify.WithMaxSends(0)},
		"lease < timeout":  {verify.WithLease(time.Second)},
		"zero timeout":     {verify.WithSendTimeout(0)},
		"zero poll":        {verify.WithPollInterval(0)},
		"zero retention":   {verify.WithRetention(0)},
		"zero concurrency": {verify.WithConcurrency(0)},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := verify.New(h.store, append(opts, verify.WithLogger(slog.New(slog.DiscardHandler)))...)
			assert.Error(t, err)
		})
	}
}

func TestNoSecretWarns(t *testing.T) {
	h := newHarness(t)
	buf := &syncBuffer{}
	logger := newTextLogger(buf)
	_, err := verify.New(h.store, verify.WithLogger(logger))
	require.NoError(t, err)
	assert.Contains(t, buf.String(), "no secret configured")
}

// pickyChannel needs a sender on every step.
type pickyChannel struct{ *channels.Recorder }

func (pickyChannel) ValidateStep(s verify.Step) error {
	if s.From == "" {
		return errors.New("a sender ID (From) is required")
	}
	return nil
}

func TestStepValidator(t *testing.T) {
	h := newHarness(t)
	eng := h.engine(verify.WithChannels(pickyChannel{channels.NewRecorder("picky")}))
	_, err := eng.CreateFlow(h.ctx, verify.Flow{Name: "p", Steps: []verify.Step{{Channel: "picky"}}})
	e := requireCode(t, err, verify.ErrInvalidFlow)
	assert.Equal(t, "steps[0]", e.Parameter)
	assert.Contains(t, e.Message, "sender ID")
	_, err = eng.CreateFlow(h.ctx, verify.Flow{Name: "p", Steps: []verify.Step{{Channel: "picky", From: "ACME"}}})
	require.NoError(t, err)
}
