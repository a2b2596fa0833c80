package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// downStore fails the calls a Send or a Check starts with.
type downStore struct {
	verify.Store
	err error
}

func (s downStore) GetFlow(context.Context, string) (verify.Flow, error) { return verify.Flow{}, s.err }
func (s downStore) DefaultFlow(context.Context) (verify.Flow, error)     { return verify.Flow{}, s.err }
func (s downStore) GetVerification(context.Context, string) (verify.VerificationRecord, error) {
	return verify.VerificationRecord{}, s.err
}
func (s downStore) Take(context.Context, time.Time, []verify.Take) (verify.Taken, error) {
	return verify.Taken{}, s.err
}
func (s downStore) CreateVerification(context.Context, verify.VerificationRecord, []verify.PendingStep) error {
	return s.err
}

// serveOn points the harness's server at a new engine on store, with the
// harness's clock, secret and channels and the given protection.
func (h *harness) serveOn(store verify.Store, p verify.Protection) *verify.Engine {
	h.t.Helper()
	eng, err := verify.New(store, verify.WithClock(h.clock), verify.WithSecret(testSecret),
		verify.WithChannels(h.chans...), verify.WithLogger(discard), verify.WithProtection(p))
	require.NoError(h.t, err)
	srv := httptest.NewServer(New(eng, h.opts...))
	h.t.Cleanup(srv.Close)
	h.srv = srv
	return eng
}

// TestStoreFailuresAnswer503Or500: a store failure a retry can fix is 503
// with Retry-After and E926; one it cannot fix is 500 with E925 and a
// reference to the log line, never the driver's text.
func TestStoreFailuresAnswer503Or500(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"unavailable", verify.Transient(errors.New("the database system is shutting down"), 3*time.Second), http.StatusServiceUnavailable, "E926"},
		{"internal", errors.New(`relation "verifications" does not exist`), http.StatusInternalServerError, "E925"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.serveOn(downStore{h.store, c.err}, verify.NoProtection())

			for _, res := range []response{
				h.kaleyra("/verify", `{"flow_id":"`+h.smsFlow+`","to":{"mobile":"+4712345678"}}`),
				h.kaleyra("/verify/validate", `{"verify_id":"4d3d0959-805e-43fa-bece-5815ce0795a2","otp":"123456"}`),
			} {
				require.Equal(t, c.status, res.status, res.String())
				var env struct {
					Error verify.Error `json:"error"`
				}
				require.NoError(t, json.Unmarshal(res.body, &env), res.String())
				assert.Equal(t, c.code, env.Error.Code)
				assert.NotContains(t, res.String(), "database system", "the driver's text stays in the log")
				assert.NotContains(t, res.String(), "relation", "the driver's text stays in the log")
				if c.status == http.StatusServiceUnavailable {
					assert.Equal(t, "3", res.header.Get("Retry-After"))
				} else {
					assert.Empty(t, res.header.Get("Retry-After"))
					assert.NotEmpty(t, env.Error.Reference, "a reference to the log line")
				}
			}
		})
	}
}
