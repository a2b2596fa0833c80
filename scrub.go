package verify

import (
	"strings"
	"unicode/utf8"
)

// scrubLimit is the most text scrubCode keeps: a channel's error or a
// provider's report longer than this is cut to it first.
const scrubLimit = 4 << 10

// scrubPasses bounds how many times scrubCode scans text whose removals
// keep joining the pieces around them into new occurrences of the code.
const scrubPasses = 4

// A separator between two characters of a code is an optional mark and an
// optional space, in this order: "1 2 3", "1,2,3", "1, 2, 3", "123-456",
// "1. 2. 3", and their form-encoded echoes "1%2C+2%2C+3", "1+2+3",
// "1%2C%202". Each list is tried in order and the first match is taken, so
// a longer form comes before its prefix.
var (
	scrubMarks  = [...]string{"%2C", "%2c", ",", ".", "-"}
	scrubSpaces = [...]string{"%20", " ", "+", "\u00a0", "\u202f"} // no-break and narrow no-break spaces too
)

// scrubMaxLength is the longest code scrubCode looks for, well above
// maxCodeLength.
const scrubMaxLength = 64

// scrubMaxSep is the longest separator: the longest mark and the longest
// space.
const scrubMaxSep = 6

// scrubCode returns text with every occurrence of a one-time code removed,
// in every form the project's channels produce or a provider may echo
// back, so that an error or delivery report can be stored, logged and
// emitted without it. length and charset are the verification's CodeLength
// and Charset; isCode reports whether a candidate is the code: a
// comparison with the plain code while it is at hand, or with the
// verification's CodeHash (an HMAC under each configured secret) once only
// that is left.
//
// Candidates are every window of length code characters, where a code
// character is a digit, or for Alphanumeric (and any charset other than
// Numeric) an ASCII letter or digit of either case. Windows inside a longer
// run count too, since a provider may glue the code to other characters.
// Between two characters of a window there may be nothing ("123456"), a
// single space ("1 2 3 4 5 6", also a no-break space), a comma, dot or
// hyphen with or without a space after it ("1, 2, 3, 4, 5, 6" as a voice
// call spells the code, "123-456", "123.456"), or the form-encoded echo of
// these ("1%2C+2%2C+3", "123+456", "123%20456"). isCode is handed the
// window with its separators removed and, for Alphanumeric, upper-cased,
// and is called at most once per distinct candidate, so it may be an HMAC.
//
// An occurrence is cut out whole, with its inner separators, and the text
// around it is tidied: quotes, brackets or directional isolates left empty
// around it go too, as does a '#' right before it (the WebOTP line "@host
// #123456"), and the spaces that would be left doubled (also '+', a
// form-encoded space), dangling before punctuation or at either end of the
// text or a line. No placeholder such as "[code]" or asterisks takes its
// place: a marker would show where the code was and how long it was, and
// nothing scrubCode writes must tell that a code was there at all. When
// removing one occurrence joins the text around it into another, that is
// removed as well. Text without the code comes back unchanged, byte for
// byte.
//
// Text longer than 4 KiB is cut to its first 4 KiB (at a character
// boundary, and before any occurrence of the code that the cut would
// split) before it is scrubbed. Text that is not valid UTF-8 is handled
// byte by byte, and a length below 1 or a nil isCode leaves nothing to look
// for. No flow has a code longer than maxCodeLength; for a length above
// 64 the text is dropped whole rather than searched.
func scrubCode(text string, length int, charset Charset, isCode func(candidate string) bool) string {
	if length > scrubMaxLength {
		return ""
	}
	s := scrubber{length: length, alnum: charset != Numeric, isCode: isCode}
	if len(text) > scrubLimit {
		cut := scrubLimit
		for back := 0; back < utf8.UTFMax-1 && !utf8.RuneStart(text[cut]); back++ {
			cut--
		}
		if length > 0 && isCode != nil {
			// An occurrence that starts before the cut ends within the
			// slack after it: cut before it rather than through it.
			end := min(len(text), scrubLimit+length*(1+scrubMaxSep))
			for _, m := range s.find(text[:end]) {
				if m.start < cut && m.end > cut {
					// No spaces left dangling before it either.
					cut = len(strings.TrimRight(text[:m.start], " \t"))
				}
			}
		}
		text = text[:cut]
	}
	if length < 1 || isCode == nil || len(text) < length {
		return text
	}
	for range scrubPasses {
		found := s.find(text)
		if len(found) == 0 {
			return text
		}
		text = s.remove(text, found)
	}
	// Still matching after several passes: text built to nest the code in
	// itself. Keep only what comes before the first occurrence.
	if found := s.find(text); len(found) > 0 {
		text = strings.TrimRight(text[:found[0].start], " \t")
	}
	return text
}

// scrubber finds the occurrences of one code.
type scrubber struct {
	length int
	alnum  bool
	isCode func(string) bool
	memo   map[string]bool // isCode's answer per candidate
	buf    []byte
}

// scrubSpan is text[start:end], an occurrence to remove.
type scrubSpan struct{ start, end int }

