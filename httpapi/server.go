package httpapi

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// Config is what the HTTP layer needs besides the engine.
type Config struct {
	// SID is the account SID in the Kaleyra-style paths /v1/{sid}/....
	SID string
	// APIKeys are accepted by the three verify APIs; AdminKeys by /admin.
	APIKeys   []string
	AdminKeys []string
	// TrustProxy takes the client IP from the last X-Forwarded-For entry
	// (the one a reverse proxy in front appended) instead of the
	// connection's address.
	TrustProxy bool
	// MaxBody limits request bodies. Defaults to 16 KiB.
	MaxBody int64
	// Channels are the channels registered with the engine.
	Channels []verify.Channel
	// ChannelFlows maps a channel name to the one-step flow the
	// WAYSCloud-style API uses for it (see SetupCatalog).
	ChannelFlows map[string]string
	// Twilio, if not nil, enables POST /hooks/twilio.
	Twilio *TwilioHook
	// Kaleyra, if not nil, enables GET and POST /hooks/kaleyra, Kaleyra's
	// delivery reports.
	Kaleyra *KaleyraHook
	// Logger logs one line per request. Defaults to slog.Default().
	Logger *slog.Logger
}

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

// server holds the handlers' shared state.
type server struct {
	eng        *verify.Engine
	cfg        Config
	log        *slog.Logger
	apiKeys    [][sha256.Size]byte
	adminKeys  [][sha256.Size]byte
	addressing map[string]verify.Addressing
	flowChan   map[string]string // flow ID → channel, the reverse of cfg.ChannelFlows
	inline     inlineFlows
	dashboard  *template.Template
	// crossOrigin refuses the admin routes' state-changing requests made
	// cross-site by a browser (see admin).
	crossOrigin *http.CrossOriginProtection
}

