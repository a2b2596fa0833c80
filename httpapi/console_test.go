package httpapi

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openverify/verify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// node is an element of a parsed HTML page.
type node struct {
	name     string
	attr     map[string]string
	children []*node
	text     strings.Builder
}

// parseHTML parses a page with encoding/xml in its lenient HTML mode.
func parseHTML(t *testing.T, page string) *node {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(page))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	root := &node{name: "#root"}
	stack := []*node{root}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		switch tok := tok.(type) {
		case xml.StartElement:
			n := &node{name: strings.ToLower(tok.Name.Local), attr: map[string]string{}}
			for _, a := range tok.Attr {
				n.attr[a.Name.Local] = a.Value
			}
			top := stack[len(stack)-1]
			top.children = append(top.children, n)
			stack = append(stack, n)
		case xml.EndElement:
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
		case xml.CharData:
			for _, n := range stack {
				n.text.Write(tok)
			}
		}
	}
	return root
}

// find returns the elements under n for which match is true.
func (n *node) find(match func(*node) bool) []*node {
	var out []*node
	for _, c := range n.children {
		if match(c) {
			out = append(out, c)
		}
		out = append(out, c.find(match)...)
	}
	return out
}

func (n *node) Text() string { return strings.TrimSpace(n.text.String()) }

func hasClass(c string) func(*node) bool {
	return func(n *node) bool { return slices.Contains(strings.Fields(n.attr["class"]), c) }
}

func byID(root *node, id string) *node {
	found := root.find(func(n *node) bool { return n.attr["id"] == id })
	if len(found) != 1 {
		return &node{}
	}
	return found[0]
}

// console is a browser-like client of the console: it keeps cookies and
// does not follow redirects, so that tests see them.
type console struct {
	h   *harness
	c   *http.Client
	url string
}

func (h *harness) console() *console {
	jar, err := cookiejar.New(nil)
	require.NoError(h.t, err)
	return &console{h: h, url: h.srv.URL, c: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page is a console answer: the response, and its parsed body.
type page struct {
	response
	doc *node
}

func (cs *console) send(req *http.Request) page {
	cs.h.t.Helper()
	res, err := cs.c.Do(req)
	require.NoError(cs.h.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(cs.h.t, err)
	p := page{response: response{res.StatusCode, res.Header, b}}
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		p.doc = parseHTML(cs.h.t, string(b))
	}
	return p
}

// get loads a console page, with the request headers given ("Name:
// value").
func (cs *console) get(path string, headers ...string) page {
	cs.h.t.Helper()
	req, err := http.NewRequest("GET", cs.url+path, nil)
	require.NoError(cs.h.t, err)
	setHeaders(req, headers)
	return cs.send(req)
}

// post posts a form, as a browser on the console's own origin does.
func (cs *console) post(path string, form url.Values, headers ...string) page {
	cs.h.t.Helper()
	req, err := http.NewRequest("POST", cs.url+path, strings.NewReader(form.Encode()))
	require.NoError(cs.h.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	setHeaders(req, headers)
	return cs.send(req)
}

func setHeaders(req *http.Request, headers []string) {
	for _, hd := range headers {
		k, v, _ := strings.Cut(hd, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
}

// csrf is the CSRF token of the page's forms.
func (p page) csrf(t *testing.T) string {
	t.Helper()
	require.NotNil(t, p.doc, "not an HTML page: %s", p)
	inputs := p.doc.find(func(n *node) bool { return n.name == "input" && n.attr["name"] == "csrf" })
	require.NotEmpty(t, inputs, "no form with a CSRF token: %s", p)
	return inputs[0].attr["value"]
}

// form is a form's fields with the page's CSRF token.
func (p page) form(t *testing.T, kv ...string) url.Values {
	t.Helper()
	v := url.Values{"csrf": {p.csrf(t)}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

// fieldError is the error shown beside form field id, or "".
func (p page) fieldError(id string) string {
	if p.doc == nil {
		return ""
	}
	return byID(p.doc, id+"-error").Text()
}

// signIn signs in as name with the admin key and returns the console.
func (h *harness) signIn(name string) *console {
	h.t.Helper()
	cs := h.console()
	pg := cs.get("/admin/console/sign-in")
	require.Equal(h.t, http.StatusOK, pg.status, pg.String())
	res := cs.post("/admin/console/sign-in", pg.form(h.t, "name", name, "key", testAdminKey))
	require.Equal(h.t, http.StatusSeeOther, res.status, res.String())
	return cs
}

func TestConsoleSignIn(t *testing.T) {
	h := newHarness(t)
	cs := h.console()

	res := cs.get("/admin/")
	require.Equal(t, http.StatusSeeOther, res.status)
	assert.Equal(t, "/admin/console/", res.header.Get("Location"))
	res = cs.get("/admin/console/flows?x=1")
	require.Equal(t, http.StatusSeeOther, res.status, "a page without a session leads to the sign-in")
	assert.Equal(t, "/admin/console/sign-in?next=%2Fadmin%2Fconsole%2Fflows%3Fx%3D1", res.header.Get("Location"))

	signin := cs.get(res.header.Get("Location"))
	require.Equal(t, http.StatusOK, signin.status)
	assert.Equal(t, consoleCSP, signin.header.Get("Content-Security-Policy"))
	assert.Equal(t, "/admin/console/flows?x=1", signin.doc.find(func(n *node) bool { return n.attr["name"] == "next" })[0].attr["value"])

	wrong := cs.post("/admin/console/sign-in", signin.form(t, "name", "Ana", "key", "not-the-key", "next", "/admin/console/flows?x=1"))
	assert.Equal(t, http.StatusUnauthorized, wrong.status)
	assert.Equal(t, "That is not an admin key.", byID(wrong.doc, "sign-in-error").Text())
	assert.Empty(t, wrong.header.Values("Set-Cookie"), "no session")

	noToken := cs.post("/admin/console/sign-in", url.Values{"key": {testAdminKey}})
	assert.Equal(t, http.StatusForbidden, noToken.status, "the sign-in form carries a CSRF token too")
	crossSite := cs.post("/admin/console/sign-in", signin.form(t, "key", testAdminKey), "Sec-Fetch-Site: cross-site")
	assert.Equal(t, http.StatusForbidden, crossSite.status)

	ok := cs.post("/admin/console/sign-in", signin.form(t, "name", " Ana\x07 ", "key", testAdminKey, "next", "/admin/console/flows?x=1"))
	require.Equal(t, http.StatusSeeOther, ok.status, ok.String())
	assert.Equal(t, "/admin/console/flows?x=1", ok.header.Get("Location"))
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: ok.header}).Cookies() {
		if c.Name == sessionCookie {
			cookie = c
		}
	}
	require.NotNil(t, cookie)
	assert.True(t, cookie.HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, cookie.SameSite)
	assert.Equal(t, "/admin/console/", cookie.Path)
	assert.False(t, cookie.Secure, "plain HTTP without a trusted proxy")
	assert.Equal(t, int((12 * time.Hour).Seconds()), cookie.MaxAge)
	assert.NotContains(t, cookie.Value, testAdminKey)

	flows := cs.get("/admin/console/flows")
	require.Equal(t, http.StatusOK, flows.status, flows.String())
	assert.Equal(t, "Ana", byID(flows.doc, "who").Text(), "the name, without control characters")

	// Signed in, the sign-in page moves on; a next that leaves the
	// console does not lead off it.
	for next, want := range map[string]string{
		"/admin/console/templates":      "/admin/console/templates",
		"//evil.example/admin/console/": "/admin/console/",
		"https://evil.example/":         "/admin/console/",
		"/admin/flows":                  "/admin/console/",
		"/admin/console/../flows":       "/admin/console/",
		`/\evil.example`:                "/admin/console/",
	} {
		res := cs.get("/admin/console/sign-in?next=" + url.QueryEscape(next))
		assert.Equal(t, http.StatusSeeOther, res.status)
		assert.Equal(t, want, res.header.Get("Location"), next)
	}

	// The session ends at its lifetime, by the engine's clock.
	h.clock.Add(12*time.Hour - time.Second)
	assert.Equal(t, http.StatusOK, cs.get("/admin/console/flows").status)
	h.clock.Add(time.Second)
	assert.Equal(t, http.StatusSeeOther, cs.get("/admin/console/flows").status)
	expired := cs.post("/admin/console/templates", flows.form(t, "name", "x"))
	assert.Equal(t, http.StatusUnauthorized, expired.status, "a form posted after the session ended")
}

func TestConsoleSignOut(t *testing.T) {
	h := newHarness(t)
	cs := h.signIn("Ana")
	pg := cs.get("/admin/console/")
	require.Equal(t, http.StatusOK, pg.status)
	out := cs.post("/admin/console/sign-out", pg.form(t))
	require.Equal(t, http.StatusSeeOther, out.status)
	assert.Equal(t, "/admin/console/sign-in?flash=signed-out", out.header.Get("Location"))
	assert.Equal(t, http.StatusSeeOther, cs.get("/admin/console/").status, "signed out")
	signin := cs.get("/admin/console/sign-in?flash=signed-out")
	assert.Equal(t, "You have signed out.", byID(signin.doc, "flash").Text())
	other := cs.get("/admin/console/sign-in?flash=" + url.QueryEscape("<b>made up</b>"))
	assert.Empty(t, byID(other.doc, "flash").Text(), "only the console's own messages show")
}

// A session belongs to the admin key that opened it: a server that no
// longer accepts that key refuses it, one that also accepts another key
// still takes it.
func TestConsoleSessionFollowsKeys(t *testing.T) {
	h := newHarness(t)
	cs := h.signIn("Ana")
	for _, c := range []struct {
		keys []string
		want int
	}{
		{[]string{"new-key", testAdminKey}, http.StatusOK},
		{[]string{"new-key"}, http.StatusSeeOther},
	} {
		srv := httptest.NewServer(New(h.eng, WithAdminKeys(c.keys...), WithLogger(discard)))
		u, err := url.Parse(h.srv.URL + "/admin/console/")
		require.NoError(t, err)
		req, err := http.NewRequest("GET", srv.URL+"/admin/console/", nil)
		require.NoError(t, err)
		for _, ck := range cs.c.Jar.Cookies(u) {
			req.AddCookie(ck)
		}
		res, err := cs.c.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		assert.Equal(t, c.want, res.StatusCode, "keys %v", c.keys)
		srv.Close()
	}
}

func TestSessionTokens(t *testing.T) {
	keys := sessionKeys(hashKeys([]string{"k1", "k2"}))
	now := testStart
	s := newSession("k2", "Ana", now, time.Hour)
	v := s.encode()
	got, ok := parseSession(v, keys, now)
	require.True(t, ok)
	assert.Equal(t, "Ana", got.name)
	assert.Equal(t, s.csrf(), got.csrf(), "the CSRF token follows from the session")
	assert.NotEqual(t, newSession("k2", "Ana", now, time.Hour).csrf(), s.csrf(), "each session has its own")

	_, ok = parseSession(v, keys, now.Add(time.Hour))
	assert.False(t, ok, "expired")
	_, ok = parseSession(v, sessionKeys(hashKeys([]string{"k1"})), now)
	assert.False(t, ok, "its key is gone")
	parts := strings.Split(v, ".")
	for i, tampered := range []string{
		strconv.FormatInt(now.Add(48*time.Hour).Unix(), 10) + "." + parts[1] + "." + parts[2] + "." + parts[3],
		parts[0] + "." + b64.EncodeToString([]byte("Eve")) + "." + parts[2] + "." + parts[3],
		parts[0] + "." + parts[1] + "." + parts[2] + "." + b64.EncodeToString([]byte("not a signature at all....")),
		parts[0] + "." + parts[1] + "." + parts[2],
		"", "....", v + ".x",
	} {
		_, ok := parseSession(tampered, keys, now)
		assert.False(t, ok, "tampered value %d", i)
	}
	assert.Equal(t, "admin", cleanName(" \x00\t "))
	assert.Equal(t, strings.Repeat("é", maxNameLength), cleanName(strings.Repeat("é", 100)))
}

// Every console form is refused without its CSRF token, with another
// session's, or posted cross-site, and changes nothing.
func TestConsoleCSRF(t *testing.T) {
	h := newHarness(t)
	cs := h.signIn("Ana")
	other := h.signIn("Eve")
	pg := cs.get("/admin/console/templates")
	require.Equal(t, http.StatusOK, pg.status)
	good := pg.form(t, "name", "otp", "channel", "sms", "language", "en", "body", "Code {code}")
	for name, c := range map[string]struct {
		form    url.Values
		headers []string
		want    int
	}{
		"no token":            {url.Values{"name": {"otp"}, "channel": {"sms"}, "body": {"Code {code}"}}, nil, http.StatusForbidden},
		"another's token":     {other.get("/admin/console/templates").form(t, "name", "otp", "channel", "sms", "body", "Code {code}"), nil, http.StatusForbidden},
		"cross-site":          {good, []string{"Sec-Fetch-Site: cross-site"}, http.StatusForbidden},
		"another origin":      {good, []string{"Sec-Fetch-Site:", "Origin: https://evil.example"}, http.StatusForbidden},
		"a token made longer": {url.Values{"csrf": {good.Get("csrf") + "x"}, "name": {"otp"}}, nil, http.StatusForbidden},
	} {
		res := cs.post("/admin/console/templates", c.form, c.headers...)
		assert.Equal(t, c.want, res.status, "%s: %s", name, res)
	}
	ts, err := h.eng.Templates(h.ctx)
	require.NoError(t, err)
	for _, tp := range ts {
		assert.NotEqual(t, "otp", tp.Name, "nothing was created")
	}

	res := cs.post("/admin/console/templates", good)
	assert.Equal(t, http.StatusSeeOther, res.status, res.String())
}

// Under the host's admin Authorizer the console needs no sign-in, and its
// forms' tokens are double-submitted in a cookie.
func TestConsoleAuthorizer(t *testing.T) {
	allow := func(r *http.Request) error {
		if r.Header.Get("X-Operator") == "" {
			return verify.ErrUnauthorized
		}
		return nil
	}
	h := newHarness(t, WithAdminAuthorizer(allow))
	cs := h.console()
	assert.Equal(t, http.StatusUnauthorized, cs.get("/admin/console/").status)
	pg := cs.get("/admin/console/templates", "X-Operator: ana")
	require.Equal(t, http.StatusOK, pg.status, pg.String())
	assert.Empty(t, byID(pg.doc, "sign-out").attr, "no session to sign out of")
	res := cs.post("/admin/console/templates", pg.form(t, "name", "otp", "channel", "sms", "body", "Code {code}"), "X-Operator: ana")
	assert.Equal(t, http.StatusSeeOther, res.status, res.String())

	fresh := h.console() // without the csrf cookie the token was set in
	res = fresh.post("/admin/console/templates", pg.form(t, "name", "otp2", "channel", "sms", "body", "Code {code}"), "X-Operator: ana")
	assert.Equal(t, http.StatusForbidden, res.status)
	assert.Equal(t, http.StatusSeeOther, cs.get("/admin/console/sign-in", "X-Operator: ana").status, "nothing to sign in for")
}

func TestConsoleOverview(t *testing.T) {
	h := newHarness(t)
	ids, codes := h.seed()
	cs := h.signIn("Ana")

	pg := cs.get("/admin/console/")
	require.Equal(t, http.StatusOK, pg.status, pg.String())
	assert.Equal(t, "text/html; charset=utf-8", pg.header.Get("Content-Type"))
	assert.Equal(t, consoleCSP, pg.header.Get("Content-Security-Policy"))
	assert.Equal(t, "no-store", pg.header.Get("Cache-Control"))
	doc := pg.doc

	assert.Equal(t, "3", byID(doc, "total").Text())
	assert.Equal(t, "3", byID(doc, "sent").Text())
	assert.Equal(t, "2", byID(doc, "verified").Text())
	assert.Equal(t, "66.7%", byID(doc, "conversion").Text())

	chans := map[string]*node{}
	for _, row := range doc.find(hasClass("channel")) {
		chans[row.attr["data-channel"]] = row
	}
	require.Contains(t, chans, "sms")
	require.Contains(t, chans, "email")
	cell := func(row *node, class string) string {
		cells := row.find(hasClass(class))
		require.Len(t, cells, 1, class)
		return cells[0].Text()
	}
	assert.Equal(t, "2", cell(chans["sms"], "verifications"))
	assert.Equal(t, "1", cell(chans["sms"], "verified"))
	assert.Equal(t, "50.0%", cell(chans["sms"], "conversion"))
	assert.Equal(t, "1", cell(chans["email"], "verifications"))
	assert.Equal(t, "100.0%", cell(chans["email"], "conversion"))

	rows := doc.find(hasClass("verification"))
	require.Len(t, rows, 3)
	var recipients []string
	for i, row := range rows {
		assert.Equal(t, ids[2-i], row.attr["data-id"], "newest first")
		recipients = append(recipients, cell(row, "recipient"))
	}
	assert.Equal(t, []string{"a***@example.com", "+47******32", "+47******67"}, recipients)
	for _, full := range []string{"+4791234567", "+4798765432", "ana@example.com"} {
		assert.NotContains(t, pg.String(), full, "recipients are masked")
	}
	for _, code := range codes {
		assert.NotContains(t, pg.String(), code, "no code appears")
	}
	assert.Equal(t, "/admin/report.csv?from=2026-11-24T10%3A00%3A00Z&to=2026-11-25T10%3A00%3A00Z", byID(doc, "csv").attr["href"],
		"the last 24 hours, whole hours, the current one last")

	// The charts: one point per hour and series, a bar per figure, the
	// figures in text.
	svg := func(id string) *node {
		found := byID(doc, id).find(func(n *node) bool { return n.name == "svg" && n.attr["data-points"] != "" })
		require.Len(t, found, 1, id)
		return found[0]
	}
	assert.Equal(t, "24 24 24", svg("chart-volume").attr["data-points"])
	assert.Len(t, svg("chart-volume").find(hasClass("point")), 72)
	assert.Equal(t, "24", svg("chart-conversion").attr["data-points"])
	assert.Equal(t, "8", svg("chart-funnel").attr["data-points"], "two channels, four figures each")
	assert.Contains(t, svg("chart-funnel").Text(), "sms verified")
	assert.Equal(t, "1", svg("chart-steps").attr["data-points"], "one step, no resend")
	assert.Equal(t, "2", svg("chart-ttv").attr["data-points"])
	assert.Contains(t, byID(doc, "chart-refused").Text(), "Nothing refused in this range.")
	var last []string
	for _, row := range byID(doc, "chart-volume").find(func(n *node) bool { return n.name == "tr" }) {
		last = last[:0]
		for _, cell := range row.find(func(n *node) bool { return n.name == "td" || n.name == "th" }) {
			last = append(last, cell.Text())
		}
	}
	assert.Equal(t, []string{"2026-11-25 09:00", "3", "3", "2"}, last, "the current hour's figures, as text")

	// Another range, another flow.
	week := cs.get("/admin/console/?range=7d&flow_id=" + h.smsFlow)
	require.Equal(t, http.StatusOK, week.status, week.String())
	assert.Equal(t, "2", byID(week.doc, "total").Text())
	assert.Equal(t, "7 7 7", week.doc.find(func(n *node) bool { return n.attr["data-points"] == "7 7 7" })[0].attr["data-points"])
	bad := cs.get("/admin/console/?range=1y")
	assert.Equal(t, http.StatusBadRequest, bad.status)
	assert.NotEmpty(t, byID(bad.doc, "error").Text())
}

func TestConsoleFlows(t *testing.T) {
	h := newHarness(t)
	cs := h.signIn("Ana")
	blank := cs.get("/admin/console/flows/new")
	require.Equal(t, http.StatusOK, blank.status, blank.String())
	assert.Equal(t, "5m", byID(blank.doc, "ttl").attr["value"], "defaults filled in")
	assert.Len(t, blank.doc.find(hasClass("step")), blankSteps)

	// Fields the form cannot read, and a step that says neither when it
	// is sent nor that it goes with the previous one.
	res := cs.post("/admin/console/flows/new", blank.form(t, "name", "login", "code_length", "six", "ttl", "five minutes",
		"steps[0].channel", "sms", "steps[1].channel", "voice", "steps[1].after", ""))
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Equal(t, "Enter a whole number.", res.fieldError("code_length"))
	assert.Contains(t, res.fieldError("ttl"), "Enter a duration")
	assert.Contains(t, res.fieldError("steps[1].after"), "Give a delay")
	assert.Equal(t, "login", byID(res.doc, "name").attr["value"], "the form as posted")
	assert.Equal(t, "true", byID(res.doc, "ttl").attr["aria-invalid"])

	// The engine's refusals, beside their fields: a step's index counts
	// the flow's steps, which may skip removed and blank rows.
	res = cs.post("/admin/console/flows/new", blank.form(t, "name", "login", "code_length", "3", "ttl", "5m",
		"steps[0].channel", "sms"))
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.fieldError("code_length"), "code_length must be 4 to 10")
	res = cs.post("/admin/console/flows/new", blank.form(t, "name", "login", "ttl", "1m",
		"steps[0].channel", "sms", "steps[1].channel", "email", "steps[1].remove", "1",
		"steps[2].channel", "voice", "steps[2].after", "2m"))
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.fieldError("steps[2].after"), "when the code (ttl 1m0s) has expired")
	res = cs.post("/admin/console/flows/new", blank.form(t, "name", "", "steps[0].channel", "sms"))
	assert.Contains(t, res.fieldError("name"), "name field is mandatory")
	flows, err := h.eng.Flows(h.ctx)
	require.NoError(t, err)
	before := len(flows)

	tmpl, err := h.eng.CreateTemplate(h.ctx, verify.Template{Name: "voice-login", Channel: "voice", Body: "Your code is {code}"})
	require.NoError(t, err)
	res = cs.post("/admin/console/flows/new", blank.form(t, "name", "login", "ttl", "10m", "code_length", "8",
		"steps[0].channel", "sms", "steps[0].from", "Acme",
		"steps[1].channel", "voice", "steps[1].template", tmpl.ID, "steps[1].after", "30s"))
	assert.Equal(t, http.StatusBadRequest, res.status, "the template is not approved yet")
	assert.Contains(t, res.fieldError("steps[1].template"), "not approved", "%v", errorsOf(res))

	require.NoError(t, h.eng.ApproveTemplate(h.ctx, tmpl.ID))
	res = cs.post("/admin/console/flows/new", blank.form(t, "name", "login", "ttl", "10m", "code_length", "8",
		"charset", "alphanumeric", "max_attempts", "3", "language", "en", "allowed_countries", "no, se",
		"steps[0].channel", "sms", "steps[0].from", "Acme",
		"steps[1].channel", "voice", "steps[1].template", tmpl.ID, "steps[1].after", "30s"))
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.fieldError("allowed_countries"), "need a PhoneParser", "this engine knows no countries")
	res = cs.post("/admin/console/flows/new", blank.form(t, "name", "login", "ttl", "10m", "code_length", "8",
		"charset", "alphanumeric", "max_attempts", "3", "language", "en", "allowed_ips", "203.0.113.0/24\n2001:db8::/32",
		"steps[0].channel", "sms", "steps[0].from", "Acme",
		"steps[1].channel", "voice", "steps[1].template", tmpl.ID, "steps[1].after", "30s",
		"steps[2].channel", "email", "steps[2].anyway", "1"))
	require.Equal(t, http.StatusSeeOther, res.status, "%v", errorsOf(res))
	assert.Equal(t, "/admin/console/flows?flash=flow-created", res.header.Get("Location"))
	f := h.flowByName("login")
	assert.Equal(t, 10*time.Minute, f.TTL)
	assert.Equal(t, verify.Alphanumeric, f.Charset)
	assert.Equal(t, []string{"203.0.113.0/24", "2001:db8::/32"}, f.AllowedIPs)
	assert.Equal(t, []verify.Step{{Channel: "sms", From: "Acme"}, {Channel: "voice", Template: tmpl.ID, After: 30 * time.Second},
		{Channel: "email"}}, f.Steps)

	list := cs.get("/admin/console/flows?flash=flow-created")
	assert.Equal(t, "Flow created.", byID(list.doc, "flash").Text())
	rows := list.doc.find(hasClass("flow"))
	assert.Len(t, rows, before+1)
	var route string
	for _, r := range rows {
		if r.attr["data-id"] == f.ID {
			route = r.find(hasClass("route"))[0].Text()
		}
	}
	assert.Equal(t, "sms → voice after 30s → email with it", route)

	// Edit: the form shows the flow; drop the email step, change the TTL.
	edit := cs.get("/admin/console/flows/" + f.ID)
	require.Equal(t, http.StatusOK, edit.status)
	assert.Equal(t, "10m", byID(edit.doc, "ttl").attr["value"])
	assert.Equal(t, "30s", byID(edit.doc, "steps[1].after").attr["value"])
	assert.Len(t, edit.doc.find(hasClass("step")), 3+blankSteps)
	form := edit.form(t)
	for k, v := range flowValues(f) {
		form[k] = v
	}
	form.Set("ttl", "15m")
	for k, v := range map[string]string{"steps[0].channel": "sms", "steps[0].from": "Acme", "steps[1].channel": "voice",
		"steps[1].template": tmpl.ID, "steps[1].after": "30s", "steps[2].channel": "email", "steps[2].anyway": "1",
		"steps[2].remove": "1", "steps[3].channel": "", "steps[4].channel": ""} {
		form.Set(k, v)
	}
	res = cs.post("/admin/console/flows/"+f.ID, form)
	require.Equal(t, http.StatusSeeOther, res.status, res.String())
	got, err := h.eng.Flow(h.ctx, f.ID)
	require.NoError(t, err)
	assert.Equal(t, 15*time.Minute, got.TTL)
	assert.Len(t, got.Steps, 2)

	// Reorder: the voice call first, the SMS 20 s later.
	for k, v := range map[string]string{"steps[0].position": "2", "steps[0].after": "20s", "steps[1].position": "1", "steps[1].after": "",
		"steps[2].channel": "", "steps[2].anyway": "", "steps[2].remove": ""} {
		form.Set(k, v)
	}
	res = cs.post("/admin/console/flows/"+f.ID, form)
	require.Equal(t, http.StatusSeeOther, res.status, "%v", errorsOf(res))
	got, err = h.eng.Flow(h.ctx, f.ID)
	require.NoError(t, err)
	assert.Equal(t, []verify.Step{{Channel: "voice", Template: tmpl.ID}, {Channel: "sms", From: "Acme", After: 20 * time.Second}}, got.Steps)
	assert.Equal(t, f.CreatedAt, got.CreatedAt)

	assert.Equal(t, http.StatusNotFound, cs.get("/admin/console/flows/no-such-flow").status)
	res = cs.post("/admin/console/flows/"+f.ID+"/delete", edit.form(t))
	require.Equal(t, http.StatusSeeOther, res.status)
	_, err = h.eng.Flow(h.ctx, f.ID)
	assert.ErrorIs(t, err, verify.ErrNotFound)
}

func TestConsoleTemplates(t *testing.T) {
	h := newHarness(t)
	cs := h.signIn("Ana")
	pg := cs.get("/admin/console/templates")
	require.Equal(t, http.StatusOK, pg.status)

	res := cs.post("/admin/console/templates", pg.form(t, "name", "login", "channel", "sms", "language", "en", "body", "Hello"))
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.Contains(t, res.fieldError("t-body"), "{code}")
	assert.Equal(t, "login", byID(res.doc, "t-name").attr["value"])
	res = cs.post("/admin/console/templates", pg.form(t, "name", "login", "channel", "pigeon", "body", "Code {code}"))
	assert.Contains(t, res.fieldError("t-channel"), "not registered")

	for _, name := range []string{"login", "spam"} {
		res = cs.post("/admin/console/templates", pg.form(t, "name", name, "channel", "sms", "language", "en", "body", "Code {code}"))
		require.Equal(t, http.StatusSeeOther, res.status, res.String())
	}
	list := cs.get("/admin/console/templates")
	ids := map[string]string{}
	for _, row := range byID(list.doc, "templates-pending").find(hasClass("template")) {
		ids[row.attr["data-name"]] = row.attr["data-id"]
	}
	require.Contains(t, ids, "login")
	require.Contains(t, ids, "spam")

	res = cs.post("/admin/console/templates/"+ids["spam"]+"/reject", list.form(t, "reason", " "))
	assert.Equal(t, http.StatusBadRequest, res.status, "a rejection needs a reason")
	res = cs.post("/admin/console/templates/"+ids["login"]+"/approve", list.form(t))
	require.Equal(t, http.StatusSeeOther, res.status)
	res = cs.post("/admin/console/templates/"+ids["spam"]+"/reject", list.form(t, "reason", "Reads like spam"))
	require.Equal(t, http.StatusSeeOther, res.status)

	list = cs.get("/admin/console/templates")
	names := func(table string) []string {
		var out []string
		for _, row := range byID(list.doc, table).find(hasClass("template")) {
			out = append(out, row.attr["data-name"])
		}
		return out
	}
	assert.Empty(t, names("templates-pending"))
	assert.Contains(t, names("templates-approved"), "login")
	assert.Equal(t, []string{"spam"}, names("templates-rejected"))
	assert.Equal(t, "Reads like spam", byID(list.doc, "templates-rejected").find(hasClass("reason"))[0].Text())
	res = cs.post("/admin/console/templates/no-such/approve", list.form(t))
	assert.Equal(t, http.StatusNotFound, res.status)
}

// errorsOf is every error a page shows, for failure messages.
func errorsOf(p page) []string {
	var out []string
	if p.doc == nil {
		return nil
	}
	for _, n := range p.doc.find(func(n *node) bool { return hasClass("field-error")(n) || hasClass("error")(n) }) {
		out = append(out, n.attr["id"]+": "+n.Text())
	}
	return out
}

func TestConsoleVerifications(t *testing.T) {
	h := newHarness(t)
	ids, _ := h.seed() // a: verified; b: a wrong code, open; c: verified by email
	cs := h.signIn("Ana")

	res := cs.get("/admin/console/verifications")
	require.Equal(t, http.StatusOK, res.status, res.String())
	rows := res.doc.find(hasClass("verification"))
	require.Len(t, rows, 3)
	assert.Equal(t, ids[2], rows[0].attr["data-id"], "newest first")
	var recipients []string
	for _, row := range rows {
		recipients = append(recipients, row.find(hasClass("recipient"))[0].Text())
	}
	assert.Equal(t, []string{"a***@example.com", "+47******32", "+47******67"}, recipients, "masked")

	find := func(query string) []string {
		t.Helper()
		res := cs.get("/admin/console/verifications?" + query)
		require.Equal(t, http.StatusOK, res.status, "%s: %v", query, errorsOf(res))
		var out []string
		for _, row := range res.doc.find(hasClass("verification")) {
			out = append(out, row.attr["data-id"])
		}
		return out
	}
	assert.Equal(t, []string{ids[0]}, find("recipient="+url.QueryEscape(" +4791234567 ")))
	assert.Equal(t, []string{ids[1]}, find("foreign_id=b"))
	assert.Equal(t, []string{ids[2], ids[0]}, find("status=verified"))
	assert.Equal(t, []string{ids[2], ids[1], ids[0]}, find("status=verified&status=sent"))
	assert.Equal(t, []string{ids[1], ids[0]}, find("flow_id="+h.smsFlow))
	day := testStart.Format(time.DateOnly)
	assert.Len(t, find("from="+day+"&to="+day), 3, "a day's dates include the whole day")
	assert.Empty(t, find("to="+testStart.AddDate(0, 0, -1).Format(time.DateOnly)))
	full := cs.get("/admin/console/verifications?unmasked=1&foreign_id=a")
	assert.Equal(t, "+4791234567", full.doc.find(hasClass("recipient"))[0].Text())
	bad := cs.get("/admin/console/verifications?from=yesterday")
	assert.Equal(t, http.StatusBadRequest, bad.status)
	assert.Contains(t, byID(bad.doc, "search-error").Text(), "from must be")

	// Pages of 50, newest first, with a link to the next.
	for i := range consolePageSize {
		h.clock.Add(time.Millisecond)
		h.generate(fmt.Sprintf(`{"to":{"mobile":"+47900%05d"}}`, i))
	}
	first := cs.get("/admin/console/verifications")
	assert.Len(t, first.doc.find(hasClass("verification")), consolePageSize)
	next := byID(first.doc, "next-page").attr["href"]
	require.NotEmpty(t, next)
	second := cs.get(next)
	require.Equal(t, http.StatusOK, second.status)
	assert.Len(t, second.doc.find(hasClass("verification")), 3)
	assert.Empty(t, byID(second.doc, "next-page").attr["href"])
}

func TestConsoleVerificationTimeline(t *testing.T) {
	h := newHarness(t)
	ids, codes := h.seed()
	cs := h.signIn("Ana")

	// b: sent, then a wrong code; still open.
	pg := cs.get("/admin/console/verifications/" + ids[1])
	require.Equal(t, http.StatusOK, pg.status, pg.String())
	kinds := func(p page) []string {
		var out []string
		for _, li := range byID(p.doc, "timeline").find(hasClass("event")) {
			out = append(out, li.attr["data-kind"])
		}
		return out
	}
	assert.Equal(t, []string{"created", "sent", "check"}, kinds(pg))
	assert.Equal(t, "+47******32", byID(pg.doc, "recipient").Text())
	assert.Contains(t, byID(pg.doc, "timeline").Text(), "Check 1: a wrong code.")
	assert.Equal(t, "1 of 5", byID(pg.doc, "attempts").Text())
	for _, code := range codes {
		assert.NotContains(t, pg.String(), code, "no code on the page")
	}
	assert.Equal(t, "+4798765432", byID(cs.get("/admin/console/verifications/"+ids[1]+"?unmasked=1").doc, "recipient").Text())

	// A receipt is an event of its own; a cancel ends it, and a resend
	// after that is refused beside the timeline.
	v, err := h.eng.Get(h.ctx, ids[1])
	require.NoError(t, err)
	h.clock.Add(2 * time.Second)
	require.NoError(t, h.eng.ReportDelivery(h.ctx, v.Deliveries[0].ID, verify.DeliveryDelivered, ""))
	h.clock.Add(time.Second)
	pg = cs.get("/admin/console/verifications/" + ids[1])
	assert.Equal(t, []string{"created", "sent", "check", "receipt"}, kinds(pg))
	res := cs.post("/admin/console/verifications/"+ids[1]+"/cancel", pg.form(t))
	require.Equal(t, http.StatusSeeOther, res.status, "%v", errorsOf(res))
	pg = cs.get(res.header.Get("Location"))
	assert.Equal(t, "Verification canceled.", byID(pg.doc, "flash").Text())
	assert.Equal(t, "canceled", byID(pg.doc, "status").Text())
	assert.Equal(t, []string{"created", "sent", "check", "receipt", "ended"}, kinds(pg))
	assert.Empty(t, byID(pg.doc, "actions").attr, "no actions on an ended verification")
	res = cs.post("/admin/console/verifications/"+ids[1]+"/resend", pg.form(t))
	assert.GreaterOrEqual(t, res.status, 400)
	assert.Less(t, res.status, 500)
	assert.NotEmpty(t, byID(res.doc, "action-error").Text(), "the engine's refusal, on the page")

	// a: the right code, then verified.
	pg = cs.get("/admin/console/verifications/" + ids[0])
	assert.Equal(t, []string{"created", "sent", "check", "ended"}, kinds(pg))
	assert.Contains(t, byID(pg.doc, "timeline").Text(), "Check 1: the right code.")
	assert.Contains(t, byID(pg.doc, "timeline").Text(), "Verified.")

	assert.Equal(t, http.StatusNotFound, cs.get("/admin/console/verifications/no-such-id").status)
	res = cs.post("/admin/console/verifications/no-such-id/cancel", pg.form(t))
	assert.Equal(t, http.StatusNotFound, res.status)
}

// auditActions is the audit log's entries as "actor action target",
// oldest first.
func (h *harness) auditActions() []string {
	h.t.Helper()
	page, err := h.eng.AuditLog(h.ctx, verify.AuditQuery{Limit: 1000})
	require.NoError(h.t, err)
	var out []string
	for i := len(page.Entries) - 1; i >= 0; i-- {
		e := page.Entries[i]
		out = append(out, strings.TrimSpace(e.Actor+" "+e.Action+" "+e.Target))
	}
	return out
}

func TestConsoleAudit(t *testing.T) {
	h := newHarness(t)
	ids, _ := h.seed()
	cs := h.console()
	signin := cs.get("/admin/console/sign-in")
	cs.post("/admin/console/sign-in", signin.form(t, "name", "Mallory", "key", "guess"))
	res := cs.post("/admin/console/sign-in", signin.form(t, "name", "Ana", "key", testAdminKey))
	require.Equal(t, http.StatusSeeOther, res.status)

	pg := cs.get("/admin/console/templates")
	res = cs.post("/admin/console/templates", pg.form(t, "name", "login", "channel", "sms", "body", "Code {code}"))
	require.Equal(t, http.StatusSeeOther, res.status)
	tmpl := cs.get("/admin/console/templates").doc.find(func(n *node) bool { return n.attr["data-name"] == "login" })[0].attr["data-id"]
	cs.post("/admin/console/templates/"+tmpl+"/reject", pg.form(t, "reason", "too short"))
	cs.post("/admin/console/flows/new", pg.form(t, "name", "login", "steps[0].channel", "sms"))
	cs.post("/admin/console/flows/new", pg.form(t, "name", "", "steps[0].channel", "sms")) // refused: not recorded
	cs.post("/admin/console/verifications/"+ids[1]+"/cancel", pg.form(t))
	cs.get("/admin/console/verifications/" + ids[0] + "?unmasked=1")
	cs.get("/admin/console/verifications?unmasked=1&status=verified")
	flow := h.flowByName("login")

	// The admin API records its callers by their key's fingerprint.
	api := "admin key " + keyFingerprint(testAdminKey)
	require.Equal(t, http.StatusNoContent, h.do("DELETE", "/admin/flows/"+flow.ID, "", adminKey).status)
	require.Equal(t, http.StatusOK, h.do("GET", "/admin/verifications/"+ids[2]+"?unmasked=1", "", adminKey).status)
	require.Equal(t, http.StatusOK, h.do("GET", "/admin/verifications/"+ids[2], "", adminKey).status) // masked: not recorded

	assert.Equal(t, []string{
		"Mallory console.sign-in-refused",
		"Ana console.sign-in",
		"Ana template.create " + tmpl,
		"Ana template.reject " + tmpl,
		"Ana flow.create " + flow.ID,
		"Ana verification.cancel " + ids[1],
		"Ana verification.reveal " + ids[0],
		"Ana verifications.reveal",
		api + " flow.delete " + flow.ID,
		api + " verification.reveal " + ids[2],
	}, h.auditActions())

	// The console's page, newest first, with filters.
	page := cs.get("/admin/console/audit")
	require.Equal(t, http.StatusOK, page.status, page.String())
	rows := page.doc.find(hasClass("entry"))
	require.Len(t, rows, 10)
	assert.Equal(t, "verification.reveal", rows[0].attr["data-action"])
	assert.Equal(t, api, rows[0].find(hasClass("actor"))[0].Text())
	page = cs.get("/admin/console/audit?actor=Ana&action=template.reject")
	rows = page.doc.find(hasClass("entry"))
	require.Len(t, rows, 1)
	assert.Equal(t, "too short", rows[0].find(hasClass("detail"))[0].Text())
	assert.Equal(t, http.StatusBadRequest, cs.get("/admin/console/audit?cursor=bogus").status)

	// And the admin API's.
	res2 := h.do("GET", "/admin/audit?actor=Ana&limit=2", "", adminKey)
	require.Equal(t, http.StatusOK, res2.status, res2.String())
	var out verify.AuditPage
	require.NoError(t, json.Unmarshal(res2.body, &out))
	assert.Len(t, out.Entries, 2)
	assert.NotEmpty(t, out.Next)
	assert.Equal(t, "verifications.reveal", out.Entries[0].Action)
}

// Under the host's Authorizer, WithActor names the operator.
func TestConsoleAuditActor(t *testing.T) {
	h := newHarness(t, WithAdminAuthorizer(func(r *http.Request) error { return nil }),
		WithActor(func(r *http.Request) string { return r.Header.Get("X-User") }))
	cs := h.console()
	pg := cs.get("/admin/console/templates", "X-User: ana@example.com")
	require.Equal(t, "ana@example.com", byID(pg.doc, "who").Text())
	res := cs.post("/admin/console/templates", pg.form(t, "name", "login", "channel", "sms", "body", "Code {code}"), "X-User: ana@example.com")
	require.Equal(t, http.StatusSeeOther, res.status)
	require.Equal(t, http.StatusOK, h.do("GET", "/admin/verifications?unmasked=1", "").status)
	actions := h.auditActions()
	require.Len(t, actions, 2)
	assert.True(t, strings.HasPrefix(actions[0], "ana@example.com template.create "), actions[0])
	assert.Equal(t, "admin verifications.reveal", actions[1], "without a name, admin")
}

func TestConsoleProtection(t *testing.T) {
	h := newHarness(t)
	now := h.clock.Now()
	for _, tk := range []verify.Take{
		{Key: "fail:+4791234567", Delta: 100, Max: verify.NoLimit, ExpiresAt: now.Add(time.Hour)}, // NoProtection's MaxFailures
		{Key: "fail:ana@example.com", Delta: 2, Max: verify.NoLimit, ExpiresAt: now.Add(time.Hour)},
		{Key: "block:prefix:+4790", Delta: 1, Max: verify.NoLimit, ExpiresAt: now.Add(time.Hour)},
	} {
		_, err := h.store.Take(h.ctx, now, []verify.Take{tk})
		require.NoError(t, err)
	}
	cs := h.signIn("Ana")
	pg := cs.get("/admin/console/protection")
	require.Equal(t, http.StatusOK, pg.status, pg.String())
	rows := byID(pg.doc, "lockouts").find(hasClass("lockout"))
	require.Len(t, rows, 2)
	assert.Equal(t, "+47******67", rows[0].find(hasClass("recipient"))[0].Text())
	assert.Equal(t, "100", rows[0].find(hasClass("failures"))[0].Text())
	assert.Equal(t, "locked out", rows[0].find(hasClass("state"))[0].Text())
	assert.Equal(t, "a***@example.com", rows[1].find(hasClass("recipient"))[0].Text())
	assert.Equal(t, "counting", rows[1].find(hasClass("state"))[0].Text())
	assert.Empty(t, pg.doc.find(hasClass("unlock")), "no row Unlock while masked")
	assert.NotContains(t, pg.String(), "+4791234567", "no full number in the page, hidden or not")
	assert.Len(t, byID(pg.doc, "blocks").find(hasClass("block")), 1)
	assert.Empty(t, pg.doc.find(hasClass("refusal")), "nothing refused yet")
	hour := strconv.FormatInt(now.Unix()/3600, 10)
	_, err := h.store.Take(h.ctx, now, []verify.Take{
		{Key: "stats:refused:" + hour + ":" + verify.RefusalLocked, Delta: 4, Max: verify.NoLimit, ExpiresAt: now.Add(time.Hour)},
		{Key: "stats:refused:" + strconv.FormatInt(now.Unix()/3600-30, 10) + ":" + verify.RefusalLocked, Delta: 9, Max: verify.NoLimit, ExpiresAt: now.Add(time.Hour)},
	})
	require.NoError(t, err)
	refused := cs.get("/admin/console/protection").doc.find(hasClass("refusal"))
	require.Len(t, refused, 1, "the last 24 hours only")
	assert.Equal(t, "locked out4", refused[0].Text())

	full := cs.get("/admin/console/protection?unmasked=1")
	require.Len(t, full.doc.find(hasClass("unlock")), 2)
	res := cs.post("/admin/console/protection/unlock", full.form(t, "recipient", "+4791234567"))
	require.Equal(t, http.StatusSeeOther, res.status, "%v", errorsOf(res))
	res = cs.post("/admin/console/protection/unlock", pg.form(t, "recipient", " "))
	assert.Equal(t, http.StatusBadRequest, res.status)
	assert.NotEmpty(t, byID(res.doc, "protection-error").Text())
	res = cs.post("/admin/console/protection/unblock", pg.form(t, "prefix", "+4790"))
	require.Equal(t, http.StatusSeeOther, res.status)

	pg = cs.get("/admin/console/protection?flash=unlocked")
	assert.Equal(t, "Recipient unlocked: their wrong codes no longer count.", byID(pg.doc, "flash").Text())
	assert.Len(t, byID(pg.doc, "lockouts").find(hasClass("lockout")), 1)
	assert.Empty(t, byID(pg.doc, "blocks").find(hasClass("block")))
	actions := h.auditActions()
	assert.Equal(t, []string{"Ana console.sign-in", "Ana lockouts.reveal", "Ana recipient.unlock +47******67", "Ana prefix.unblock +4790"}, actions)
}

func TestConsoleSignInLimit(t *testing.T) {
	h := newHarness(t, WithSignInRate(verify.Rate{Limit: 3, Per: 15 * time.Minute}))
	cs := h.console()
	signin := cs.get("/admin/console/sign-in")
	for range 3 {
		res := cs.post("/admin/console/sign-in", signin.form(t, "name", "Mallory", "key", "guess"))
		require.Equal(t, http.StatusUnauthorized, res.status)
	}
	res := cs.post("/admin/console/sign-in", signin.form(t, "name", "Mallory", "key", testAdminKey))
	require.Equal(t, http.StatusTooManyRequests, res.status, "the limit holds even for the right key")
	assert.Equal(t, "300", res.header.Get("Retry-After"), "a token comes back every 5 minutes")
	assert.Equal(t, "Too many sign-in attempts from your address. Try again in 5 minutes.", byID(res.doc, "sign-in-error").Text())
	assert.Empty(t, res.header.Values("Set-Cookie"), "no session")
	assert.Contains(t, h.auditActions(), "Mallory console.sign-in-limited")

	h.clock.Add(5 * time.Minute) // a token back: 3 per 15 minutes
	res = cs.post("/admin/console/sign-in", signin.form(t, "name", "Ana", "key", testAdminKey))
	assert.Equal(t, http.StatusSeeOther, res.status)
}
