package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// The WAYSCloud-style API: POST /v1/verify/send and POST /v1/verify/check,
// authenticated with the X-API-Key header. A channel maps to the one-step
// flow "channel:<name>" that SetupCatalog made for it. Every check answer
// carries a "status" string, as WAYSCloud's own client code reads it (see
// waysCheck); a refused send is Kaleyra's error envelope.

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

// waysSend sends a code. Its expires_in is the time the code has left,
// rounded up to whole seconds and never negative: 300 for a new session
// (five minutes, as WAYSCloud documents), less for an open session that the
// flow's DuplicateReuse policy answers with again (see waysExpiresIn).
func (s *server) waysSend(w http.ResponseWriter, r *http.Request) {
	if !s.requireKey(w, r, "X-API-Key") {
		return
	}
	var req waysSendRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	if req.Channel == "" {
		s.writeError(w, r, &verify.Error{Code: verify.ErrMissingField.Code, Type: verify.TypeRequest,
			Parameter: "channel", Message: "channel field is mandatory"})
		return
	}
	flowID, ok := s.cfg.ChannelFlows[req.Channel]
	if !ok {
		s.writeError(w, r, &verify.Error{Code: verify.ErrUnknownChannel.Code, Type: verify.TypeRequest,
			Parameter: "channel", Message: "channel " + strconv.Quote(req.Channel) + " is not available; use one of " + strings.Join(s.channelNames(), ", ")})
		return
	}
	to := verify.Recipient{Phone: req.To}
	if s.addressing[req.Channel] == verify.ByEmail {
		to = verify.Recipient{Email: req.To}
	}
	v, err := s.eng.Send(r.Context(), verify.SendRequest{
		FlowID: flowID, To: to, IPAddress: s.clientIP(r), IdempotencyKey: r.Header.Get("Idempotency-Key"),
	})
	if err != nil {
		s.writeError(w, r, renameParams(err, waysParams))
		return
	}
	s.writeJSON(w, r, http.StatusOK, waysSendResponse{
		SessionID: v.ID, Status: string(v.Status), Channel: req.Channel, ExpiresIn: waysExpiresIn(v, s.eng.Now()),
	})
}

// waysExpiresIn is the time v's code has left at now (the engine's
// clock), in whole seconds rounded up, never negative: for a session the
// flow's DuplicateReuse policy answers with again, less than the TTL.
func waysExpiresIn(v verify.Verification, now time.Time) int {
	left := v.ExpiresAt.Sub(now)
	if left <= 0 {
		return 0
	}
	return int((left + time.Second - 1) / time.Second)
}

// The statuses of a check answer besides WAYSCloud's own "verified" and
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
// client reads: the answer to a malformed check and to a failure of the
// server.
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
// "error", {"status","error":{...}}:
//
//	invalid_request   400   E800 no session_id, E801 no code, E803 a code that is
//	                        not alphanumeric
//	unavailable       503   E926: the store is unavailable for a moment; with
//	                        Retry-After
//	error             500   E925 or any other failure, logged with the reference
//	                        the answer carries; also an engine error this table
//	                        does not name, with its own HTTP status
//
// A missing or wrong X-API-Key (401) and a body that is not a JSON object
// (400, 413) are answered before the check, as on every endpoint, in
// Kaleyra's envelope alone.
func (s *server) waysCheck(w http.ResponseWriter, r *http.Request) {
	if !s.requireKey(w, r, "X-API-Key") {
		return
	}
	var req waysCheckRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	v, err := s.eng.Check(r.Context(), verify.CheckRequest{VerifyID: req.SessionID, Code: req.Code, IPAddress: s.clientIP(r)})
	if err == nil {
		s.writeJSON(w, r, http.StatusOK, waysVerified{SessionID: v.ID, Status: "verified", Channel: s.channelOf(v)})
		return
	}
	ve, ok := verify.AsError(err)
	if !ok || ve.Code == verify.ErrInternal.Code {
		s.waysInternalError(w, r, err)
		return
	}
	if ve.Code == verify.ErrInvalidOTP.Code {
		s.writeJSON(w, r, http.StatusOK, waysFailed{SessionID: req.SessionID, Status: "failed", AttemptsRemaining: ve.AttemptsRemaining})
		return
	}
	if status, ok := waysRefusals[ve.Code]; ok {
		setRetryAfter(w, ve.RetryAfter)
		s.writeJSON(w, r, ve.HTTPStatus(), waysRefused{SessionID: req.SessionID, Status: status})
		return
	}
	status := waysError
	switch {
	case ve.Type == verify.TypeRequest:
		status = waysInvalidRequest
	case ve.Code == verify.ErrUnavailable.Code:
		status = waysUnavailable
	}
	if c, ok := verify.AsError(renameParams(ve, waysParams)); ok {
		ve = c
	}
	setRetryAfter(w, ve.RetryAfter)
	s.writeJSON(w, r, ve.HTTPStatus(), waysErrorEnvelope{Status: status, Error: ve})
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

// setRetryAfter sets Retry-After to d rounded up to whole seconds, if d is
// positive.
func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	if d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	}
}

// waysInternalError is internalError with the status "error": err is logged
// with a reference, and the answer is 500 with E925 and that reference,
// never err's text.
func (s *server) waysInternalError(w http.ResponseWriter, r *http.Request, err error) {
	s.writeJSON(w, r, http.StatusInternalServerError, waysErrorEnvelope{Status: waysError, Error: s.logInternal(r, err)})
}

// channelOf names the channel a verification was sent on: its flow's, for
// the per-channel flows, else its first delivery's.
func (s *server) channelOf(v verify.Verification) string {
	if ch, ok := s.flowChan[v.FlowID]; ok {
		return ch
	}
	for _, d := range v.Deliveries {
		if d.Status != verify.DeliveryFailed {
			return d.Channel
		}
	}
	return ""
}

func (s *server) channelNames() []string {
	names := make([]string, 0, len(s.cfg.Channels))
	for _, c := range s.cfg.Channels {
		if _, ok := s.cfg.ChannelFlows[c.Name()]; ok {
			names = append(names, c.Name())
		}
	}
	return names
}
