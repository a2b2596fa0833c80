package verify_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func TestFlowCacheAcrossEngines(t *testing.T) {
	h := newHarness(t)
	f := h.flow(verify.Step{Channel: "sms"})
	other := h.engine()
	v1, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, 5, v1.AttemptsRemaining)

	f.MaxAttempts = 3
	_, err = other.UpdateFlow(h.ctx, f)
	require.NoError(t, err)
	v2, err := other.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, 3, v2.AttemptsRemaining, "the engine that changed the flow sees it at once")

	v3, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, 5, v3.AttemptsRemaining, "another engine may use its cached flow for up to the TTL")
	h.clock.Add(5 * time.Second)
	v4, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, 3, v4.AttemptsRemaining, "after the TTL it reads the flow again")

	uncached := h.engine(verify.WithFlowCache(0))
	_, err = uncached.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	f.MaxAttempts = 7
	_, err = other.UpdateFlow(h.ctx, f)
	require.NoError(t, err)
	v5, err := uncached.Send(h.ctx, verify.SendRequest{To: ana})
	require.NoError(t, err)
	assert.Equal(t, 7, v5.AttemptsRemaining, "WithFlowCache(0) reads the flow on every Send")

	require.NoError(t, other.DeleteFlow(h.ctx, f.ID))
	_, err = other.Send(h.ctx, verify.SendRequest{To: ana})
	requireCode(t, err, verify.ErrNotFound)
	_, err = verify.New(h.store, verify.WithFlowCache(-time.Second))
	assert.Error(t, err)
}

func TestCheckOnAnotherEngine(t *testing.T) {
	h := newHarness(t)
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "ip", AllowedIPs: []string{"192.0.2.0/24"},
		Steps: []verify.Step{{Channel: "sms"}}})
	require.NoError(t, err)
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana, IPAddress: "192.0.2.1"})
	require.NoError(t, err)
	m, _ := h.sms.Last()

	// An engine that never saw the verification reads it first, and applies
	// the same rules.
	b := h.engine()
	_, err = b.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "198.51.100.1"})
	requireCode(t, err, verify.ErrIPNotAllowed)
	_, err = b.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: wrong(m.Code), IPAddress: "192.0.2.9"})
	requireCode(t, err, verify.ErrInvalidOTP)
	_, err = b.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "192.0.2.9"})
	require.NoError(t, err)

	// Both engines now answer alike for the ended verification.
	for _, e := range []*verify.Engine{h.eng, b, h.engine()} {
		_, err = e.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "192.0.2.9"})
		requireCode(t, err, verify.ErrAlreadyVerified)
		_, err = e.Check(h.ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code, IPAddress: "203.0.113.1"})
		requireCode(t, err, verify.ErrIPNotAllowed) // protections come before the state
	}
}

// TestTemplateCacheAcrossEngines: Send renders a template read within the
// flow cache's TTL without reading it again; a change made through the
// same engine is seen at once, one made through another engine within the
// TTL, and WithFlowCache(0) reads templates on every Send.
func TestTemplateCacheAcrossEngines(t *testing.T) {
	h := newHarness(t)
	mk := func(e *verify.Engine, lang, body string) verify.Template {
		tpl, err := e.CreateTemplate(h.ctx, verify.Template{Name: "login", Channel: "sms", Language: lang, Body: body})
		require.NoError(t, err)
		require.NoError(t, e.ApproveTemplate(h.ctx, tpl.ID))
		return tpl
	}
	en := mk(h.eng, "en", "Login code {code}")
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "l10n", Duplicates: verify.DuplicateAllow,
		Steps: []verify.Step{{Channel: "sms", Template: en.ID}}})
	require.NoError(t, err)
	other := h.engine()
	body := func(e *verify.Engine, lang string) (string, error) {
		_, err := e.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana, Language: lang})
		if err != nil {
			return "", err
		}
		m, _ := h.sms.Last()
		return strings.TrimSuffix(m.Body, m.Code), nil
	}
	b, err := body(h.eng, "de")
	require.NoError(t, err)
	assert.Equal(t, "Login code ", b, "no German template: the English one, and the list of templates cached")

	// Another engine adds a German one: this engine sees it after the TTL.
	mk(other, "de", "Anmeldecode {code}")
	b, err = body(other, "de")
	require.NoError(t, err)
	assert.Equal(t, "Anmeldecode ", b, "the engine that added it sees it at once")
	b, err = body(h.eng, "de")
	require.NoError(t, err)
	assert.Equal(t, "Login code ", b, "another engine may use its cached templates for up to the TTL")
	h.clock.Add(5 * time.Second)
	b, err = body(h.eng, "de")
	require.NoError(t, err)
	assert.Equal(t, "Anmeldecode ", b, "after the TTL it reads them again")

	// Another engine rejects the English one: this engine sends it until
	// the TTL has passed, and the engine that rejected it never again.
	_, err = body(h.eng, "en")
	require.NoError(t, err)
	require.NoError(t, other.RejectTemplate(h.ctx, en.ID, "wording"))
	_, err = body(other, "en")
	require.Error(t, err, "the engine that rejected it sends it no more")
	b, err = body(h.eng, "en")
	require.NoError(t, err, "another engine may send its cached template for up to the TTL")
	assert.Equal(t, "Login code ", b)
	h.clock.Add(5 * time.Second)
	_, err = body(h.eng, "en")
	require.Error(t, err, "after the TTL it reads the rejection")

	// Approved again through this engine: seen at once; without a cache, a
	// change through another engine is seen at once too.
	require.NoError(t, h.eng.ApproveTemplate(h.ctx, en.ID))
	_, err = body(h.eng, "en")
	require.NoError(t, err)
	uncached := h.engine(verify.WithFlowCache(0))
	_, err = body(uncached, "en")
	require.NoError(t, err)
	require.NoError(t, other.RejectTemplate(h.ctx, en.ID, "again"))
	_, err = body(uncached, "en")
	require.Error(t, err, "WithFlowCache(0) reads the template on every Send")
}
