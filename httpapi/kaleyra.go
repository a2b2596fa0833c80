package httpapi

import (
	"net/http"
	"time"

	"github.com/openverify/verify"
)

// The Kaleyra-style API: POST /v1/{sid}/verify generates and sends a code,
// POST /v1/{sid}/verify/validate checks it. Both authenticate with the
// api-key header. Answers are {"data":{...}} or Kaleyra's error envelope
// {"error":{"code","type","parameter","message","reference"}} with the
// status (*verify.Error).HTTPStatus suggests.

// kaleyraGenerateRequest is the Generate OTP body.
type kaleyraGenerateRequest struct {
	// FlowID is optional: the default flow when empty.
	FlowID string           `json:"flow_id"`
	To     verify.Recipient `json:"to"` // {"mobile": "...", "email": "..."}
	// OTP is an optional custom code that fits the flow.
	OTP string `json:"otp"`
	// ForeignID is the caller's reference, echoed back.
	ForeignID string `json:"foreign_id"`
}

// kaleyraGenerateData is the Generate OTP answer's data.
type kaleyraGenerateData struct {
	VerifyID  string           `json:"verify_id"`
	FlowID    string           `json:"flow_id"`
	To        verify.Recipient `json:"to"`
	ForeignID string           `json:"foreign_id,omitempty"`
	Status    verify.Status    `json:"status"`
	CreatedAt time.Time        `json:"created_at"`
	ExpiresAt time.Time        `json:"expires_at"`
}

type kaleyraValidateRequest struct {
	VerifyID string `json:"verify_id"`
	OTP      string `json:"otp"`
}

type kaleyraValidateData struct {
	VerifyID string `json:"verify_id"`
	Message  string `json:"message"`
}

type dataEnvelope[T any] struct {
	Data T `json:"data"`
}

// kaleyraAuth checks the api-key header (or the host's Authorizer) and
// the SID in the path, if WithSID set one.
func (s *server) kaleyraAuth(w http.ResponseWriter, r *http.Request) bool {
	if !s.requireKey(w, r, "api-key") {
		return false
	}
	if s.st.sid != "" && r.PathValue("sid") != s.st.sid {
		s.writeErrorStatus(w, r, http.StatusUnauthorized, invalidParam("sid", "sid does not belong to this api-key"))
		return false
	}
	return true
}

func (s *server) kaleyraGenerate(w http.ResponseWriter, r *http.Request) {
	if !s.kaleyraAuth(w, r) {
		return
	}
	var req kaleyraGenerateRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	v, err := s.eng.Send(r.Context(), verify.SendRequest{
		FlowID:         req.FlowID,
		To:             req.To,
		Code:           req.OTP,
		ForeignID:      req.ForeignID,
		IPAddress:      s.clientIP(r),
		IdempotencyKey: r.Header.Get("Idempotency-Key"),
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, dataEnvelope[kaleyraGenerateData]{kaleyraGenerateData{
		VerifyID: v.ID, FlowID: v.FlowID, To: v.To, ForeignID: v.ForeignID, Status: v.Status,
		CreatedAt: v.CreatedAt, ExpiresAt: v.ExpiresAt,
	}})
}

func (s *server) kaleyraValidate(w http.ResponseWriter, r *http.Request) {
	if !s.kaleyraAuth(w, r) {
		return
	}
	var req kaleyraValidateRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	v, err := s.eng.Check(r.Context(), verify.CheckRequest{VerifyID: req.VerifyID, Code: req.OTP, IPAddress: s.clientIP(r)})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, dataEnvelope[kaleyraValidateData]{kaleyraValidateData{
		VerifyID: v.ID, Message: "OTP verified successfully.",
	}})
}
