package httpapi

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// The console: server-rendered pages under /admin/console/ for operators,
// beside the JSON admin API. Pages need no script; the Content-Security-
// Policy allows the console's own stylesheet and forms posting to the
// console, nothing else. Every page needs a session (see
// console_session.go) or, with WithAdminAuthorizer, the host's
// authorization; every form that changes something carries a CSRF token.

//go:embed templates/console
var consoleFS embed.FS

// consoleCSP is the console pages' Content-Security-Policy: no scripts,
// no inline styles, forms only to the console's own origin.
const consoleCSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// consoleFuncs are the helpers the console's templates use.
var consoleFuncs = template.FuncMap{
	"percent": func(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) },
	"seconds": func(d time.Duration) string {
		if d == 0 {
			return "–"
		}
		return d.Round(100 * time.Millisecond).String()
	},
	"utc": func(t time.Time) string {
		if t.IsZero() {
			return "–"
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"duration": formatDuration,
	"add":      func(a, b int) int { return a + b },
	// dict builds a sub-template's argument from name, value pairs.
	"dict": func(kv ...any) (map[string]any, error) {
		if len(kv)%2 != 0 {
			return nil, errors.New("dict takes name, value pairs")
		}
		m := make(map[string]any, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			k, ok := kv[i].(string)
			if !ok {
				return nil, fmt.Errorf("dict: name %v is not a string", kv[i])
			}
			m[k] = kv[i+1]
		}
		return m, nil
	},
	"smsOptions": func() map[string]string {
		return map[string]string{"web_otp_domain": "WebOTP domain", "app_hash": "Android app hash"}
	},
	"hasPrefix": strings.HasPrefix,
	"has":       func(ss []string, s string) bool { return slices.Contains(ss, s) },
	"hasTemplate": func(ts []verify.Template, id string) bool {
		return slices.ContainsFunc(ts, func(t verify.Template) bool { return t.ID == id })
	},
}

// consolePages are the console's page templates by name, each parsed with
// the layout.
var consolePages = func() map[string]*template.Template {
	layout := template.Must(template.New("layout.html").Funcs(consoleFuncs).ParseFS(consoleFS, "templates/console/layout.html"))
	pages, err := fs.Glob(consoleFS, "templates/console/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/console/"), ".html")
		if name == "layout" || name == "charts" {
			continue
		}
		out[name] = template.Must(template.Must(layout.Clone()).ParseFS(consoleFS, p, "templates/console/charts.html"))
	}
	return out
}()

// consoleAsset is one of the console's files, read once.
func consoleAsset(name string) []byte {
	b, err := consoleFS.ReadFile("templates/console/" + name)
	if err != nil {
		panic(err)
	}
	return b
}

// asset serves a file the pages load, the same for everyone (no sign-in
// needed), cached for an hour.
func asset(contentType string, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", contentType)
		h.Set("Cache-Control", "public, max-age=3600")
		h.Set("X-Content-Type-Options", "nosniff")
		w.Write(body)
	}
}

// consoleReq is what the console knows about a request it admitted.
type consoleReq struct {
	// who is the operator: the name given at sign-in, or under the host's
	// Authorizer the name WithActor gives ("admin" without it).
	who string
	// csrf is the token the page's forms carry.
	csrf string
	// session is true for a signed-in operator (who can sign out).
	session bool
}

// consolePage is what every console page's template gets.
type consolePage struct {
	Title string
	// Nav is the navigation entry to mark as current.
	Nav     string
	Who     string
	CSRF    string
	Session bool
	// Flash is a message about what the last form did.
	Flash string
	// Data is the page's own.
	Data any
}

type consoleHandler func(w http.ResponseWriter, r *http.Request, c consoleReq)

