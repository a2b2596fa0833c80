package httpapi

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// TwilioHook authenticates Twilio's status callbacks.
type TwilioHook struct {
	// AuthToken is the account's auth token.
	AuthToken string
	// PublicURL is the callback URL as configured with Twilio, which
	// Twilio signs.
	PublicURL string
}

// KaleyraHook authenticates Kaleyra's delivery reports: the Kaleyra
// channel signs the message ID into each callback URL it hands Kaleyra
// (channels.KaleyraConfig.CallbackSecret), and the hook checks it.
type KaleyraHook struct {
	// Secret is the channel's CallbackSecret; empty accepts unsigned
	// reports (keep the URL confidential then).
	Secret []byte
}

const defaultMaxBody = 16 << 10

// server holds a handler's state: the engine and the settings. Each
// constructor makes its own; none is shared between handlers.
type server struct {
	eng *verify.Engine
	st  settings
	// sessionKeys sign the console's sessions, one per admin key.
	sessionKeys [][]byte
	// crossOrigin refuses the admin routes' state-changing requests made
	// cross-site by a browser (see admin).
	crossOrigin *http.CrossOriginProtection
}

func newServer(eng *verify.Engine, opts []Option) *server {
	st := newSettings(opts)
	return &server{
		eng:         eng,
		st:          st,
		sessionKeys: sessionKeys(st.adminKeys),
		// No trusted origins: the dashboard, the only page served, posts
		// nothing, so only the server's own origin and non-browser
		// clients may change state.
		crossOrigin: http.NewCrossOriginProtection(),
	}
}

// handler builds a handler serving the given route sets, with the request
// log and JSON answers for paths and methods it does not serve.
func handler(eng *verify.Engine, opts []Option, routes ...func(*server, *http.ServeMux)) http.Handler {
	s := newServer(eng, opts)
	mux := http.NewServeMux()
	for _, add := range routes {
		add(s, mux)
	}
	return s.logRequests(s.jsonMisses(mux))
}

// New returns one handler for every endpoint: the routes of Kaleyra,
// WAYSCloud, ThunderSMS, Admin and Hooks, GET /healthz (200 "ok"), and a
// redirect from / to the dashboard. It is what cmd/openverify serves.
func New(eng *verify.Engine, opts ...Option) http.Handler {
	return handler(eng, opts, (*server).kaleyraRoutes, (*server).waysRoutes, (*server).thunderRoutes,
		(*server).adminRoutes, (*server).hookRoutes, (*server).miscRoutes)
}

// Kaleyra returns the Kaleyra Verify API: POST /v1/{sid}/verify (generate
// and send a code) and POST /v1/{sid}/verify/validate. Requests carry an
// API key in the api-key header (WithAPIKeys) or pass the host's
// Authorizer (WithAuthorizer); without either, every request is refused.
// See the package documentation for the wire format.
func Kaleyra(eng *verify.Engine, opts ...Option) http.Handler {
	return handler(eng, opts, (*server).kaleyraRoutes)
}

// WAYSCloud returns the WAYSCloud Verify API: POST /v1/verify/send and POST
// /v1/verify/check, with the key in the X-API-Key header (WithAPIKeys) or
// the host's Authorizer.
//
// A send names a channel, not a flow: it runs through the catalog flow
// WithChannelFlows maps the channel to, else as a one-step ad-hoc flow on
// that channel (see verify.SendRequest.Flow) built from WithAdHocFlow's
// settings, with the code's lifetime 5 minutes unless those set a TTL, as
// WAYSCloud documents. Ad-hoc sends count as the flow
// verify.AdHocFlowID("wayscloud") for the per-flow rate limit, the
// Duplicates policy (a send on another channel to a recipient with an open
// session replaces it) and reports.
func WAYSCloud(eng *verify.Engine, opts ...Option) http.Handler {
	return handler(eng, opts, (*server).waysRoutes)
}