func (s *scrubber) codeChar(c byte) bool {
	return c >= '0' && c <= '9' || s.alnum && (c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z')
}

// next returns the index of the code character that follows the one at i
// in the same candidate, or -1 if none does.
func (s *scrubber) next(text string, i int) int {
	j := i + 1
	if j >= len(text) {
		return -1
	}
	if s.codeChar(text[j]) {
		return j
	}
	// Every separator starts with a byte that is not a code character, so
	// reading the longest one cannot skip a shorter reading that goes on.
	q := j
	for _, m := range scrubMarks {
		if strings.HasPrefix(text[q:], m) {
			q += len(m)
			break
		}
	}
	for _, sp := range scrubSpaces {
		if strings.HasPrefix(text[q:], sp) {
			q += len(sp)
			break
		}
	}
	if q > j && q < len(text) && s.codeChar(text[q]) {
		return q
	}
	return -1
}

// find returns the occurrences of the code in text, in order, overlapping
// and touching ones merged.
func (s *scrubber) find(text string) []scrubSpan {
	var out []scrubSpan
	for i := 0; i < len(text); i++ {
		if !s.codeChar(text[i]) {
			continue
		}
		cand := append(s.buf[:0], scrubUpper(text[i]))
		last := i
		for len(cand) < s.length {
			if last = s.next(text, last); last < 0 {
				break
			}
			cand = append(cand, scrubUpper(text[last]))
		}
		s.buf = cand
		if last < 0 || !s.match(cand) {
			continue
		}
		m := scrubSpan{i, last + 1}
		if n := len(out); n > 0 && m.start <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, m.end)
		} else {
			out = append(out, m)
		}
	}
	return out
}

// match asks isCode about a candidate, once per distinct candidate.
func (s *scrubber) match(cand []byte) bool {
	if ok, seen := s.memo[string(cand)]; seen {
		return ok
	}
	if s.memo == nil {
		s.memo = make(map[string]bool)
	}
	ok := s.isCode(string(cand))
	s.memo[string(cand)] = ok
	return ok
}

func scrubUpper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// remove cuts the spans out of text and tidies around each cut.
func (s *scrubber) remove(text string, spans []scrubSpan) string {
	b := make([]byte, 0, len(text))
	prev := 0
	for _, m := range spans {
		if m.end <= prev {
			continue
		}
		b = append(b, text[prev:max(m.start, prev)]...)
		var rest int
		b, rest = scrubTidy(b, text, m.end)
		prev = rest
	}
	b = append(b, text[prev:]...)
	return string(b)
}

// tidy is called with b holding the text before a cut and text[rest:] the
// text after it. It drops what would be left marking the cut and returns b
// and where the rest of text resumes.
func scrubTidy(b []byte, text string, rest int) ([]byte, int) {
	// "#123456", as in a WebOTP line.
	if n := len(b); n > 0 && b[n-1] == '#' && (n == 1 || scrubIsSpace(b[n-2]) || scrubIsNewline(b[n-2])) {
		b = b[:n-1]
	}
	// Empty quotes, brackets or isolates: "", (), [], ⁦⁩, and nested.
	for len(b) > 0 && rest < len(text) {
		l, ls := utf8.DecodeLastRune(b)
		r, rs := utf8.DecodeRuneInString(text[rest:])
		if l == utf8.RuneError || !scrubCloses(l, r) {
			break
		}
		b, rest = b[:len(b)-ls], rest+rs
	}
	if len(b) == 0 || scrubIsSpace(b[len(b)-1]) || scrubIsNewline(b[len(b)-1]) {
		// No doubled spaces, none leading a text or line.
		for rest < len(text) && scrubIsSpace(text[rest]) {
			rest++
		}
	}
	if rest == len(text) || scrubIsNewline(text[rest]) || strings.IndexByte(".,;:!?)]}", text[rest]) >= 0 ||
		strings.HasPrefix(text[rest:], "।") || strings.HasPrefix(text[rest:], "。") {
		// None ending a text or line, or before punctuation.
		for len(b) > 0 && scrubIsSpace(b[len(b)-1]) {
			b = b[:len(b)-1]
		}
	}
	// Form-encoded text spells a space '+': "code+123456+sent".
	if len(b) > 0 && b[len(b)-1] == '+' && rest < len(text) && text[rest] == '+' {
		rest++
	}
	return b, rest
}

// closes reports whether close closes open: the same quote, or the
// bracket or isolate that pairs with it.
func scrubCloses(open, end rune) bool {
	switch open {
	case '"', '\'', '`':
		return end == open
	case '(':
		return end == ')'
	case '[':
		return end == ']'
	case '{':
		return end == '}'
	case '<':
		return end == '>'
	case '“':
		return end == '”'
	case '„':
		return end == '“' || end == '”'
	case '‘':
		return end == '’'
	case '«':
		return end == '»'
	case '‹':
		return end == '›'
	case '「':
		return end == '」'
	case '\u2066', '\u2067', '\u2068': // directional isolates, as in the Arabic text
		return end == '\u2069'
	}
	return false
}

func scrubIsSpace(c byte) bool   { return c == ' ' || c == '\t' }
func scrubIsNewline(c byte) bool { return c == '\n' || c == '\r' }

// ScrubCode returns text with m's code removed in every form a channel may
// echo it: plain, spaced, comma-separated as a voice call spells it
// ("1, 2, 3"), hyphenated, form-encoded, in either case. Nothing takes its
// place: no "[code]" marker shows where it was. A Channel whose errors
// quote a provider's response can use it; the engine applies the same rules
// to every channel error and delivery report before storing, logging or
// emitting them.
func ScrubCode(text string, m Message) string {
	if m.Code == "" {
		return text
	}
	code := strings.ToUpper(m.Code)
	charset := Numeric
	if strings.ContainsFunc(code, func(r rune) bool { return r < '0' || r > '9' }) {
		charset = Alphanumeric
	}
	return scrubCode(text, len(code), charset, func(c string) bool { return c == code })
}

// storable makes a provider's text fit any store: invalid UTF-8 becomes
// U+FFFD and NUL bytes go (PostgreSQL refuses both in a text column, which
// would fail the whole delivery record).
func storable(s string) string {
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
