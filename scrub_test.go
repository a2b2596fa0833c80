package verify

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scrubIsFixed returns an isCode that compares a candidate with a known code,
// as send() can while it holds the plain code.
func scrubIsFixed(code string) func(string) bool {
	return func(c string) bool { return c == code }
}

// scrubCounted wraps isCode to count its calls per candidate.
func scrubCounted(isCode func(string) bool) (func(string) bool, map[string]int) {
	calls := map[string]int{}
	return func(c string) bool { calls[c]++; return isCode(c) }, calls
}

// scrubSpell spells a code as channels/twilio.go's spokenText does for a voice
// call: one character at a time, joined by ", ".
func scrubSpell(code string) string { return strings.Join(strings.Split(code, ""), ", ") }

func TestScrubCode(t *testing.T) {
	const num, alnum = "482913", "K7QX9M"
	tests := []struct {
		name    string
		text    string
		charset Charset
		want    string
	}{
		{"digits", "rejected: 482913 is not allowed", Numeric, "rejected: is not allowed"},
		{"glued in a longer run", "ref 99482913007 failed", Numeric, "ref 99007 failed"},
		{"glued to letters", "otp=482913&to=x", Numeric, "otp=&to=x"},
		{"spaced", "code 4 8 2 9 1 3 refused", Numeric, "code refused"},
		{"voice, comma-spaced", "Your verification code is " + scrubSpell(num) + ".", Numeric, "Your verification code is."},
		{"commas", "digits 4,8,2,9,1,3 bad", Numeric, "digits bad"},
		{"hyphenated", "otp 482-913 bad", Numeric, "otp bad"},
		{"dotted", "otp 482.913 bad", Numeric, "otp bad"},
		{"dot-spaced", "say 4. 8. 2. 9. 1. 3. now", Numeric, "say. now"},
		{"no-break spaces", "code 482\u00a0913 bad", Numeric, "code bad"},
		{"form-encoded voice", "Twiml=%3CSay%3E4%2C+8%2C+2%2C+9%2C+1%2C+3.%3C%2FSay%3E", Numeric, "Twiml=%3CSay%3E.%3C%2FSay%3E"},
		{"form-encoded spaces", "Body=code+482+913&To=x", Numeric, "Body=code+&To=x"},
		{"form-encoded, between words", "Body=code+482913+sent", Numeric, "Body=code+sent"},
		{"percent-encoded", "q=4%208%202%209%201%203", Numeric, "q="},
		{"alphanumeric", "code K7QX9M rejected", Alphanumeric, "code rejected"},
		{"alphanumeric lower case", "code k7qx9m rejected", Alphanumeric, "code rejected"},
		{"alphanumeric mixed case, spaced", "code k 7 Q x 9 m rejected", Alphanumeric, "code rejected"},
		{"alphanumeric glued to a word", "tokenK7QX9Mend", Alphanumeric, "tokenend"},
		{"alphanumeric voice", "Your code is K, 7, Q, X, 9, M.", Alphanumeric, "Your code is."},
		{"several", "482913 and again 482913, and 4 8 2 9 1 3", Numeric, "and again, and"},
		{"back to back", "x 482913482913 y", Numeric, "x y"},
		{"no occurrence", "invalid number +15551234567 (code 21211)", Numeric, "invalid number +15551234567 (code 21211)"},
		{"no occurrence, odd spacing", "  two  spaces  and  [brackets]  ", Numeric, "  two  spaces  and  [brackets]  "},
		{"near miss", "code 482914 rejected", Numeric, "code 482914 rejected"},
		{"near miss, spaced", "code 4 8 2 9 1 4 rejected", Numeric, "code 4 8 2 9 1 4 rejected"},
		{"near miss, too short", "code 48291 rejected", Numeric, "code 48291 rejected"},
		{"two separators is no separator", "code 482  913 rejected", Numeric, "code 482  913 rejected"},
		{"numeric ignores letters", "code K7QX9M", Numeric, "code K7QX9M"},
		{"only the code", "482913", Numeric, ""},
		{"only the code, spaced", " 4 8 2 9 1 3 ", Numeric, ""},
		{"only the code, quoted", `"482913"`, Numeric, ""},
		{"quoted", `body "482913" rejected`, Numeric, "body rejected"},
		{"single-quoted with punctuation", `code '482913'.`, Numeric, "code."},
		{"bracketed", "code (482913) rejected", Numeric, "code rejected"},
		{"nested brackets", `code (["482913"]) rejected`, Numeric, "code rejected"},
		{"JSON", `{"otp":"482913","to":"+15551234567"}`, Numeric, `{"otp":,"to":"+15551234567"}`},
		{"WebOTP line", "Your code is 482913.\n\n@example.com #482913", Numeric, "Your code is.\n\n@example.com"},
		{"start of a line", "error:\n482913 refused", Numeric, "error:\nrefused"},
		{"end of a line", "refused 482913\nnext", Numeric, "refused\nnext"},
		{"removal joins a new occurrence", "48(482913)2913 left", Numeric, "left"},
		{"removal joins a spaced one", "4 8 2 [482913] 9 1 3 left", Numeric, "left"},
		{"invalid UTF-8 around", "\xff\xfe482913\xff", Numeric, "\xff\xfe\xff"},
		{"invalid UTF-8 inside", "48\xff2913", Numeric, "48\xff2913"},
		{"invalid UTF-8, no code", "\xff\xfe\xc3 code", Numeric, "\xff\xfe\xc3 code"},
		{"empty", "", Numeric, ""},
		{"Hindi", "आपका सत्यापन कोड 482913 है।", Numeric, "आपका सत्यापन कोड है।"},
		{"Arabic isolates", "رمز التحقق الخاص بك هو \u2066482913\u2069. تنتهي", Numeric, "رمز التحقق الخاص بك هو. تنتهي"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code := num
			if tc.charset == Alphanumeric {
				code = alnum
			}
			isCode, calls := scrubCounted(scrubIsFixed(code))
			got := scrubCode(tc.text, len(code), tc.charset, isCode)
			assert.Equal(t, tc.want, got)
			assert.NotContains(t, got, "[code]")
			for c, n := range calls {
				assert.Equal(t, 1, n, "isCode called %d times with %q", n, c)
			}
		})
	}
}