func (s *server) consoleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /admin/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, consolePath, http.StatusSeeOther)
	})
	mux.HandleFunc("GET "+consolePath+"console.css", asset("text/css; charset=utf-8", consoleAsset("console.css")))
	mux.HandleFunc("GET "+consolePath+"icon.svg", asset("image/svg+xml", consoleAsset("icon.svg")))
	mux.HandleFunc("GET "+consolePath+"sign-in", s.signInPage)
	mux.HandleFunc("POST "+consolePath+"sign-in", s.signIn)
	mux.HandleFunc("POST "+consolePath+"sign-out", s.console(s.signOut))
	mux.HandleFunc("GET "+consolePath+"{$}", s.console(s.overviewPage))
	mux.HandleFunc("GET "+consolePath+"flows", s.console(s.flowsPage))
	mux.HandleFunc("GET "+consolePath+"flows/new", s.console(s.flowFormPage))
	mux.HandleFunc("POST "+consolePath+"flows/new", s.console(s.saveFlowForm))
	mux.HandleFunc("GET "+consolePath+"flows/{id}", s.console(s.flowFormPage))
	mux.HandleFunc("POST "+consolePath+"flows/{id}", s.console(s.saveFlowForm))
	mux.HandleFunc("POST "+consolePath+"flows/{id}/delete", s.console(s.idAction(s.eng.DeleteFlow, "flow.delete", "flows", "flow-deleted")))
	mux.HandleFunc("GET "+consolePath+"verifications", s.console(s.verificationsPage))
	mux.HandleFunc("GET "+consolePath+"verifications/{id}", s.console(s.verificationPage))
	mux.HandleFunc("POST "+consolePath+"verifications/{id}/cancel", s.console(s.consoleAction(s.eng.Cancel, "verification.cancel", "verification-canceled")))
	mux.HandleFunc("POST "+consolePath+"verifications/{id}/resend", s.console(s.consoleAction(s.eng.Resend, "verification.resend", "verification-resent")))
	mux.HandleFunc("GET "+consolePath+"protection", s.console(s.protectionPage))
	mux.HandleFunc("POST "+consolePath+"protection/unlock", s.console(s.unlockForm))
	mux.HandleFunc("POST "+consolePath+"protection/unblock", s.console(s.unblockForm))
	mux.HandleFunc("GET "+consolePath+"audit", s.console(s.auditPage))
	mux.HandleFunc("GET "+consolePath+"templates", s.console(s.templatesPage))
	mux.HandleFunc("POST "+consolePath+"templates", s.console(s.createTemplateForm))
	mux.HandleFunc("POST "+consolePath+"templates/{id}/approve", s.console(s.idAction(s.eng.ApproveTemplate, "template.approve", "templates", "template-approved")))
	mux.HandleFunc("POST "+consolePath+"templates/{id}/reject", s.console(s.rejectTemplateForm))
}

// console admits a request to a console page, in this order: a
// state-changing request a browser made cross-origin is refused (403);
// then the host's admin Authorizer decides, or else the session cookie
// must be valid (a page without one redirects to the sign-in, a form is
// refused with 401); then a form's body is parsed and its CSRF token
// checked (403 when it does not match).
func (s *server) console(h consoleHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.crossOrigin.Check(r); err != nil {
			s.consoleError(w, r, http.StatusForbidden, "This form was posted from another site, so it was refused.")
			return
		}
		var c consoleReq
		if s.st.adminAuth != nil {
			if ve, status := s.authorize(r, s.st.adminAuth); ve != nil {
				s.consoleError(w, r, status, ve.Message)
				return
			}
			c = consoleReq{who: s.authorizedActor(r), csrf: s.formCSRF(w, r)}
		} else {
			sess, ok := s.requestSession(r)
			if !ok {
				if r.Method == http.MethodGet {
					http.Redirect(w, r, consolePath+"sign-in?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
					return
				}
				s.consoleError(w, r, http.StatusUnauthorized, "Your session has ended. Sign in again, then repeat what you were doing.")
				return
			}
			c = consoleReq{who: sess.name, csrf: sess.csrf(), session: true}
		}
		if r.Method == http.MethodPost {
			if !s.parseConsoleForm(w, r) {
				return
			}
			// Without a session, c.csrf is the csrf cookie's token.
			if !csrfMatches(r.PostForm.Get("csrf"), c.csrf) {
				s.consoleError(w, r, http.StatusForbidden, "This form has expired or did not come from the console. Reload the page and try again.")
				return
			}
		}
		h(w, r, c)
	}
}

// requestSession returns the request's valid session, if it has one.
func (s *server) requestSession(r *http.Request) (session, bool) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	return parseSession(ck.Value, s.sessionKeys, s.eng.Now())
}