// ThunderSMS returns the ThunderSMS Verify API (v2): POST
// /api/v2/verify/send, GET /api/v2/verify/check/{id}/{token}, POST
// /api/v2/verify/check and GET /api/v2/verify/search/{id}, with the key
// as "Authorization: Bearer <key>" (WithAPIKeys) or the host's Authorizer.
// The request's channels run as an ad-hoc flow named "thundersms", whose
// other settings WithAdHocFlow sets.
//
// Each field of a send request takes effect as follows.
//
//	channels[].name          a channel registered with the engine (E808 if not)
//	channels[].recipient.to  the phone number (bare digits with the country
//	                         code, as the reference writes them, get a "+") or,
//	                         for an email channel, the address; every phone
//	                         channel must name the same number
//	channels[].order         the order channels are tried in (0 first; each its
//	                         own); without it, the order of the list
//	channels[].wait          seconds to wait, if the code is not verified, before
//	                         the next channel (0 to 86400, default 30); a failed
//	                         channel moves on at once. The last channel's wait has
//	                         nothing to wait for
//	channels[].from          the sender ID, if InlinePolicy.Senders allows it
//	                         (WithInlinePolicy); otherwise E809, since a request
//	                         must not send under any name it likes. Without it,
//	                         the channel's own sender
//	channels[].language      the language of that channel's message ("en_US" is
//	                         taken as en-US): the voice call's text-to-speech,
//	                         for one. Other channels keep the recipient's
//	                         language, guessed from the number's country code
//	channels[].flow_id       not applied: it names an IVR flow on ThunderSMS's
//	                         voice platform, which OpenVerify has no counterpart
//	                         of (its voice channels read the code out); accepted,
//	                         at most 64 characters
//	channels[].ttl           range-checked (30 to 1,209,600 seconds), not applied:
//	                         no channel here takes a per-message lifetime; those
//	                         that take one (Twilio's ValidityPeriod) get the
//	                         code's own expiry
//	payload.length           the code's length, 4 to 10 (default 6), a number or
//	                         a string
//	payload.timeout          how long the code stays valid, 1 to 86400 seconds
//	                         (default 120), counted from the last channel's turn:
//	                         the code expires timeout seconds after the last
//	                         channel is due, so that every channel's message
//	                         gives the recipient the whole timeout to type it.
//	                         With the reference's example (four channels, each
//	                         waiting 60 s, timeout 60) the channels go out at 0,
//	                         60, 120 and 180 s while the code is unverified, and
//	                         the code expires at 240 s. The answer's expire_at
//	                         says when; the waits plus timeout are at most 24 h
//	payload.token            a custom code of payload.length characters
//	payload.ip_address       the end user's IP address, for the flow's IP
//	                         allow-list and the per-IP limits; a masked address
//	                         as the reference shows it ("192.168.*.*", whole
//	                         octets from the right) is taken as its network's
//	                         first address (192.168.0.0), so the limits count the
//	                         network as one client. Without it, the connection's
//	                         address
//	foreign_id               the caller's reference, echoed as foreign_id (null
//	                         when none)
//	template                 the message text for every channel, {token} (or
//	                         {code}) standing for the code, if InlinePolicy.Text
//	                         allows it (at most InlinePolicy.MaxText characters);
//	                         otherwise E917, since the text has not been approved.
//	                         Without it, the built-in text in the message's
//	                         language
//
// The parameter table names foreign_id, template, timeout, length, token and
// ip_address without placing them; each is read from payload or from the top
// level of the request (the same field in both must agree, E809 if not).
// Fields the reference does not define are ignored. The answer is
// {"id","status":"sent","foreign_id","created_at","expire_at"} with times
// as "2006-01-02 15:04:05" in UTC; a refusal is Kaleyra's error envelope.
func ThunderSMS(eng *verify.Engine, opts ...Option) http.Handler {
	return handler(eng, opts, (*server).thunderRoutes)
}

// Admin returns the admin API under /admin/ (flows, templates,
// verifications, stats, the CSV report and the audit log) and the console, its pages for
// operators, under /admin/console/ (GET /admin/ leads there). API requests
// carry an admin key (WithAdminKeys) or pass the host's admin Authorizer
// (WithAdminAuthorizer); without either, every request is refused. A
// state-changing request a browser makes cross-site is refused first (403),
// and one with a body needs Content-Type application/json (415). The
// console signs operators in with an admin key and a session cookie
// (WithSessionLifetime), or admits whom the admin Authorizer admits; its
// forms carry CSRF tokens.
func Admin(eng *verify.Engine, opts ...Option) http.Handler {
	return handler(eng, opts, (*server).adminRoutes)
}

// Hooks returns the delivery-report webhooks configured with
// WithTwilioHook (POST /hooks/twilio, Twilio's status callbacks, checked
// against X-Twilio-Signature) and WithKaleyraHook (GET and POST
// /hooks/kaleyra, Kaleyra's delivery reports, checked against the signature
// the Kaleyra channel put in the callback URL). They answer 204, or 403
// for a report that is not signed as it should be. With neither option it
// serves nothing (404).
func Hooks(eng *verify.Engine, opts ...Option) http.Handler {
	return handler(eng, opts, (*server).hookRoutes)
}

func (s *server) kaleyraRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/{sid}/verify", s.kaleyraGenerate)
	mux.HandleFunc("POST /v1/{sid}/verify/validate", s.kaleyraValidate)
}

func (s *server) waysRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/verify/send", s.waysSend)
	mux.HandleFunc("POST /v1/verify/check", s.waysCheck)
}