// New returns the HTTP handler for every endpoint: the Kaleyra-,
// WAYSCloud- and ThunderSMS-style verify APIs, the admin API and
// dashboard, and the delivery-report webhooks.
func New(eng *verify.Engine, cfg Config) http.Handler {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = defaultMaxBody
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &server{
		eng:        eng,
		cfg:        cfg,
		log:        cfg.Logger,
		apiKeys:    hashKeys(cfg.APIKeys),
		adminKeys:  hashKeys(cfg.AdminKeys),
		addressing: map[string]verify.Addressing{},
		flowChan:   map[string]string{},
		inline:     inlineFlows{ids: map[string]string{}},
		dashboard:  dashboardTemplate,
		// No trusted origins: the dashboard, the only page the server
		// serves, posts nothing, so only the server's own origin and
		// non-browser clients may change state.
		crossOrigin: http.NewCrossOriginProtection(),
	}
	for _, c := range cfg.Channels {
		a := verify.ByPhone
		if ad, ok := c.(verify.Addresser); ok {
			a = ad.Addressing()
		}
		s.addressing[c.Name()] = a
	}
	for ch, id := range cfg.ChannelFlows {
		s.flowChan[id] = ch
	}

	mux := http.NewServeMux()
	// Kaleyra Verify.
	mux.HandleFunc("POST /v1/{sid}/verify", s.kaleyraGenerate)
	mux.HandleFunc("POST /v1/{sid}/verify/validate", s.kaleyraValidate)
	// WAYSCloud Verify.
	mux.HandleFunc("POST /v1/verify/send", s.waysSend)
	mux.HandleFunc("POST /v1/verify/check", s.waysCheck)
	// ThunderSMS Verify (API v2).
	mux.HandleFunc("POST /api/v2/verify/send", s.thunderSend)
	mux.HandleFunc("GET /api/v2/verify/check/{id}/{token}", s.thunderCheckPath)
	mux.HandleFunc("POST /api/v2/verify/check", s.thunderCheckBody)
	mux.HandleFunc("GET /api/v2/verify/search/{id}", s.thunderSearch)
	// Admin.
	mux.HandleFunc("GET /admin/{$}", s.admin(s.dashboardPage))
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
	// Webhooks and the rest.
	if cfg.Twilio != nil {
		mux.HandleFunc("POST /hooks/twilio", s.twilioStatus)
	}
	if cfg.Kaleyra != nil {
		// Kaleyra calls the callback with GET (fields in the query) or
		// POST (a form, or JSON from a callback profile).
		mux.HandleFunc("GET /hooks/kaleyra", s.kaleyraReport)
		mux.HandleFunc("POST /hooks/kaleyra", s.kaleyraReport)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/admin/", http.StatusFound)
	})
	return s.logRequests(s.jsonMisses(mux))
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
			s.writeErrorStatus(w, r, http.StatusMethodNotAllowed, &verify.Error{Code: verify.ErrInvalidParameter.Code,
				Type: verify.TypeRequest, Parameter: "method",
				Message: fmt.Sprintf("method %s is not allowed here; allowed: %s", r.Method, allow)})
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
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
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
	if s.cfg.TrustProxy {
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

func hashKeys(keys []string) [][sha256.Size]byte {
	out := make([][sha256.Size]byte, 0, len(keys))
	for _, k := range keys {
		if k != "" {
			out = append(out, sha256.Sum256([]byte(k)))
		}
	}
	return out
}

// keyMatches compares a presented key with every accepted key in constant
// time (over their SHA-256 digests, so lengths do not leak either), without
// stopping at the first match.
func keyMatches(presented string, keys [][sha256.Size]byte) bool {
	p := sha256.Sum256([]byte(presented))
	ok := 0
	for i := range keys {
		ok |= subtle.ConstantTimeCompare(p[:], keys[i][:])
	}
	return ok == 1 && presented != ""
}

// authError is the answer to a request without a valid key: E924 with
// status 401, the header at fault as the parameter, and a message saying
// whether the key was missing or wrong.
func authError(parameter string, missing bool) *verify.Error {
	e := *verify.ErrUnauthorized
	e.Parameter = parameter
	if missing {
		e.Message = parameter + " is missing"
	} else {
		e.Message = parameter + " is not a valid key"
	}
	return &e
}

// requireKey checks an API key presented in header (or, for ThunderSMS,
// as "Authorization: Bearer <key>") and answers 401 if it is missing or
// wrong. It reports whether the request may go on.
func (s *server) requireKey(w http.ResponseWriter, r *http.Request, header string) bool {
	v := strings.TrimSpace(r.Header.Get(header))
	if header == "Authorization" {
		scheme, token, _ := strings.Cut(v, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			token = ""
		}
		v = strings.TrimSpace(token)
	}
	if v == "" {
		if header == "Authorization" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="openverify"`)
		}
		s.writeErrorStatus(w, r, http.StatusUnauthorized, authError(header, true))
		return false
	}
	if !keyMatches(v, s.apiKeys) {
		if header == "Authorization" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="openverify", error="invalid_token"`)
		}
		s.writeErrorStatus(w, r, http.StatusUnauthorized, authError(header, false))
		return false
	}
	return true
}

