package verify

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Error is the typed error every engine call returns for a request it
// refuses. Its fields marshal to the same JSON as Kaleyra's Verify API
// error object, so an HTTP handler can pass it straight to its clients:
//
//	{"code":"E912","type":"validation_error","parameter":"OTP","message":"Invalid Request/OTP","reference":""}
//
// Use errors.Is with the sentinel values below (ErrInvalidOTP, ...) to test
// for a kind of failure: two *Error values match when their codes are equal.
// Use errors.As to read AttemptsRemaining or RetryAfter.
//
// An Error never contains a one-time code.
type Error struct {
	// Code is the stable error code, for example "E912". See the table in
	// the package documentation and README.
	Code string `json:"code"`
	// Type is "VALIDATION_ERROR" for malformed requests and
	// "validation_error" for requests refused because of a verification's
	// state, as Kaleyra spells them.
	Type string `json:"type"`
	// Parameter names the request field at fault, if any.
	Parameter string `json:"parameter"`
	// Message is a human-readable description.
	Message string `json:"message"`
	// Reference is an optional reference, such as a verification ID.
	Reference string `json:"reference"`

	// AttemptsRemaining is how many wrong codes the verification still
	// accepts; set on E912.
	AttemptsRemaining int `json:"-"`
	// RetryAfter tells a rate-limited caller when to try again; zero when
	// not applicable. E926 always carries one.
	RetryAfter time.Duration `json:"-"`

	// cause is the failure behind an E925 or E926 (a store error), kept
	// for errors.Is and errors.As and for logs, never sent to clients.
	cause error
}

