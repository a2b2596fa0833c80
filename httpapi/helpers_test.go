package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/internal/testutil"
	"github.com/openverify/verify/memstore"
)

const (
	testSID      = "HXAP16XXXX071US"
	testAPIKey   = "Ac4XXXXX21f-test-api-key"
	testAdminKey = "test-admin-key"
)

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef")
	testStart  = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	discard    = slog.New(slog.DiscardHandler)
)

// syncBuffer is a buffer safe for the goroutines that write logs and the
// test that reads them.
type syncBuffer = testutil.Buffer

// channelNames are the channels the harness registers, as the runnable
// server registers Console channels when no provider is configured.
var channelNames = []string{"sms", "voice", "whatsapp", "viber", "email"}

// harness is the server on httptest over an engine on memstore, with a
// mock clock and recording channels named as the Console channels are.
type harness struct {
	t     *testing.T
	ctx   context.Context
	clock *clock.Mock
	store *memstore.Store
	eng   *verify.Engine
	rec   map[string]*channels.Recorder
	chans []verify.Channel
	// opts are the options the server was made with.
	opts []Option
	// smsFlow is the default flow's ID: one SMS step.
	smsFlow string
	srv     *httptest.Server
}

// newHarness serves New with the harness's keys and SID, then opts.
func newHarness(t *testing.T, opts ...Option) *harness {
	t.Helper()
	h := &harness{t: t, ctx: context.Background(), clock: clock.NewMock(), store: memstore.New(), rec: map[string]*channels.Recorder{}}
	h.clock.Set(testStart)
	var chans []verify.Channel
	for _, name := range channelNames {
		r := channels.NewRecorder(name)
		h.rec[name] = r
		chans = append(chans, r)
	}
	h.chans = chans
	var err error
	h.eng, err = verify.New(h.store,
		verify.WithClock(h.clock),
		verify.WithChannels(chans...),
		verify.WithSecret(testSecret),
		verify.WithLogger(discard),
		verify.WithProtection(verify.NoProtection()))
	require.NoError(t, err)
	require.NoError(t, SetupCatalog(h.ctx, h.eng, "Acme"))
	h.smsFlow = h.flowByName(DefaultFlowName).ID
	h.opts = append([]Option{WithSID(testSID), WithAPIKeys(testAPIKey), WithAdminKeys(testAdminKey), WithLogger(discard)}, opts...)
	h.srv = httptest.NewServer(New(h.eng, h.opts...))
	t.Cleanup(h.srv.Close)
	return h
}

// response is an HTTP answer, read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string { return string(r.body) }

// do sends a request with the given headers ("Name: value") and body.
func (h *harness) do(method, path, body string, headers ...string) response {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rd)
	require.NoError(h.t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, hd := range headers {
		k, v, _ := strings.Cut(hd, ":")
		req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	res, err := h.srv.Client().Do(req)
	require.NoError(h.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(h.t, err)
	return response{res.StatusCode, res.Header, b}
}

// The three APIs' credentials.
var (
	kaleyraKey = "api-key: " + testAPIKey
	waysKey    = "X-API-Key: " + testAPIKey
	thunderKey = "Authorization: Bearer " + testAPIKey
	adminKey   = "X-Admin-Key: " + testAdminKey
)

func (h *harness) kaleyra(path, body string) response {
	return h.do(http.MethodPost, "/v1/"+testSID+path, body, kaleyraKey)
}

// generate starts a verification through the Kaleyra-style API and
// returns its ID.
func (h *harness) generate(body string) string {
	h.t.Helper()
	res := h.kaleyra("/verify", body)
	require.Equal(h.t, http.StatusOK, res.status, res.String())
	var out struct {
		Data struct {
			VerifyID string `json:"verify_id"`
		} `json:"data"`
	}
	require.NoError(h.t, json.Unmarshal(res.body, &out))
	require.NotEmpty(h.t, out.Data.VerifyID)
	return out.Data.VerifyID
}

// code returns the code last sent on a channel.
func (h *harness) code(channel string) string {
	h.t.Helper()
	m, ok := h.rec[channel].Last()
	require.True(h.t, ok, "nothing sent on %s", channel)
	return m.Code
}

// compact returns the compact form of a JSON text, as the server writes it.
func compact(t testing.TB, text string) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, json.Compact(&b, []byte(text)))
	return b.String()
}

// keysOf returns the keys of a JSON object, to check a response has
// exactly the documented fields.
func keysOf(t testing.TB, body []byte, path ...string) []string {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &m))
	for _, p := range path {
		require.Contains(t, m, p)
		var inner map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(m[p], &inner))
		m = inner
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

// flowByName finds a flow the catalog made.
func (h *harness) flowByName(name string) verify.Flow {
	h.t.Helper()
	flows, err := h.eng.Flows(h.ctx)
	require.NoError(h.t, err)
	for _, f := range flows {
		if f.Name == name {
			return f
		}
	}
	h.t.Fatalf("no flow named %q", name)
	return verify.Flow{}
}