func TestScrubCodeArguments(t *testing.T) {
	assert.Equal(t, "code 482913", scrubCode("code 482913", 0, Numeric, scrubIsFixed("482913")), "no length: nothing to look for")
	assert.Equal(t, "code 482913", scrubCode("code 482913", 6, Numeric, nil), "no isCode: nothing to look for")
	assert.Equal(t, "482", scrubCode("482", 6, Numeric, scrubIsFixed("482913")))
	assert.Equal(t, "code", scrubCode("code k7qx9m", 6, Charset(7), scrubIsFixed("K7QX9M")), "an unknown charset is read as the wider one")
	assert.Equal(t, "x y", scrubCode("x 12121212 y", 6, Numeric, scrubIsFixed("121212")), "overlapping occurrences")
	huge := strings.Repeat("9", 1<<20)
	assert.Len(t, scrubCode(huge, 10, Numeric, scrubIsFixed("1234567890")), scrubLimit)
	assert.Empty(t, scrubCode(huge, 1<<40, Numeric, scrubIsFixed("1")), "a length no flow allows drops the text")
}

// TestScrubCodeBuiltinTexts scrubs every built-in message, as a channel
// that echoes its input would return it, in the forms channels send it.
func TestScrubCodeBuiltinTexts(t *testing.T) {
	for _, cs := range []Charset{Numeric, Alphanumeric} {
		for _, lang := range BuiltinLanguages() {
			code, err := generateCode(6, cs)
			require.NoError(t, err)
			body, _ := builtinText(lang, "Acme 2")
			body = render(body, code, 10, "Acme 2")
			voice := strings.ReplaceAll(body, code, scrubSpell(code))
			forms := []string{
				"rejected body: " + body,
				"rejected: " + voice,
				"rejected: " + strings.ToLower(voice),
				url.Values{"Body": {body}, "Twiml": {"<Say>" + voice + "</Say>"}}.Encode(),
				body + "\n\n@example.com #" + code,
			}
			for _, text := range forms {
				got := scrubCode(text, 6, cs, scrubIsFixed(code))
				assert.NotContains(t, scrubASCIIUpper(got), code, "%s %s: %q", cs, lang, got)
				assert.NotContains(t, scrubASCIIUpper(got), scrubSpell(code), "%s %s: %q", cs, lang, got)
				assert.Contains(t, scrubASCIIUpper(got), "ACME", "the rest of the text stays")
			}
		}
	}
}

