package httpapi

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFlowDurationsAreRangeChecked: a flow's seconds are checked before
// they become a time.Duration, so a huge number is refused naming the
// field instead of wrapping around to another duration, and nothing is
// stored.
func TestFlowDurationsAreRangeChecked(t *testing.T) {
	h := newHarness(t)
	before := len(decodeData[[]flowJSON](t, h.admin("GET", "/flows", "")))
	for _, c := range []struct{ body, param string }{
		{`{"name":"x","ttl":36028797018964268,"steps":[{"channel":"sms"}]}`, "ttl"},
		{`{"name":"x","ttl":9223372036,"steps":[{"channel":"sms"}]}`, "ttl"},
		{`{"name":"x","ttl":-1,"steps":[{"channel":"sms"}]}`, "ttl"},
		{`{"name":"x","ttl":300,"steps":[{"channel":"sms"},{"channel":"voice","after":36028797018964268}]}`, "steps[1].after"},
		{`{"name":"x","ttl":300,"steps":[{"channel":"sms"},{"channel":"voice","after":-5}]}`, "steps[1].after"},
	} {
		res := h.admin("POST", "/flows", c.body)
		require.Equal(t, http.StatusBadRequest, res.status, res.String())
		assert.Contains(t, res.String(), `"code":"E806"`, c.body)
		assert.Contains(t, res.String(), `"parameter":"`+c.param+`"`, c.body)
		assert.Contains(t, res.String(), "0 to 86400 seconds", c.body)
	}
	after := len(decodeData[[]flowJSON](t, h.admin("GET", "/flows", "")))
	assert.Equal(t, before, after, "no flow stored")

	res := h.admin("POST", "/flows", `{"name":"ok","ttl":86400,"steps":[{"channel":"sms"},{"channel":"voice","after":60}]}`)
	require.Equal(t, http.StatusCreated, res.status, res.String())
	assert.Equal(t, 86400, decodeData[flowJSON](t, res).TTL)
}
