package httpapi

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

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
	if errors.Is(err, verify.ErrAuditUnsupported) {
		s.writeErrorStatus(w, r, http.StatusNotImplemented, &verify.Error{Code: verify.ErrInternal.Code,
			Type: verify.ErrInternal.Type, Message: "the store keeps no audit log (verify.AuditStore)"})
		return
	}
	s.internalError(w, r, err)
}

func (s *server) writeErrorStatus(w http.ResponseWriter, r *http.Request, status int, ve *verify.Error) {
	setRetryAfter(w, ve.RetryAfter)
	s.writeJSON(w, r, status, errorEnvelope{Error: ve})
}

// setRetryAfter sets Retry-After to d rounded up to whole seconds, if d is
// positive.
func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	if d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ceilSeconds(d)))
	}
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
	s.st.logger.LogAttrs(r.Context(), slog.LevelError, "internal error",
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
	if ve, status := readJSON(w, r, s.st.maxBody, dst, strict); ve != nil {
		s.writeErrorStatus(w, r, status, ve)
		return false
	}
	return true
}

func readJSON(w http.ResponseWriter, r *http.Request, limit int64, dst any, strict bool) (*verify.Error, int) {
	bad := func(parameter, format string, args ...any) (*verify.Error, int) {
		return invalidParam(parameter, format, args...), http.StatusBadRequest
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

// invalidParam is an E809 for a request's parameter.
func invalidParam(parameter, format string, args ...any) *verify.Error {
	return &verify.Error{Code: verify.ErrInvalidParameter.Code, Type: verify.TypeRequest, Parameter: parameter,
		Message: fmt.Sprintf(format, args...)}
}

// missingField is an E800 for a request's missing field.
func missingField(parameter string) *verify.Error {
	return &verify.Error{Code: verify.ErrMissingField.Code, Type: verify.TypeRequest, Parameter: parameter,
		Message: parameter + " field is mandatory"}
}

// ceilSeconds is d in whole seconds, rounded up, as a Retry-After header
// and an expires_in state a wait: a client that waits that long finds it
// over, as the engine's own messages say (see verify's E918).
func ceilSeconds(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }
