package httpapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The console's sign-in. An operator signs in with an admin key and gets a
// session cookie; no server keeps sessions, so any instance of a fleet
// accepts a cookie another issued. The cookie holds its expiry, the name
// the operator gave (for the audit log) and a random nonce, signed with
// HMAC-SHA256 under a key derived from the admin key used to sign in:
// removing that key from WithAdminKeys ends every session it opened.
//
// Every state-changing form carries a CSRF token. In a session it is an
// HMAC of the session's nonce, so it cannot be guessed or planted from
// another origin; before sign-in (the sign-in form itself) and under a
// host's admin Authorizer, where there is no session, it is a random value
// that must match a cookie of its own (the double-submit pattern).

const (
	sessionCookie = "openverify_session"
	csrfCookie    = "openverify_csrf"
	// consolePath is where the console is served; its cookies are scoped
	// to it.
	consolePath = "/admin/console/"
	// maxNameLength is the longest operator name a session keeps.
	maxNameLength = 64
)

// session is a signed-in operator.
type session struct {
	name    string
	nonce   string
	expires time.Time
	key     []byte // the signing key: which admin key it came from
}

// sessionKey derives the key that signs the sessions of the admin key
// whose SHA-256 digest is digest.
func sessionKey(digest [sha256.Size]byte) []byte {
	m := hmac.New(sha256.New, digest[:])
	m.Write([]byte("openverify console session key v1"))
	return m.Sum(nil)
}

func mac(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

var b64 = base64.RawURLEncoding

// encode returns the session's cookie value:
// expiry.name.nonce.signature, each part URL-safe.
func (s session) encode() string {
	payload := strconv.FormatInt(s.expires.Unix(), 10) + "." + b64.EncodeToString([]byte(s.name)) + "." + s.nonce
	return payload + "." + b64.EncodeToString(mac(s.key, "session", payload))
}

// csrf is the CSRF token of the session's forms.
func (s session) csrf() string { return b64.EncodeToString(mac(s.key, "csrf", s.nonce)) }

// newSession opens a session for the admin key key, named name, until
// now+lifetime.
func newSession(key, name string, now time.Time, lifetime time.Duration) session {
	return session{
		name:    name,
		nonce:   randomToken(),
		expires: now.Add(lifetime),
		key:     sessionKey(sha256.Sum256([]byte(key))),
	}
}

// randomToken is 128 random bits, URL-safe.
func randomToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sessionKeys are the signing keys of the admin keys whose digests are
// digests, derived once when the server is built.
func sessionKeys(digests [][sha256.Size]byte) [][]byte {
	out := make([][]byte, len(digests))
	for i, d := range digests {
		out[i] = sessionKey(d)
	}
	return out
}

// parseSession checks a cookie value against every admin key's signing key
// (all of them, in constant time per key) and returns the session if one
// signed it and it has not expired at now.
func parseSession(v string, keys [][]byte, now time.Time) (session, bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 4 {
		return session{}, false
	}
	sig, err := b64.DecodeString(parts[3])
	if err != nil {
		return session{}, false
	}
	payload := parts[0] + "." + parts[1] + "." + parts[2]
	var key []byte
	for _, k := range keys {
		if subtle.ConstantTimeCompare(mac(k, "session", payload), sig) == 1 {
			key = k
		}
	}
	if key == nil {
		return session{}, false
	}
	exp, err := strconv.ParseInt(parts[0], 10, 64)
	name, nerr := b64.DecodeString(parts[1])
	if err != nil || nerr != nil || !now.Before(time.Unix(exp, 0)) {
		return session{}, false
	}
	return session{name: string(name), nonce: parts[2], expires: time.Unix(exp, 0), key: key}, true
}

// cleanName is the operator's name as a session keeps it: trimmed, at
// most maxNameLength characters, without control characters; "admin" if
// empty.
func cleanName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	for utf8.RuneCountInString(s) > maxNameLength {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	if s == "" {
		return "admin"
	}
	return s
}

// secure reports whether the request came over HTTPS: TLS on this
// connection, or, behind a proxy trusted with WithTrustProxy,
// X-Forwarded-Proto https.
func (s *server) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return s.st.trustProxy && strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https")
}

// setCookie sets a console cookie: HttpOnly, SameSite=Strict, scoped to
// the console, Secure over HTTPS. maxAge < 0 deletes it.
func (s *server) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: consolePath, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r),
	})
}

// formCSRF returns the double-submit token of a request without a
// session: the csrf cookie's, or a new one it sets.
func (s *server) formCSRF(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 32 {
		return c.Value
	}
	t := randomToken()
	s.setCookie(w, r, csrfCookie, t, 0)
	return t
}

// csrfMatches reports whether a posted form's token is the one expected.
func csrfMatches(posted, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(posted), []byte(want)) == 1
}

// cookieCSRF is the double-submit token the request's cookie holds, or "".
func cookieCSRF(r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil {
		return c.Value
	}
	return ""
}

// signInData is the sign-in page's.
type signInData struct {
	Next, Name, Error string
	// NoKeys is true when the server has no admin key to sign in with.
	NoKeys bool
}

// signInPage shows the sign-in form, or moves on to the console when
// there is nothing to sign in for: a valid session, or the host's admin
// Authorizer.
func (s *server) signInPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if _, ok := s.requestSession(r); ok || s.st.adminAuth != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	c := consoleReq{csrf: s.formCSRF(w, r)}
	s.render(w, r, http.StatusOK, "signin", c, consolePage{Title: "Sign in", Flash: flashOf(r),
		Data: signInData{Next: next, NoKeys: len(s.st.adminKeys) == 0}})
}

// signIn checks the posted admin key and, if it is one, sets the session
// cookie and goes on to the page the operator came for. A wrong key shows
// the form again with 401. Each client IP may try WithSignInRate's number
// of sign-ins (10 per 15 minutes by default), right or wrong; beyond it the
// form says so with 429 and Retry-After, whatever the key.
func (s *server) signIn(w http.ResponseWriter, r *http.Request) {
	if err := s.crossOrigin.Check(r); err != nil {
		s.consoleError(w, r, http.StatusForbidden, "This form was posted from another site, so it was refused.")
		return
	}
	if !s.parseConsoleForm(w, r) {
		return
	}
	posted := r.PostForm.Get("csrf")
	if !csrfMatches(posted, cookieCSRF(r)) {
		s.consoleError(w, r, http.StatusForbidden, "This form has expired or did not come from the console. Reload the page and try again.")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	name := cleanName(r.PostForm.Get("name"))
	key := r.PostForm.Get("key")
	ip := s.clientIP(r)
	allowed, err := s.eng.Allow(r.Context(), "console:sign-in:"+ip, s.st.signInRate)
	if err != nil {
		s.engineError(w, r, consoleReq{}, err)
		return
	}
	if !allowed.OK {
		s.audit(r, name, "console.sign-in-limited", "", "from "+ip)
		setRetryAfter(w, allowed.RetryAfter)
		s.render(w, r, http.StatusTooManyRequests, "signin", consoleReq{csrf: posted}, consolePage{Title: "Sign in",
			Data: signInData{Next: next, Name: r.PostForm.Get("name"),
				Error: "Too many sign-in attempts from your address. Try again in " + retryText(allowed.RetryAfter) + "."}})
		return
	}
	if !keyMatches(key, s.st.adminKeys) {
		s.st.logger.LogAttrs(r.Context(), slog.LevelInfo, "console sign-in refused",
			slog.String("name", name), slog.String("ip", ip))
		s.audit(r, name, "console.sign-in-refused", "", "from "+ip)
		msg := "That is not an admin key."
		if key == "" {
			msg = "Enter the admin key."
		}
		s.render(w, r, http.StatusUnauthorized, "signin", consoleReq{csrf: posted}, consolePage{Title: "Sign in",
			Data: signInData{Next: next, Name: r.PostForm.Get("name"), Error: msg, NoKeys: len(s.st.adminKeys) == 0}})
		return
	}
	sess := newSession(key, name, s.eng.Now(), s.st.sessionLife)
	s.setCookie(w, r, sessionCookie, sess.encode(), int(s.st.sessionLife/time.Second))
	s.setCookie(w, r, csrfCookie, "", -1)
	s.st.logger.LogAttrs(r.Context(), slog.LevelInfo, "console sign-in", slog.String("name", name), slog.String("ip", ip))
	s.audit(r, name, "console.sign-in", "", "admin key "+keyFingerprint(key)+" from "+ip)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// retryText writes a wait for a person: "5 minutes", "1 minute", "30
// seconds".
func retryText(d time.Duration) string {
	if d < time.Minute {
		return strconv.Itoa(max(int((d+time.Second-1)/time.Second), 1)) + " seconds"
	}
	m := int((d + time.Minute - 1) / time.Minute)
	if m == 1 {
		return "1 minute"
	}
	return strconv.Itoa(m) + " minutes"
}

// signOut deletes the session cookie. The cookie's signature stays valid
// until it expires (no server keeps sessions): a copy taken before the
// sign-out works until then, or until its admin key is removed.
func (s *server) signOut(w http.ResponseWriter, r *http.Request, c consoleReq) {
	s.setCookie(w, r, sessionCookie, "", -1)
	s.audit(r, c.who, "console.sign-out", "", "")
	redirectFlash(w, r, consolePath+"sign-in", "signed-out")
}

// safeNext is where a sign-in may send the operator: a console path on
// this server, else the console's first page. It never leads off-site.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || next == "" || u.Scheme != "" || u.Host != "" || u.User != nil ||
		strings.HasPrefix(next, "//") || strings.ContainsRune(next, '\\') ||
		!strings.HasPrefix(u.Path, consolePath) || strings.Contains(u.Path, "/../") {
		return consolePath
	}
	return u.RequestURI()
}
