package verify_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

func TestBuiltinTextsPerLanguage(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	want := map[string]string{
		"en": "Your verification code is",
		"es": "Tu código de verificación es",
		"fr": "Votre code de vérification est",
		"de": "Ihr Bestätigungscode lautet",
		"pt": "Seu código de verificação é",
		"hi": "आपका सत्यापन कोड",
		"ar": "رمز التحقق الخاص بك هو",
	}
	require.ElementsMatch(t, verify.BuiltinLanguages(), keysOf(want))
	for lang, prefix := range want {
		t.Run(lang, func(t *testing.T) {
			_, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana, Language: lang})
			require.NoError(t, err)
			m, _ := h.sms.Last()
			assert.True(t, strings.HasPrefix(m.Body, prefix), m.Body)
			assert.Contains(t, m.Body, m.Code)
			assert.Contains(t, m.Body, "5")
			assert.Equal(t, lang, m.Language)
		})
	}
	// The Arabic text isolates the code so it reads left to right.
	_, err := h.eng.Send(h.ctx, verify.SendRequest{To: ana, Language: "ar"})
	require.NoError(t, err)
	m, _ := h.sms.Last()
	assert.Contains(t, m.Body, "\u2066"+m.Code+"\u2069")

	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: ana, Language: "pt-BR"})
	require.NoError(t, err)
	m, _ = h.sms.Last()
	assert.Equal(t, "pt", m.Language, "a regional tag falls back to its base language")
	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: ana, Language: "sw"})
	require.NoError(t, err)
	m, _ = h.sms.Last()
	assert.Equal(t, "en", m.Language, "an unsupported language falls back to English")

	_, err = h.eng.Send(h.ctx, verify.SendRequest{To: ana, Language: "not a tag"})
	requireCode(t, err, verify.ErrInvalidParameter)
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestLanguageFromPhoneNumber(t *testing.T) {
	h := newHarness(t)
	h.flow(verify.Step{Channel: "sms"})
	for phone, lang := range map[string]string{
		"+34600123456":   "es",
		"+5511987654321": "pt",
		"+4915112345678": "de",
		"+33612345678":   "fr",
		"+919812345678":  "hi",
		"+971501234567":  "ar",
		"+4712345678":    "en", // not covered: the flow's language
	} {
		_, err := h.eng.Send(h.ctx, verify.SendRequest{To: verify.Recipient{Phone: phone}})
		require.NoError(t, err)
		m, _ := h.sms.Last()
		assert.Equal(t, lang, m.Language, phone)
	}
}

func TestTemplatePerLanguage(t *testing.T) {
	h := newHarness(t)
	mk := func(lang, body string) verify.Template {
		tpl, err := h.eng.CreateTemplate(h.ctx, verify.Template{Name: "login", Channel: "sms", Language: lang, Body: body})
		require.NoError(t, err)
		require.NoError(t, h.eng.ApproveTemplate(h.ctx, tpl.ID))
		return tpl
	}
	en := mk("en", "Login code {code}")
	es := mk("es", "Código {code}")
	mk("pt-BR", "Código BR {code}")
	pending, err := h.eng.CreateTemplate(h.ctx, verify.Template{Name: "login", Channel: "sms", Language: "fr", Body: "Code FR {code}"})
	require.NoError(t, err)
	_ = pending
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "l10n", Language: "es", Duplicates: verify.DuplicateAllow,
		Steps: []verify.Step{{Channel: "sms", Template: en.ID}}})
	require.NoError(t, err)

	for lang, want := range map[string]string{
		"en":    "Login code ",
		"es":    "Código ",
		"es-MX": "Código ",
		"pt-BR": "Código BR ",
		"pt":    "Código BR ",
		"fr":    "Código ", // the French one is not approved: the flow's language
		"de":    "Código ",
	} {
		_, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana, Language: lang})
		require.NoError(t, err)
		m, _ := h.sms.Last()
		assert.Equal(t, want+m.Code, m.Body, lang)
	}
	_, err = h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana, Language: "es"})
	require.NoError(t, err)
	m, _ := h.sms.Last()
	assert.Equal(t, es.ID, m.Template)
}

func TestAutofillSuffixes(t *testing.T) {
	h := newHarness(t)
	f, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: "web", Steps: []verify.Step{
		{Channel: "sms", WebOTPDomain: "app.example.com"},
		{Channel: "voice", AppHash: "FA+9qCX9VSu", After: time.Minute},
	}})
	require.NoError(t, err)
	v, err := h.eng.Send(h.ctx, verify.SendRequest{FlowID: f.ID, To: ana})
	require.NoError(t, err)
	m, _ := h.sms.Last()
	lines := strings.Split(m.Body, "\n")
	assert.Equal(t, "@app.example.com #"+m.Code, lines[len(lines)-1], "the WebOTP line is the last line")
	h.clock.Add(time.Minute)
	h.processDue()
	vm, _ := h.voice.Last()
	assert.True(t, strings.HasSuffix(vm.Body, "\nFA+9qCX9VSu"))
	_ = v

	for name, s := range map[string]verify.Step{
		"both":       {Channel: "sms", WebOTPDomain: "example.com", AppHash: "FA+9qCX9VSu"},
		"bad domain": {Channel: "sms", WebOTPDomain: "https://example.com"},
		"bad hash":   {Channel: "sms", AppHash: "short"},
		"email step": {Channel: "email", WebOTPDomain: "example.com"},
	} {
		_, err := h.eng.CreateFlow(h.ctx, verify.Flow{Name: name, Steps: []verify.Step{s}})
		requireCode(t, err, verify.ErrInvalidFlow)
	}
}