// TestScrubCodeWithHMAC matches candidates the way the engine can once
// only the verification's CodeHash is left: against the HMAC under every
// configured secret, here after a rotation.
func TestScrubCodeWithHMAC(t *testing.T) {
	oldSecret := []byte("old secret, 32 bytes long.......")
	newSecret := []byte("new secret, 32 bytes long.......")
	before, err := newKeyring([][]byte{oldSecret})
	require.NoError(t, err)
	after, err := newKeyring([][]byte{newSecret, oldSecret})
	require.NoError(t, err)
	const id = "0b6f3c1e-6a43-4c8f-9d55-0d2b1f6f2a10"

	for _, tc := range []struct {
		code    string
		charset Charset
		detail  string
		want    string
	}{
		{"482913", Numeric, "undelivered: message '482913' blocked by carrier", "undelivered: message blocked by carrier"},
		{"482913", Numeric, "call failed while reading " + scrubSpell("482913"), "call failed while reading"},
		{"K7QX9M", Alphanumeric, "spam filter matched k7qx9m in text", "spam filter matched in text"},
		{"K7QX9M", Alphanumeric, "absent subscriber", "absent subscriber"},
	} {
		stored := before.keys[0].hashWith(nil, id, tc.code) // CodeHash, from before the rotation
		isCode, calls := scrubCounted(func(c string) bool { return MatchHash(stored, after.hashes(id, c)) })
		assert.Equal(t, tc.want, scrubCode(tc.detail, len(tc.code), tc.charset, isCode))
		for c, n := range calls {
			assert.Equal(t, 1, n, "HMAC computed %d times for %q", n, c)
		}
		// Another verification's code is not removed.
		other := before.keys[0].hashWith(nil, "another-id", tc.code)
		assert.Equal(t, tc.detail, scrubCode(tc.detail, len(tc.code), tc.charset,
			func(c string) bool { return MatchHash(other, after.hashes(id, c)) }))
	}
}

func TestScrubCodeCallsIsCodeOncePerCandidate(t *testing.T) {
	text := strings.Repeat("482913 4 8 2 9 1 3 1234567890 ", 20)
	isCode, calls := scrubCounted(scrubIsFixed("482913"))
	got := scrubCode(text, 6, Numeric, isCode)
	assert.NotContains(t, got, "482913")
	require.NotEmpty(t, calls)
	for c, n := range calls {
		assert.Equal(t, 1, n, "isCode called %d times with %q", n, c)
	}
}

func TestScrubCodeLongText(t *testing.T) {
	const code = "482913"
	pad := strings.Repeat("x", scrubLimit-3)
	got := scrubCode(pad+" "+code+strings.Repeat("y", 10000), 6, Numeric, scrubIsFixed(code))
	assert.Equal(t, pad, got, "an occurrence split by the cut is cut before, with its space")

	got = scrubCode(pad+"4, 8, 2, 9, 1, 3 and more", 6, Numeric, scrubIsFixed(code))
	assert.Equal(t, pad, got, "a spelled occurrence split by the cut")

	text := strings.Repeat("code 482913 ok. ", 1000)
	got = scrubCode(text, 6, Numeric, scrubIsFixed(code))
	assert.LessOrEqual(t, len(got), scrubLimit)
	assert.NotContains(t, got, "4829")
	assert.True(t, strings.HasPrefix(got, "code ok. code ok."))

	runes := strings.Repeat("é", scrubLimit)
	got = scrubCode(runes, 6, Numeric, scrubIsFixed(code))
	assert.True(t, utf8.ValidString(got), "cut at a character boundary")
	assert.Equal(t, scrubLimit, len(got))

	noCode := strings.Repeat("z", scrubLimit)
	assert.Equal(t, noCode, scrubCode(noCode, 6, Numeric, scrubIsFixed(code)), "text of exactly the limit is kept whole")
}

// scrubASCIIUpper upper-cases ASCII letters only, leaving every other byte.
func scrubASCIIUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = scrubUpper(c)
	}
	return string(b)
}

// scrubSeparators is every separator scrubCode reads between two characters.
func scrubSeparators() []string {
	var out []string
	for _, m := range append([]string{""}, scrubMarks[:]...) {
		for _, s := range append([]string{""}, scrubSpaces[:]...) {
			out = append(out, m+s)
		}
	}
	return out
}

// scrubIsSubsequence reports whether sub can be had by deleting bytes of s.
func scrubIsSubsequence(sub, s string) bool {
	j := 0
	for i := 0; i < len(s) && j < len(sub); i++ {
		if s[i] == sub[j] {
			j++
		}
	}
	return j == len(sub)
}

