package main

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/openverify/verify"
)

// The WAYSCloud-style API: POST /v1/verify/send and POST /v1/verify/check,
// authenticated with the X-API-Key header. A channel maps to the one-step
// flow "channel:<name>" that setupCatalog made for it. A wrong code is
// answered as WAYSCloud documents, 200 with status "failed" and the
// attempts remaining; every other refusal in Kaleyra's error envelope.

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
		SessionID: v.ID, Status: string(v.Status), Channel: req.Channel,
		ExpiresIn: int(v.ExpiresAt.Sub(v.CreatedAt) / time.Second),
	})
}

func (s *server) waysCheck(w http.ResponseWriter, r *http.Request) {
	if !s.requireKey(w, r, "X-API-Key") {
		return
	}
	var req waysCheckRequest
	if !s.decodeJSON(w, r, &req) {
		return
	}
	v, err := s.eng.Check(r.Context(), verify.CheckRequest{VerifyID: req.SessionID, Code: req.Code, IPAddress: s.clientIP(r)})
	if errors.Is(err, verify.ErrInvalidOTP) {
		ve, _ := verify.AsError(err)
		s.writeJSON(w, r, http.StatusOK, waysFailed{SessionID: req.SessionID, Status: "failed", AttemptsRemaining: ve.AttemptsRemaining})
		return
	}
	if err != nil {
		s.writeError(w, r, renameParams(err, waysParams))
		return
	}
	s.writeJSON(w, r, http.StatusOK, waysVerified{SessionID: v.ID, Status: "verified", Channel: s.channelOf(v)})
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
