package httpapi

import (
	"errors"
	"net/http"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
)

// twilioStatus receives Twilio's status callbacks and records them as
// delivery reports.
func (s *server) twilioStatus(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, s.st.maxBody)
	id, status, detail, err := channels.ParseTwilioStatusCallback(r, s.st.twilio.AuthToken, s.st.twilio.PublicURL)
	s.deliveryReport(w, r, "twilio", id, status, detail, err)
}

// kaleyraReport takes Kaleyra's delivery reports (see KaleyraHook).
func (s *server) kaleyraReport(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, s.st.maxBody)
	id, status, detail, err := channels.ParseKaleyraDLR(r, s.st.kaleyra.Secret)
	s.deliveryReport(w, r, "kaleyra", id, status, detail, err)
}

// deliveryReport answers a provider's delivery report, as parsed: 403 for
// a bad signature, 400 for a report it cannot read, 204 once the engine
// has it (or for an unknown or purged message, which a retry would not
// help), and the engine's error otherwise (a 503 makes the provider retry).
func (s *server) deliveryReport(w http.ResponseWriter, r *http.Request, provider, id string, status verify.DeliveryStatus, detail string, err error) {
	if errors.Is(err, channels.ErrInvalidSignature) {
		http.Error(w, "invalid signature", http.StatusForbidden)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := s.eng.ReportDelivery(r.Context(), id, status, detail); err != nil {
		if ve, ok := verify.AsError(err); ok && ve.Code == verify.ErrNotFound.Code {
			// An unknown or purged message: nothing to retry.
			s.st.logger.WarnContext(r.Context(), "delivery report for an unknown message", "provider", provider, "message", id)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