func FuzzScrubCode(f *testing.F) {
	f.Add("Your verification code is ", ". It expires in 10 minutes.", uint64(482913), uint8(0), false)
	f.Add("call failed: ", "", uint64(1234567), uint8(6), false)
	f.Add("48", "2913", uint64(482913), uint8(0), false)
	f.Add(`body "`, `"`, uint64(99), uint8(0x85), true)
	f.Add("\xff\xfe", "\xc3", uint64(7), uint8(13), true)
	f.Add("token", "end", uint64(1<<40|5), uint8(0x80), true)
	f.Fuzz(func(t *testing.T, prefix, suffix string, seed uint64, form uint8, alnum bool) {
		length := 4 + int(seed>>48)%7
		cs, code := Numeric, make([]byte, length)
		if alnum {
			cs = Alphanumeric
		}
		for i := range code {
			if alnum {
				code[i] = alphanumericSet[(seed>>(5*uint(i)))&31]
			} else {
				code[i] = '0' + byte((seed>>(4*uint(i)))%10)
			}
		}
		forms := scrubSeparators()
		// Write the code in one form, or (high bit) a form per gap, and
		// lower-case some of an alphanumeric code's letters.
		var b strings.Builder
		for i, c := range code {
			if i > 0 {
				k := int(form&0x7f) % len(forms)
				if form&0x80 != 0 {
					k = int(seed>>(3*uint(i))) % len(forms)
				}
				b.WriteString(forms[k])
			}
			if alnum && c >= 'A' && c <= 'Z' && seed>>(63-uint(i))&1 == 1 {
				c += 'a' - 'A'
			}
			b.WriteByte(c)
		}
		text := prefix + b.String() + suffix

		isCode, calls := scrubCounted(scrubIsFixed(string(code)))
		got := scrubCode(text, length, cs, isCode)

		up := scrubASCIIUpper(got)
		for _, sep := range forms {
			written := scrubASCIIUpper(strings.Join(strings.Split(string(code), ""), sep))
			if strings.Contains(up, written) {
				t.Fatalf("code %s left as %q in %q (from %q)", code, written, got, text)
			}
		}
		if !strings.Contains(text, "[") && strings.Contains(got, "[code]") {
			t.Fatalf("marker in %q", got)
		}
		if !scrubIsSubsequence(got, text) {
			t.Fatalf("%q is not %q with bytes removed", got, text)
		}
		if len(got) > scrubLimit {
			t.Fatalf("%d bytes kept", len(got))
		}
		for c, n := range calls {
			if n > 1 {
				t.Fatalf("isCode called %d times with %q", n, c)
			}
		}

		// Text in which isCode finds nothing comes back unchanged.
		found := false
		got = scrubCode(prefix, length, cs, func(c string) bool {
			ok := c == string(code)
			found = found || ok
			return ok
		})
		if !found && len(prefix) <= scrubLimit && got != prefix {
			t.Fatalf("text without the code changed: %q -> %q", prefix, got)
		}
	})
}

func BenchmarkScrubCode(b *testing.B) {
	const code = "482913"
	kr, err := newKeyring([][]byte{[]byte("a secret, 32 bytes long........."), []byte("another secret, 32 bytes long...")})
	require.NoError(b, err)
	stored := kr.keys[0].hashWith(nil, "id", code)
	isCode := func(c string) bool { return MatchHash(stored, kr.hashes("id", c)) }
	for _, text := range []string{
		"channels: twilio: status 400: code 21211: The 'To' number +15551234567 is not a valid phone number.",
		fmt.Sprintf("rejected body: Your verification code is %s. It expires in 10 minutes.", scrubSpell(code)),
		strings.Repeat("Alphanumeric text is one long run of candidates. ", 80),
	} {
		b.Run(fmt.Sprintf("%d bytes", len(text)), func(b *testing.B) {
			for b.Loop() {
				scrubCode(text, 6, Alphanumeric, isCode)
			}
		})
	}
}

func TestStorable(t *testing.T) {
	for in, want := range map[string]string{
		"plain":            "plain",
		"nul\x00inside":    "nulinside",
		"bad \xff utf-8":   "bad \uFFFD utf-8",
		"\x00\x00":         "",
		"é ü 中文 unchanged": "é ü 中文 unchanged",
	} {
		if got := storable(in); got != want {
			t.Errorf("storable(%q) = %q, want %q", in, got, want)
		}
	}
}
