package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
)

// TestRetryAfterHeaderAndMessageAgree: a rate-limited answer states one
// wait, in whole seconds rounded up, in its Retry-After header and in its
// message, whatever fraction of a second is left.
func TestRetryAfterHeaderAndMessageAgree(t *testing.T) {
	h := newHarness(t)
	p := verify.NoProtection()
	p.RecipientSends = verify.Rate{Limit: 1, Per: time.Minute}
	h.serveOn(h.store, p)

	body := `{"flow_id":"` + h.smsFlow + `","to":{"mobile":"+4791234567"}}`
	require.Equal(t, http.StatusOK, h.kaleyra("/verify", body).status)
	for _, wait := range []time.Duration{0, 500 * time.Millisecond, 59*time.Second + 999*time.Millisecond, 59*time.Second + 999999*time.Microsecond} {
		h.clock.Set(testStart.Add(wait))
		res := h.kaleyra("/verify", body)
		require.Equal(t, http.StatusTooManyRequests, res.status, res.String())
		var env struct {
			Error verify.Error `json:"error"`
		}
		require.NoError(t, json.Unmarshal(res.body, &env))
		header, err := strconv.Atoi(res.header.Get("Retry-After"))
		require.NoError(t, err, "Retry-After %q", res.header.Get("Retry-After"))
		assert.GreaterOrEqual(t, header, 1)
		assert.Contains(t, env.Error.Message, fmt.Sprintf("retry after %ds", header), "after %s", wait)
	}
}