// Error implements the error interface. The text carries the code, the
// parameter and the message, never a one-time code.
func (e *Error) Error() string {
	s := "verify: " + e.Code + " " + e.Message
	if e.Parameter != "" {
		s += " (" + e.Parameter + ")"
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// Unwrap returns the failure behind an E925 or E926: the store's or the
// driver's error, or context.DeadlineExceeded for a store's own timeout. It
// is nil for refusals.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is an *Error with the same Code, so that
// errors.Is(err, verify.ErrInvalidOTP) holds for every E912 whatever its
// parameter or remaining attempts.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && e != nil && t.Code == e.Code
}

// HTTPStatus suggests the HTTP status code a handler should answer with:
// 400 for malformed requests, 404 for unknown records, 409 for a code already
// verified, 410 for ended verifications, 429 for exhausted attempts and rate
// limits, 502 when no channel could deliver, 500 for an internal failure
// (E925) and 503 for a failure a retry can fix (E926).
func (e *Error) HTTPStatus() int {
	if s, ok := httpStatus[e.Code]; ok {
		return s
	}
	return http.StatusBadRequest
}

// with returns a copy of e with another parameter and message detail.
func (e *Error) with(parameter, message string) *Error {
	c := *e
	c.Parameter = parameter
	if message != "" {
		c.Message = message
	}
	return &c
}

// Error types, spelled as Kaleyra spells them.
const (
	// TypeRequest marks a malformed request ("VALIDATION_ERROR").
	TypeRequest = "VALIDATION_ERROR"
	// TypeState marks a request refused because of a record's state
	// ("validation_error").
	TypeState = "validation_error"
)

func newErr(code, typ, parameter, message string) *Error {
	return &Error{Code: code, Type: typ, Parameter: parameter, Message: message}
}

// The error codes. E800–E913 are Kaleyra's and keep Kaleyra's meaning;
// E802 and E804–E809, E914 and above are OpenVerify's own.
//
//	code  HTTP type              parameter          when
//	E800  400  VALIDATION_ERROR  verify_id          Check with an empty VerifyID
//	E801  400  VALIDATION_ERROR  otp                Check with an empty Code
//	E802  400  VALIDATION_ERROR  (the field)        another mandatory field is empty
//	E803  400  VALIDATION_ERROR  OTP                Check with a code that is not [0-9A-Za-z]
//	E804  400  VALIDATION_ERROR  to.phone/to.email  a recipient is missing or malformed for a step's channel
//	E805  400  VALIDATION_ERROR  otp                a custom code does not fit the flow's length or charset
//	E806  400  VALIDATION_ERROR  (the field)        a flow is invalid (no steps, length out of range, ...)
//	E807  400  VALIDATION_ERROR  (the field)        a template is invalid (no code placeholder, ...)
//	E808  400  VALIDATION_ERROR  channel            a step names a channel that is not registered
//	E809  400  VALIDATION_ERROR  (the field)        another field is malformed (a language tag, a status, ...)
//	E909  404  validation_error  flow_id/verify_id  unknown flow, template or verification
//	E910  409  validation_error                     Check or Resend after success
//	E911  429  validation_error  OTP                Check once the attempts are used up
//	E912  400  validation_error  OTP                wrong code; AttemptsRemaining says how many are left
//	E913  410  validation_error                     Check or Resend after ExpiresAt
//	E914  410  validation_error                     Check or Resend after Cancel
//	E915  502  validation_error  channel            no step could deliver the code
//	E916  429  validation_error                     Resend beyond the flow's maximum number of sends
//	E917  400  validation_error  template           a step's template is not approved
//	E918  429  validation_error                     a rate limit was hit; RetryAfter says when to retry
//	E919  429  validation_error                     the recipient is locked out after too many wrong codes; RetryAfter says until when
//	E920  403  validation_error  ip_address         the client IP is not on the flow's allow-list
//	E921  403  validation_error  to.mobile          the number's country or type is not allowed by the flow
//	E922  403  validation_error  to                 the send was blocked (SMS-pumping guard: RetryAfter to the block's end; or SendHook)
//	E923  409  validation_error  idempotency_key    an idempotency key was reused with another request
//	E924  401  authentication_error (the header)    an HTTP API key is missing or wrong (for servers built on the engine)
//	E925  500  server_error                         an internal failure a retry cannot fix (a store error such as a missing
//	                                                table or permission, a bug); Unwrap gives the cause
//	E926  503  server_error                         unavailable for a moment (the database is restarting, unreachable, read-only
//	                                                during a failover or out of space; the store's own timeout); RetryAfter says
//	                                                when to retry and Unwrap gives the cause (see Transient)
var (
	ErrMissingVerifyID     = newErr("E800", TypeRequest, "verify_id", "verify_id field is mandatory")
	ErrMissingOTP          = newErr("E801", TypeRequest, "otp", "otp field is mandatory")
	ErrMissingField        = newErr("E802", TypeRequest, "", "field is mandatory")
	ErrOTPNotAlphanumeric  = newErr("E803", TypeRequest, "OTP", "OTP can contain only alphanumeric values.")
	ErrInvalidRecipient    = newErr("E804", TypeRequest, "to", "recipient is invalid")
	ErrInvalidCode         = newErr("E805", TypeRequest, "otp", "OTP does not fit the flow's code length and charset")
	ErrInvalidFlow         = newErr("E806", TypeRequest, "", "flow is invalid")
	ErrInvalidTemplate     = newErr("E807", TypeRequest, "", "template is invalid")
	ErrUnknownChannel      = newErr("E808", TypeRequest, "channel", "channel is not registered")
	ErrInvalidParameter    = newErr("E809", TypeRequest, "", "parameter is invalid")
	ErrNotFound            = newErr("E909", TypeState, "", "Record not found")
	ErrAlreadyVerified     = newErr("E910", TypeState, "", "OTP already verified")
	ErrMaxAttempts         = newErr("E911", TypeState, "OTP", "Exceeded max number of attempts")
	ErrInvalidOTP          = newErr("E912", TypeState, "OTP", "Invalid Request/OTP")
	ErrExpired             = newErr("E913", TypeState, "", "The OTP has already expired")
	ErrCanceled            = newErr("E914", TypeState, "", "The verification was canceled")
	ErrDeliveryFailed      = newErr("E915", TypeState, "channel", "The OTP could not be delivered on any channel")
	ErrMaxSends            = newErr("E916", TypeState, "", "Exceeded max number of sends")
	ErrTemplateNotApproved = newErr("E917", TypeState, "template", "Template is not approved")
	ErrRateLimited         = newErr("E918", TypeState, "", "Too many requests")
	ErrLocked              = newErr("E919", TypeState, "", "Too many wrong codes; recipient locked")
	ErrIPNotAllowed        = newErr("E920", TypeState, "ip_address", "IP address not allowed")
	ErrGeoNotAllowed       = newErr("E921", TypeState, "to.mobile", "Destination not allowed")
	ErrBlocked             = newErr("E922", TypeState, "to", "Send blocked")
	ErrIdempotencyMismatch = newErr("E923", TypeState, "idempotency_key", "Idempotency key reused with a different request")
	ErrUnauthorized        = newErr("E924", "authentication_error", "", "Invalid or missing API key")
	ErrInternal            = newErr("E925", "server_error", "", "Internal error")
	ErrUnavailable         = newErr("E926", "server_error", "", "Temporarily unavailable; retry later")
)

var httpStatus = map[string]int{
	"E909": http.StatusNotFound,
	"E910": http.StatusConflict,
	"E911": http.StatusTooManyRequests,
	"E913": http.StatusGone,
	"E914": http.StatusGone,
	"E915": http.StatusBadGateway,
	"E916": http.StatusTooManyRequests,
	"E918": http.StatusTooManyRequests,
	"E919": http.StatusTooManyRequests,
	"E920": http.StatusForbidden,
	"E921": http.StatusForbidden,
	"E922": http.StatusForbidden,
	"E923": http.StatusConflict,
	"E924": http.StatusUnauthorized,
	"E925": http.StatusInternalServerError,
	"E926": http.StatusServiceUnavailable,
}

// invalid returns a request error of the given kind naming a parameter and
// explaining what is wrong.
func invalid(kind *Error, parameter, format string, args ...any) *Error {
	return kind.with(parameter, fmt.Sprintf(format, args...))
}

// ErrDuplicate is what a Store returns from CreateVerification when the
// idempotency key is taken. It is a system-level sentinel, not an *Error:
// the engine answers the caller with the existing verification or E923.
var ErrDuplicate = errors.New("verify: idempotency key already used")

// ErrOpenExists is what a Store returns from CreateVerification when the
// new verification is Exclusive and an exclusive verification of the same
// flow and recipient is still open. Like ErrDuplicate it is a system-level
// sentinel: the engine resolves it by the flow's Duplicates policy.
var ErrOpenExists = errors.New("verify: an exclusive verification of this flow and recipient is open")

// codeOf returns err's E-code, or "" for other errors.
func codeOf(err error) string {
	if e, ok := AsError(err); ok {
		return e.Code
	}
	return ""
}

// AsError returns the *Error in err's chain, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}
