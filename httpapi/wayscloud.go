package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// The WAYSCloud-style API: POST /v1/verify/send and POST /v1/verify/check,
// authenticated with the X-API-Key header (see WAYSCloud for how a channel
// becomes a flow). Every answer is a JSON object with a "status" string,
// the errors too, as WAYSCloud's own client code reads it (see waysCheck
// and waysSend).

type waysSendRequest struct {
	To      string `json:"to"`
	Channel string `json:"channel"`
}

type waysSendResponse struct {
	SessionID string `json:"session_id"`
	Status    string `json:"status"`
	Channel   string `json:"channel"`
	ExpiresIn int    `json:"expires_in"`
}

type waysCheckRequest struct {
	SessionID string `json:"session_id"`
	Code      string `json:"code"`
}

type waysVerified struct {
	SessionID string `json:"session_id"`
	Status    string `json:"status"`
	Channel   string `json:"channel"`
}

type waysFailed struct {
	SessionID         string `json:"session_id"`
	Status            string `json:"status"`
	AttemptsRemaining int    `json:"attempts_remaining"`
}

// waysParams are WAYSCloud's names for the engine's parameters.
var waysParams = map[string]string{"verify_id": "session_id", "otp": "code", "OTP": "code", "to.mobile": "to", "to.email": "to"}

// waysAdHocName is the name, and so the identity, of the ad-hoc flows the
// WAYSCloud API runs (verify.AdHocFlowID(waysAdHocName)).
const waysAdHocName = "wayscloud"

// waysSend sends a code on the channel the request names. Its answer is
// WAYSCloud's: {"session_id","status":"sent","channel","expires_in"}, where
// expires_in is the time the code has left, rounded up to whole seconds and
// never negative: 300 for a new session (five minutes, as WAYSCloud
// documents), less for an open session that the flow's DuplicateReuse
// policy answers with again (see waysExpiresIn).
//
// A refusal is {"status","error":{...}}: Kaleyra's error object, with
// WAYSCloud's parameter names (to, channel), beside a status from
// waysStatus: invalid_request (400: no channel, E808 an unknown channel,
// E804 a bad recipient, ...), unauthorized (401), rate_limited (429, with
// Retry-After), forbidden (403, E920 and E921), blocked (E922),
// delivery_failed (502, E915: every channel failed), unavailable (503),
// error (500, logged with the reference the answer carries).
func (s *server) waysSend(w http.ResponseWriter, r *http.Request) {
	var req waysSendRequest
	if !s.waysAdmit(w, r, &req) {
		return
	}
	sr, ve := s.waysRequest(req)
	if ve != nil {
		s.waysError(w, r, ve)
		return
	}
	sr.IPAddress, sr.IdempotencyKey = s.clientIP(r), r.Header.Get("Idempotency-Key")
	v, err := s.eng.Send(r.Context(), sr)
	if err != nil {
		s.waysError(w, r, renameParams(err, waysParams))
		return
	}
	s.writeJSON(w, r, http.StatusOK, waysSendResponse{
		SessionID: v.ID, Status: string(v.Status), Channel: req.Channel, ExpiresIn: waysExpiresIn(v, s.eng.Now()),
	})
}

// waysRequest turns a send into the engine's request: the recipient, as
// the channel addresses it, and the channel's catalog flow
// (WithChannelFlows) or a one-step ad-hoc flow on it.
func (s *server) waysRequest(req waysSendRequest) (verify.SendRequest, *verify.Error) {
	if req.Channel == "" {
		return verify.SendRequest{}, missingField("channel")
	}
	addressing, ok := s.eng.Addressing(req.Channel)
	if !ok {
		return verify.SendRequest{}, &verify.Error{Code: verify.ErrUnknownChannel.Code, Type: verify.TypeRequest,
			Parameter: "channel", Message: "channel " + strconv.Quote(req.Channel) + " is not available; use one of " + strings.Join(s.eng.Channels(), ", ")}
	}
	sr := verify.SendRequest{To: verify.Recipient{Phone: req.To}}
	if addressing == verify.ByEmail {
		sr.To = verify.Recipient{Email: req.To}
	}
	if id, ok := s.st.channelFlows[req.Channel]; ok {
		sr.FlowID = id
		return sr, nil
	}
	f := s.st.adHoc
	f.Name = waysAdHocName
	f.Steps = []verify.Step{{Channel: req.Channel}}
	sr.Flow = &f
	return sr, nil
}