// admin wraps an admin handler with two checks, in this order:
//
//  1. Cross-origin protection. Browsers keep sending the basic-auth
//     password once the dashboard was opened, so a page on another site
//     could otherwise post to /admin with it. A state-changing request
//     (any method but GET, HEAD and OPTIONS) is refused with 403, E924
//     naming the header that gave it away, when the browser says it is
//     cross-origin: Sec-Fetch-Site other than same-origin or none, or,
//     for browsers that do not send Sec-Fetch-Site, an Origin whose
//     host[:port] is not the request's Host (http.CrossOriginProtection). Requests
//     with neither header, from curl or another server, go on. This comes
//     before the key check, so that a cross-site post never draws a
//     basic-auth prompt.
//  2. The admin key: in the X-Admin-Key header, or as the password of HTTP
//     basic auth (any user name), which is what a browser sends for the
//     dashboard. A missing or wrong key is 401 with E924.
//
// GET routes (the dashboard, the lists, report.csv) pass the first check
// whatever their origin, so links to them keep working; they change
// nothing. The routes that take a JSON body add jsonBody.
func (s *server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.crossOrigin.Check(r); err != nil {
			s.writeErrorStatus(w, r, http.StatusForbidden, crossOriginError(r))
			return
		}
		key := r.Header.Get("X-Admin-Key")
		if key == "" {
			_, key, _ = r.BasicAuth()
		}
		if !keyMatches(key, s.adminKeys) {
			w.Header().Set("WWW-Authenticate", `Basic realm="OpenVerify admin", charset="UTF-8"`)
			s.writeErrorStatus(w, r, http.StatusUnauthorized, authError("X-Admin-Key", key == ""))
			return
		}
		h(w, r)
	}
}

// crossOriginError is the answer to a state-changing admin request a
// browser made from another origin: E924 (authentication_error) with
// status 403, the header that showed it, Sec-Fetch-Site or Origin, as the
// parameter.
func crossOriginError(r *http.Request) *verify.Error {
	e := *verify.ErrUnauthorized
	e.Parameter = "Origin"
	if r.Header.Get("Sec-Fetch-Site") != "" {
		e.Parameter = "Sec-Fetch-Site"
	}
	e.Message = "cross-origin request refused: the admin API changes state only for requests from its own origin or from non-browser clients"
	return &e
}

// jsonBody wraps a handler that reads a JSON body and refuses, with 415
// and E809 naming Content-Type, a request whose Content-Type is not
// application/json (parameters such as charset allowed). Browsers send
// cross-site forms as text/plain, multipart/form-data or
// application/x-www-form-urlencoded without asking the server first, but
// not application/json.
func (s *server) jsonBody(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			s.writeErrorStatus(w, r, http.StatusUnsupportedMediaType, &verify.Error{Code: verify.ErrInvalidParameter.Code,
				Type: verify.TypeRequest, Parameter: "Content-Type", Message: "Content-Type must be application/json"})
			return
		}
		h(w, r)
	}
}