func (s *server) thunderRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v2/verify/send", s.thunderSend)
	mux.HandleFunc("GET /api/v2/verify/check/{id}/{token}", s.thunderCheckPath)
	mux.HandleFunc("POST /api/v2/verify/check", s.thunderCheckBody)
	mux.HandleFunc("GET /api/v2/verify/search/{id}", s.thunderSearch)
}

func (s *server) adminRoutes(mux *http.ServeMux) {
	s.consoleRoutes(mux)
	mux.HandleFunc("GET /admin/flows", s.admin(s.listFlows))
	mux.HandleFunc("POST /admin/flows", s.admin(s.jsonBody(s.createFlow)))
	mux.HandleFunc("GET /admin/flows/{id}", s.admin(s.getFlow))
	mux.HandleFunc("PUT /admin/flows/{id}", s.admin(s.jsonBody(s.updateFlow)))
	mux.HandleFunc("DELETE /admin/flows/{id}", s.admin(s.deleteFlow))
	mux.HandleFunc("GET /admin/templates", s.admin(s.listTemplates))
	mux.HandleFunc("POST /admin/templates", s.admin(s.jsonBody(s.createTemplate)))
	mux.HandleFunc("GET /admin/templates/{id}", s.admin(s.getTemplate))
	mux.HandleFunc("POST /admin/templates/{id}/approve", s.admin(s.approveTemplate))
	mux.HandleFunc("POST /admin/templates/{id}/reject", s.admin(s.jsonBody(s.rejectTemplate)))
	mux.HandleFunc("GET /admin/verifications", s.admin(s.listVerifications))
	mux.HandleFunc("GET /admin/verifications/{id}", s.admin(s.getVerification))
	mux.HandleFunc("POST /admin/verifications/{id}/cancel", s.admin(s.cancelVerification))
	mux.HandleFunc("POST /admin/verifications/{id}/resend", s.admin(s.resendVerification))
	mux.HandleFunc("GET /admin/stats", s.admin(s.stats))
	mux.HandleFunc("GET /admin/report.csv", s.admin(s.reportCSV))
	mux.HandleFunc("GET /admin/audit", s.admin(s.listAudit))
}

func (s *server) hookRoutes(mux *http.ServeMux) {
	if s.st.twilio != nil {
		mux.HandleFunc("POST /hooks/twilio", s.twilioStatus)
	}
	if s.st.kaleyra != nil {
		// Kaleyra calls the callback with GET (fields in the query) or
		// POST (a form, or JSON from a callback profile).
		mux.HandleFunc("GET /hooks/kaleyra", s.kaleyraReport)
		mux.HandleFunc("POST /hooks/kaleyra", s.kaleyraReport)
	}
}

func (s *server) miscRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/admin/", http.StatusFound)
	})
}

// jsonMisses answers the requests mux has no route for (404) or no route
// for their method (405, with the mux's Allow header) in the JSON error
// envelope, rather than the mux's plain text, so that every answer a
// client parses has one shape.
func (s *server) jsonMisses(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		rec := &statusOnly{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.status {
		case http.StatusMethodNotAllowed:
			allow := rec.header.Get("Allow")
			w.Header().Set("Allow", allow)
			s.writeErrorStatus(w, r, http.StatusMethodNotAllowed, invalidParam("method", "method %s is not allowed here; allowed: %s", r.Method, allow))
		case http.StatusNotFound:
			s.writeErrorStatus(w, r, http.StatusNotFound, &verify.Error{Code: verify.ErrNotFound.Code,
				Type: verify.TypeState, Parameter: "path", Message: "no such endpoint: " + r.URL.Path})
		default:
			mux.ServeHTTP(w, r)
		}
	})
}

// statusOnly keeps the status and headers the mux's own 404 or 405
// handler writes, and drops its plain-text body.
type statusOnly struct {
	header http.Header
	status int
}

func (w *statusOnly) Header() http.Header         { return w.header }
func (w *statusOnly) Write(b []byte) (int, error) { return len(b), nil }
func (w *statusOnly) WriteHeader(status int)      { w.status = status }

// statusWriter remembers the status code for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// logRequests logs one line per request with the route pattern, never the
// path: a ThunderSMS-style check carries the code in its path.
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = r.Method + " (no route)"
		}
		s.st.logger.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("route", route),
			slog.Int("status", sw.status),
			slog.Int("bytes", sw.bytes),
			slog.Duration("duration", time.Since(start)),
			slog.String("ip", s.clientIP(r)))
	})
}

// clientIP is the connection's address, or with TrustProxy the last
// X-Forwarded-For entry when it is an IP address.
func (s *server) clientIP(r *http.Request) string {
	if s.st.trustProxy {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			last := xff[len(xff)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if a, err := netip.ParseAddr(strings.TrimSpace(last)); err == nil {
				return a.Unmap().String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return host
}