// waysExpiresIn is the time v's code has left at now (the engine's
// clock), in whole seconds rounded up, never negative: for a session the
// flow's DuplicateReuse policy answers with again, less than the TTL.
func waysExpiresIn(v verify.Verification, now time.Time) int {
	left := v.ExpiresAt.Sub(now)
	if left <= 0 {
		return 0
	}
	return ceilSeconds(left)
}

// The statuses of an answer besides WAYSCloud's own "sent", "verified" and
// "failed".
const (
	waysAlreadyVerified = "already_verified"
	waysExpired         = "expired"
	waysMaxAttempts     = "max_attempts"
	waysCanceled        = "canceled"
	waysDeliveryFailed  = "delivery_failed"
	waysNotFound        = "not_found"
	waysRateLimited     = "rate_limited"
	waysForbidden       = "forbidden"
	waysBlocked         = "blocked"
	waysConflict        = "conflict"
	waysUnauthorized    = "unauthorized"
	waysInvalidRequest  = "invalid_request"
	waysUnavailable     = "unavailable"
	waysError           = "error"
)

// waysRefused is a check refused because of the session's state: WAYSCloud's
// failure answer without attempts_remaining.
type waysRefused struct {
	SessionID string `json:"session_id"`
	Status    string `json:"status"`
}

// waysErrorEnvelope is Kaleyra's error envelope with the status a WAYSCloud
// client reads: the answer to a refused send, a malformed request and a
// failure of the server.
type waysErrorEnvelope struct {
	Status string        `json:"status"`
	Error  *verify.Error `json:"error"`
}

// waysCheck checks a code. Every answer is a JSON object with a "status"
// string, so that WAYSCloud's client code (check.json()["status"]) can
// branch on it; only "verified" means the code was right, this once.
//
// The code was judged, as WAYSCloud documents, 200:
//
//	status            HTTP  body
//	verified          200   {"session_id","status","channel"}
//	failed            200   {"session_id","status","attempts_remaining"}: a
//	                        wrong code (E912); 0 remaining when it used the last
//	                        attempt, after which the session answers max_attempts
//
// The session cannot take a code (WAYSCloud documents none of these): the
// failure answer's {"session_id","status"} without attempts_remaining, with
// the HTTP status the engine suggests ((*verify.Error).HTTPStatus), the same
// the Kaleyra-style API answers:
//
//	already_verified  409   E910: verified before; a right code checked again is
//	                        not a second success, so never "verified"
//	expired           410   E913
//	max_attempts      429   E911: the attempts are used up
//	canceled          410   E914
//	delivery_failed   502   E915: the session ended with no channel delivering
//	not_found         404   E909: unknown (or purged) session_id
//	rate_limited      429   E918 too many checks, or E919 the recipient locked
//	                        out after too many wrong codes; with Retry-After
//	forbidden         403   E920: the client IP is not on the flow's allow-list
//
// The request or the server failed: Kaleyra's error envelope (code,
// parameter with WAYSCloud's names, message, reference) with "status" beside
// "error", {"status","error":{...}}, as for a refused send (see
// waysStatus):
//
//	unauthorized      401   E924: X-API-Key missing or wrong
//	invalid_request   400   E800 no session_id, E801 no code, E803 a code that is
//	                        not alphanumeric; a body that is not a JSON object
//	                        (413 when too large)
//	unavailable       503   E926: the store is unavailable for a moment; with
//	                        Retry-After
//	error             500   E925 or any other failure, logged with the reference
//	                        the answer carries; also an engine error this table
//	                        does not name, with its own HTTP status
func (s *server) waysCheck(w http.ResponseWriter, r *http.Request) {
	var req waysCheckRequest
	if !s.waysAdmit(w, r, &req) {
		return
	}
	v, err := s.eng.Check(r.Context(), verify.CheckRequest{VerifyID: req.SessionID, Code: req.Code, IPAddress: s.clientIP(r)})
	if err == nil {
		s.writeJSON(w, r, http.StatusOK, waysVerified{SessionID: v.ID, Status: "verified", Channel: s.channelOf(v)})
		return
	}
	ve, ok := verify.AsError(err)
	switch {
	case ok && ve.Code == verify.ErrInvalidOTP.Code:
		s.writeJSON(w, r, http.StatusOK, waysFailed{SessionID: req.SessionID, Status: "failed", AttemptsRemaining: ve.AttemptsRemaining})
	case ok && waysRefusals[ve.Code] != "":
		setRetryAfter(w, ve.RetryAfter)
		s.writeJSON(w, r, ve.HTTPStatus(), waysRefused{SessionID: req.SessionID, Status: waysRefusals[ve.Code]})
	default:
		s.waysError(w, r, renameParams(err, waysParams))
	}
}