// writeJSON writes v as compact JSON with the status.
func (s *server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.internalError(w, r, fmt.Errorf("encoding the response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// errorEnvelope is Kaleyra's error response.
type errorEnvelope struct {
	Error *verify.Error `json:"error"`
}

// writeError answers an engine error: an *verify.Error in Kaleyra's
// envelope with the status its HTTPStatus suggests (and Retry-After when
// it has one: E926, a store that is unavailable for a moment, is 503 with
// Retry-After), anything else, E925 included, as an internal error that is
// logged with a reference.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ve *verify.Error
	if errors.As(err, &ve) && ve.Code != verify.ErrInternal.Code {
		s.writeErrorStatus(w, r, ve.HTTPStatus(), ve)
		return
	}
	if errors.Is(err, verify.ErrReportsUnsupported) {
		s.writeErrorStatus(w, r, http.StatusNotImplemented, &verify.Error{Code: verify.ErrInternal.Code,
			Type: verify.ErrInternal.Type, Message: "the store does not support reports (verify.ReportStore)"})
		return
	}
	s.internalError(w, r, err)
}

func (s *server) writeErrorStatus(w http.ResponseWriter, r *http.Request, status int, ve *verify.Error) {
	if ve.RetryAfter > 0 {
		secs := int((ve.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	s.writeJSON(w, r, status, errorEnvelope{Error: ve})
}

// internalError logs err with a reference and answers 500 with that
// reference, so that the log line can be found.
func (s *server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	// Not through writeJSON, which answers its own failures here.
	b, _ := json.Marshal(errorEnvelope{Error: s.logInternal(r, err)})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusInternalServerError)
	w.Write(b)
}

// logInternal logs err with a new reference and returns the E925 that
// answers it: a generic message and that reference, never err's text.
func (s *server) logInternal(r *http.Request, err error) *verify.Error {
	ref := make([]byte, 8)
	rand.Read(ref)
	reference := hex.EncodeToString(ref)
	s.log.LogAttrs(r.Context(), slog.LevelError, "internal error",
		slog.String("route", r.Pattern), slog.String("reference", reference), slog.String("error", err.Error()))
	return &verify.Error{Code: verify.ErrInternal.Code, Type: verify.ErrInternal.Type,
		Message: "internal error; the server log has the details under this reference", Reference: reference}
}

// decodeJSON reads a JSON object into dst: the body must be at most
// MaxBody bytes, one JSON value with no trailing data, with every field of
// the right type; fields dst does not have are ignored (decodeAdminJSON
// refuses them). A refusal is
// written as E802 (empty body) or E809 naming the field at fault, with
// status 400 (413 for a body too large), and decodeJSON returns false.
func (s *server) decodeJSON(w http.ResponseWriter, r *http.Request, dst any) bool {
	return s.decode(w, r, dst, false)
}

// decodeAdminJSON is decodeJSON for the admin API, which is OpenVerify's
// own: there a field dst does not have is a mistake (a misspelt "after"
// would silently send a step at once), refused with E809 naming it. The
// vendors' wire formats ignore fields they do not define, as the vendors'
// APIs do, since their clients send some (Kaleyra's "data", for one).
func (s *server) decodeAdminJSON(w http.ResponseWriter, r *http.Request, dst any) bool {
	return s.decode(w, r, dst, true)
}

func (s *server) decode(w http.ResponseWriter, r *http.Request, dst any, strict bool) bool {
	if ve, status := readJSON(w, r, s.cfg.MaxBody, dst, strict); ve != nil {
		s.writeErrorStatus(w, r, status, ve)
		return false
	}
	return true
}

func readJSON(w http.ResponseWriter, r *http.Request, limit int64, dst any, strict bool) (*verify.Error, int) {
	bad := func(parameter, format string, args ...any) (*verify.Error, int) {
		return &verify.Error{Code: verify.ErrInvalidParameter.Code, Type: verify.TypeRequest,
			Parameter: parameter, Message: fmt.Sprintf(format, args...)}, http.StatusBadRequest
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			ve, _ := bad("body", "request body must be at most %d bytes", limit)
			return ve, http.StatusRequestEntityTooLarge
		}
		return bad("body", "reading the request body failed")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return &verify.Error{Code: verify.ErrMissingField.Code, Type: verify.TypeRequest, Parameter: "body",
			Message: "a JSON request body is mandatory"}, http.StatusBadRequest
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(dst); err != nil {
		var (
			syntax *json.SyntaxError
			typ    *json.UnmarshalTypeError
		)
		switch {
		case errors.As(err, &syntax):
			return bad("body", "request body is not valid JSON (at byte %d)", syntax.Offset)
		case errors.As(err, &typ):
			if typ.Field == "" {
				return bad("body", "request body must be a JSON object")
			}
			return bad(typ.Field, "%s must be %s", typ.Field, jsonKind(typ.Type))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return bad("body", "request body is truncated JSON")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
			return bad(name, "unknown field %q", name)
		}
		return bad("body", "request body is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return bad("body", "request body has data after the JSON object")
	}
	return nil, 0
}

// jsonKind names the JSON type a Go type decodes from.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "another type"
}

// renameParams returns err with the engine's parameter names replaced by
// an API's own (for example verify_id → session_id), and err unchanged when
// no name applies.
func renameParams(err error, names map[string]string) error {
	var ve *verify.Error
	if !errors.As(err, &ve) {
		return err
	}
	n, ok := names[ve.Parameter]
	if !ok {
		return err
	}
	c := *ve
	c.Parameter = n
	if c.Code == verify.ErrMissingVerifyID.Code || c.Code == verify.ErrMissingOTP.Code {
		c.Message = n + " field is mandatory"
	}
	return &c
}
