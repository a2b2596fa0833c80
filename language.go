package verify

import (
	"context"
	"strings"
)

// Built-in message texts, used by steps without a template. The Arabic
// text wraps the code and brand in directional isolates (U+2066 … U+2069)
// so that a code with letters reads left to right inside right-to-left text.
var builtinTexts = map[string]string{
	"en": "Your verification code is {code}. It expires in {minutes} minutes.",
	"es": "Tu código de verificación es {code}. Caduca en {minutes} minutos.",
	"fr": "Votre code de vérification est {code}. Il expire dans {minutes} minutes.",
	"de": "Ihr Bestätigungscode lautet {code}. Er läuft in {minutes} Minuten ab.",
	"pt": "Seu código de verificação é {code}. Ele expira em {minutes} minutos.",
	"hi": "आपका सत्यापन कोड {code} है। यह {minutes} मिनट में समाप्त हो जाएगा।",
	"ar": "رمز التحقق الخاص بك هو \u2066{code}\u2069. تنتهي صلاحيته خلال {minutes} دقيقة.",
}

// BuiltinLanguages lists the languages of the built-in message texts.
func BuiltinLanguages() []string { return []string{"ar", "de", "en", "es", "fr", "hi", "pt"} }

// builtinText returns the built-in text in lang (or its base language),
// else in English, and the language it chose.
func builtinText(lang, brand string) (string, string) {
	base := baseLanguage(lang)
	text, ok := builtinTexts[base]
	if !ok {
		base, text = "en", builtinTexts["en"]
	}
	if brand != "" {
		if base == "ar" {
			text = "\u2066{brand}\u2069: " + text
		} else {
			text = "{brand}: " + text
		}
	}
	return text, base
}

// baseLanguage returns a tag's primary language subtag, lower-cased:
// "pt-BR" → "pt".
func baseLanguage(tag string) string {
	if i := strings.IndexByte(tag, '-'); i >= 0 {
		tag = tag[:i]
	}
	return strings.ToLower(tag)
}

// callingCodeLanguages maps international calling codes to the language a
// number's owner most likely reads, for SendRequests without a Language.
// The longest matching prefix wins; numbers it does not cover use the
// flow's Language.
var callingCodeLanguages = map[string]string{
	// Spanish
	"34": "es", "52": "es", "54": "es", "56": "es", "57": "es", "58": "es", "51": "es", "53": "es",
	"591": "es", "593": "es", "595": "es", "598": "es", "502": "es", "503": "es", "504": "es",
	"505": "es", "506": "es", "507": "es", "1809": "es", "1829": "es", "1849": "es",
	// French
	"33": "fr", "377": "fr", "221": "fr", "225": "fr", "237": "fr", "226": "fr", "223": "fr",
	"227": "fr", "229": "fr", "228": "fr", "241": "fr", "242": "fr", "243": "fr", "509": "fr",
	// German
	"49": "de", "43": "de", "423": "de",
	// Portuguese
	"351": "pt", "55": "pt", "244": "pt", "258": "pt", "238": "pt", "245": "pt", "239": "pt",
	// Hindi
	"91": "hi",
	// Arabic
	"20": "ar", "212": "ar", "213": "ar", "216": "ar", "218": "ar", "249": "ar", "961": "ar",
	"962": "ar", "963": "ar", "964": "ar", "965": "ar", "966": "ar", "967": "ar", "968": "ar",
	"970": "ar", "971": "ar", "973": "ar", "974": "ar",
}

// languageForPhone guesses a language from an E.164 number's calling code,
// or returns "".
func languageForPhone(phone string) string {
	if len(phone) < 2 || phone[0] != '+' {
		return ""
	}
	digits := phone[1:]
	for n := min(4, len(digits)); n >= 1; n-- {
		if lang, ok := callingCodeLanguages[digits[:n]]; ok {
			return lang
		}
	}
	return ""
}

// resolveLanguage picks a verification's language: the request's, else one
// guessed from the phone number, else the flow's.
func resolveLanguage(req SendRequest, to Recipient, flow Flow) string {
	if req.Language != "" {
		return req.Language
	}
	if lang := languageForPhone(to.Phone); lang != "" {
		return lang
	}
	return flow.Language
}

// pickTemplate returns the approved template to render for a step in lang:
// the step's template itself when its language fits, else the approved
// template with the same Name and Channel in lang (or its base language),
// else one in the fallback language, else the step's template.
func (e *Engine) pickTemplate(ctx context.Context, t Template, lang, fallback string) (Template, error) {
	if lang == "" || strings.EqualFold(t.Language, lang) {
		return t, nil
	}
	all, err := e.sendTemplates(ctx)
	if err != nil {
		return Template{}, err
	}
	var base, def *Template
	for i := range all {
		c := &all[i]
		if c.Name != t.Name || c.Channel != t.Channel || c.Status != TemplateApproved {
			continue
		}
		switch {
		case strings.EqualFold(c.Language, lang):
			return *c, nil
		case base == nil && baseLanguage(c.Language) == baseLanguage(lang):
			base = c
		case def == nil && fallback != "" && strings.EqualFold(c.Language, fallback):
			def = c
		}
	}
	if base != nil {
		return *base, nil
	}
	if def != nil {
		return *def, nil
	}
	return t, nil
}
