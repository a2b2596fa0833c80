package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"

	"github.com/openverify/verify"
)

// The audit log: every state-changing admin request that succeeded, from
// the console or the admin API, and every console sign-in and refused
// sign-in, is recorded with verify.Engine.Audit (when the store keeps an
// audit log, verify.AuditStore). A failure to record is logged; the action
// itself has already happened.

// audit records what actor did.
func (s *server) audit(r *http.Request, actor, action, target, detail string) {
	_, err := s.eng.Audit(r.Context(), verify.AuditEntry{Actor: actor, Action: action, Target: target, Detail: detail})
	switch {
	case err == nil:
	case errors.Is(err, verify.ErrAuditUnsupported):
	default:
		s.st.logger.LogAttrs(r.Context(), slog.LevelError, "audit entry not recorded",
			slog.String("actor", actor), slog.String("action", action), slog.String("target", target), slog.String("error", err.Error()))
	}
}

// apiActor names who made an admin API request: under the host's admin
// Authorizer, WithActor's name for it ("admin" without one); else the
// admin key, by the first 8 hex digits of its SHA-256.
func (s *server) apiActor(r *http.Request) string {
	if s.st.adminAuth != nil {
		return s.authorizedActor(r)
	}
	key := r.Header.Get("X-Admin-Key")
	if key == "" {
		_, key, _ = r.BasicAuth()
	}
	return "admin key " + keyFingerprint(key)
}

// authorizedActor is who the host's admin Authorizer admitted.
func (s *server) authorizedActor(r *http.Request) string {
	if s.st.actor != nil {
		if a := s.st.actor(r); a != "" {
			return a
		}
	}
	return "admin"
}

// keyFingerprint is the first 8 hex digits of key's SHA-256: enough to
// tell keys apart in the audit log, nothing about the key.
func keyFingerprint(key string) string {
	d := sha256.Sum256([]byte(key))
	return hex.EncodeToString(d[:4])
}