// parseConsoleForm parses a posted form of at most the body limit,
// answering 400 or 413 itself when it cannot.
func (s *server) parseConsoleForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, s.st.maxBody)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.consoleError(w, r, http.StatusRequestEntityTooLarge, "The form is larger than this server accepts.")
			return false
		}
		s.consoleError(w, r, http.StatusBadRequest, "The form could not be read.")
		return false
	}
	return true
}

// render answers with a console page.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, name string, c consoleReq, p consolePage) {
	t, ok := consolePages[name]
	if !ok {
		s.internalError(w, r, fmt.Errorf("no console page %q", name))
		return
	}
	p.Who, p.CSRF, p.Session = c.who, c.csrf, c.session
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", p); err != nil {
		s.internalError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	buf.WriteTo(w)
}

// consoleError answers with the console's error page.
func (s *server) consoleError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, r, status, "error", consoleReq{}, consolePage{Title: http.StatusText(status), Data: msg})
}

// engineError answers an engine error that no form field explains: the
// error's own status and message for a *verify.Error, else (a store
// failure, a bug) 500 with a generic message, the error logged.
func (s *server) engineError(w http.ResponseWriter, r *http.Request, c consoleReq, err error) {
	var ve *verify.Error
	if errors.As(err, &ve) && ve.Code != verify.ErrInternal.Code {
		s.render(w, r, ve.HTTPStatus(), "error", c, consolePage{Title: http.StatusText(ve.HTTPStatus()), Data: ve.Message})
		return
	}
	logged := s.logInternal(r, err)
	s.render(w, r, http.StatusInternalServerError, "error", c, consolePage{Title: "Server error", Data: logged.Message})
}

// refusal sorts an engine error for a page that shows it: a refusal the
// request caused (a *verify.Error other than E925) is returned, for the
// page to show beside its form; anything else (a store failure, a bug) is
// answered with the error page, and ok is false.
func (s *server) refusal(w http.ResponseWriter, r *http.Request, c consoleReq, err error) (ve *verify.Error, ok bool) {
	ve, ok = verify.AsError(err)
	if !ok || ve.Code == verify.ErrInternal.Code {
		s.engineError(w, r, c, err)
		return nil, false
	}
	return ve, true
}

// idAction runs act on the ID in the path, records it in the audit log as
// action, and goes to path with flash.
func (s *server) idAction(act func(ctx context.Context, id string) error, action, path, flash string) consoleHandler {
	return func(w http.ResponseWriter, r *http.Request, c consoleReq) {
		id := r.PathValue("id")
		if err := act(r.Context(), id); err != nil {
			s.engineError(w, r, c, err)
			return
		}
		s.audit(r, c.who, action, id, "")
		redirectFlash(w, r, consolePath+path, flash)
	}
}

// pageLink is the console page at path with the query v, the cursor of
// one of its lists (key) moved on to cursor.
func pageLink(path string, v url.Values, key, cursor string) string {
	next := cloneValues(v)
	next.Set(key, cursor)
	next.Del("flash")
	return consolePath + path + "?" + next.Encode()
}

// redirectFlash answers a form that succeeded: 303 to path, with a
// message the page shows once.
func redirectFlash(w http.ResponseWriter, r *http.Request, path, flash string) {
	http.Redirect(w, r, path+"?flash="+url.QueryEscape(flash), http.StatusSeeOther)
}

// flashOf is the message a redirect carried: only the console's own,
// never text a link could make up.
func flashOf(r *http.Request) string {
	return flashes[r.URL.Query().Get("flash")]
}

// flashes are the messages a form's redirect may show, by key.
var flashes = map[string]string{
	"flow-created":          "Flow created.",
	"flow-saved":            "Flow saved.",
	"flow-deleted":          "Flow deleted.",
	"template-created":      "Template created; it is pending until approved.",
	"template-approved":     "Template approved.",
	"template-rejected":     "Template rejected.",
	"signed-out":            "You have signed out.",
	"verification-canceled": "Verification canceled.",
	"verification-resent":   "Code sent again.",
	"unlocked":              "Recipient unlocked: their wrong codes no longer count.",
	"unblocked":             "Prefix unblocked.",
}

// formatDuration writes d the way the console's forms read it back
// (time.ParseDuration): "5m", "1h30m", "45s"; "0s" for zero.
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	s := d.String()
	// time.Duration.String writes "5m0s" and "1h0m0s"; drop the zeros.
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