// waysRefusals are the check statuses of a session that cannot take a code,
// by error code.
var waysRefusals = map[string]string{
	verify.ErrAlreadyVerified.Code: waysAlreadyVerified,
	verify.ErrExpired.Code:         waysExpired,
	verify.ErrMaxAttempts.Code:     waysMaxAttempts,
	verify.ErrCanceled.Code:        waysCanceled,
	verify.ErrDeliveryFailed.Code:  waysDeliveryFailed,
	verify.ErrNotFound.Code:        waysNotFound,
	verify.ErrRateLimited.Code:     waysRateLimited,
	verify.ErrLocked.Code:          waysRateLimited,
	verify.ErrIPNotAllowed.Code:    waysForbidden,
}

// waysStatus is the status of an error answer: the check refusals' for
// their codes, and for the rest unauthorized (E924), forbidden (E921),
// blocked (E922), conflict (E923), unavailable (E926), invalid_request
// (any other request error), error (the rest, E925 included).
func waysStatus(ve *verify.Error) string {
	if st, ok := waysRefusals[ve.Code]; ok {
		return st
	}
	switch ve.Code {
	case verify.ErrUnauthorized.Code:
		return waysUnauthorized
	case verify.ErrGeoNotAllowed.Code:
		return waysForbidden
	case verify.ErrBlocked.Code:
		return waysBlocked
	case verify.ErrIdempotencyMismatch.Code:
		return waysConflict
	case verify.ErrUnavailable.Code:
		return waysUnavailable
	}
	if ve.Type == verify.TypeRequest {
		return waysInvalidRequest
	}
	return waysError
}

// waysError answers err as {"status","error":{...}} with the status its
// HTTPStatus suggests (and Retry-After when it has one). Anything but an
// *verify.Error, and E925, is logged with a reference and answered 500
// with that reference, never err's text.
func (s *server) waysError(w http.ResponseWriter, r *http.Request, err error) {
	ve, ok := verify.AsError(err)
	if !ok || ve.Code == verify.ErrInternal.Code {
		s.writeJSON(w, r, http.StatusInternalServerError, waysErrorEnvelope{Status: waysError, Error: s.logInternal(r, err)})
		return
	}
	s.waysErrorStatus(w, r, ve.HTTPStatus(), ve)
}

func (s *server) waysErrorStatus(w http.ResponseWriter, r *http.Request, status int, ve *verify.Error) {
	setRetryAfter(w, ve.RetryAfter)
	s.writeJSON(w, r, status, waysErrorEnvelope{Status: waysStatus(ve), Error: ve})
}

// waysAdmit checks the X-API-Key (or the host's Authorizer) and reads the
// JSON body into dst, answering a refusal in the WAYSCloud error shape. It
// reports whether the request may go on.
func (s *server) waysAdmit(w http.ResponseWriter, r *http.Request, dst any) bool {
	if ve, status := s.checkKey(w, r, "X-API-Key"); ve != nil {
		s.waysErrorStatus(w, r, status, ve)
		return false
	}
	if ve, status := readJSON(w, r, s.st.maxBody, dst, false); ve != nil {
		s.waysErrorStatus(w, r, status, ve)
		return false
	}
	return true
}

// channelOf names the channel a verification was sent on: the one step's
// of a WAYSCloud send (a catalog flow WithChannelFlows names, or its
// ad-hoc flow), else its first delivery that did not fail.
func (s *server) channelOf(v verify.Verification) string {
	if ch, ok := s.st.flowChannels[v.FlowID]; ok {
		return ch
	}
	for _, d := range v.Deliveries {
		if d.Status != verify.DeliveryFailed {
			return d.Channel
		}
	}
	if len(v.Deliveries) > 0 {
		return v.Deliveries[0].Channel
	}
	return ""
}
