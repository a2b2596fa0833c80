package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/openverify/verify"
)

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

// requireKey admits a request to a verify API (see checkKey), answering
// a refusal in Kaleyra's error envelope. It reports whether the request may
// go on.
func (s *server) requireKey(w http.ResponseWriter, r *http.Request, header string) bool {
	if ve, status := s.checkKey(w, r, header); ve != nil {
		s.writeErrorStatus(w, r, status, ve)
		return false
	}
	return true
}

// checkKey admits a request to a verify API: through the host's
// Authorizer when there is one (WithAuthorizer), else by the API key
// presented in header (for ThunderSMS, "Authorization: Bearer <key>",
// with a WWW-Authenticate challenge when refused). A refusal is returned
// with its status: 401 and E924 naming header for a missing or wrong key.
func (s *server) checkKey(w http.ResponseWriter, r *http.Request, header string) (*verify.Error, int) {
	if s.st.apiAuth != nil {
		return s.authorize(r, s.st.apiAuth)
	}
	v := strings.TrimSpace(r.Header.Get(header))
	bearer := header == "Authorization"
	if bearer {
		scheme, token, _ := strings.Cut(v, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			token = ""
		}
		v = strings.TrimSpace(token)
	}
	if v == "" {
		if bearer {
			w.Header().Set("WWW-Authenticate", `Bearer realm="openverify"`)
		}
		return authError(header, true), http.StatusUnauthorized
	}
	if !keyMatches(v, s.st.apiKeys) {
		if bearer {
			w.Header().Set("WWW-Authenticate", `Bearer realm="openverify", error="invalid_token"`)
		}
		return authError(header, false), http.StatusUnauthorized
	}
	return nil, 0
}

// authorize runs the host's Authorizer: a *verify.Error it returns is the
// refusal as it is, any other error is logged (not shown) and refused with
// 401, E924 and a generic message.
func (s *server) authorize(r *http.Request, a Authorizer) (*verify.Error, int) {
	err := a(r)
	if err == nil {
		return nil, 0
	}
	if ve, ok := verify.AsError(err); ok {
		return ve, ve.HTTPStatus()
	}
	s.st.logger.LogAttrs(r.Context(), slog.LevelInfo, "request not authorized",
		slog.String("route", r.Pattern), slog.String("error", err.Error()))
	e := *verify.ErrUnauthorized
	e.Message = "not authorized"
	return &e, http.StatusUnauthorized
}

// admin wraps an admin handler with two checks, in this order:
//
//  1. Cross-origin protection. Browsers keep sending the basic-auth
//     password once it was given, so a page on another site
//     could otherwise post to /admin with it. A state-changing request
//     (any method but GET, HEAD and OPTIONS) is refused with 403, E924
//     naming the header that gave it away, when the browser says it is
//     cross-origin: Sec-Fetch-Site other than same-origin or none, or,
//     for browsers that do not send Sec-Fetch-Site, an Origin whose
//     host[:port] is not the request's Host (http.CrossOriginProtection). Requests
//     with neither header, from curl or another server, go on. This comes
//     before the key check, so that a cross-site post never draws a
//     basic-auth prompt.
//  2. The host's admin Authorizer (WithAdminAuthorizer), or else the admin
//     key: in the X-Admin-Key header, or as the password of HTTP basic auth
//     (any user name), which is what a browser sends once asked. A
//     missing or wrong key is 401 with E924.
//
// GET routes (the lists, report.csv) pass the first check
// whatever their origin, so links to them keep working; they change
// nothing. The routes that take a JSON body add jsonBody.
func (s *server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := s.crossOrigin.Check(r); err != nil {
			s.writeErrorStatus(w, r, http.StatusForbidden, crossOriginError(r))
			return
		}
		if s.st.adminAuth != nil {
			if ve, status := s.authorize(r, s.st.adminAuth); ve != nil {
				s.writeErrorStatus(w, r, status, ve)
				return
			}
			h(w, r)
			return
		}
		key := r.Header.Get("X-Admin-Key")
		if key == "" {
			_, key, _ = r.BasicAuth()
		}
		if !keyMatches(key, s.st.adminKeys) {
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
			s.writeErrorStatus(w, r, http.StatusUnsupportedMediaType, invalidParam("Content-Type", "Content-Type must be application/json"))
			return
		}
		h(w, r)
	}
}
