package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/httpapi"
	"github.com/openverify/verify/internal/testutil"
	"github.com/openverify/verify/sqlstore"
)

const (
	testAPIKey = "Ac4XXXXX21f-test-api-key"
	testSID    = "HXAP16XXXX071US"
)

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef")
	discard    = slog.New(slog.DiscardHandler)
)

// syncBuffer is a buffer safe for the goroutines that write logs and the
// test that reads them.
type syncBuffer = testutil.Buffer

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestRunServesAndShutsDown runs the whole program on a loopback port and a
// SQLite file, sends and checks a code through it, then cancels it as a
// signal would, and expects run (and the engine's Run loop it waits for) to
// return.
func TestRunServesAndShutsDown(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	addr := make(chan string, 1)
	done := make(chan error, 1)
	env := envMap(map[string]string{"VERIFY_API_KEY": testAPIKey})
	args := []string{"-addr", "127.0.0.1:0", "-db", "sqlite:" + filepath.Join(dir, "verify.db"), "-sid", testSID}
	go func() { done <- run(ctx, args, env, &stdout, &stderr, func(a string) { addr <- a }) }()

	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("run returned early: %v\n%s", err, stderr.String())
	}
	res, err := http.Get(base + "/healthz")
	require.NoError(t, err)
	res.Body.Close()
	assert.Equal(t, http.StatusOK, res.StatusCode)

	req, _ := http.NewRequest("POST", base+"/v1/"+testSID+"/verify", strings.NewReader(`{"to":{"mobile":"+4791234567"}}`))
	req.Header.Set("api-key", testAPIKey)
	res, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode, string(body))

	out := stdout.String()
	assert.Contains(t, out, "channels: sms (console) voice (console) whatsapp (console) viber (console) email (console)")
	assert.Contains(t, out, "[sms] to +4791234567: OpenVerify: your verification code is ")
	assert.NotContains(t, out, testAPIKey, "a configured key is not printed")
	assert.Contains(t, out, "export ADMIN_KEY=ov_admin_", "a generated key is")
	assert.NotContains(t, stderr.String(), "verification code", "codes go to the console channel, never to the log")

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
	_, err = http.Get(base + "/healthz")
	assert.Error(t, err, "the listener is closed")
	_, err = os.Stat(filepath.Join(dir, "verify.db.secret"))
	assert.NoError(t, err, "the generated secret is kept beside the database")
}

// TestServeFinishesInFlight starts a request, cancels serve's context while
// the request is being handled, and checks that the request completes, that
// the background loop stops only after it, and that serve returns.
func TestServeFinishesInFlight(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	entered, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "finished")
	})}
	shuttingDown := make(chan struct{})
	srv.RegisterOnShutdown(func() { close(shuttingDown) })

	var mu sync.Mutex
	var events []string
	note := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, s)
	}
	background := func(ctx context.Context) error {
		<-ctx.Done()
		note("background stopped")
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, srv, ln, 10*time.Second, background, discard) }()

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		res, err := http.Get("http://" + ln.Addr().String() + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		got <- result{string(b), err}
	}()

	<-entered
	cancel()
	<-shuttingDown // Shutdown has begun while the request is in flight
	close(release)
	r := <-got
	require.NoError(t, r.err)
	assert.Equal(t, "finished", r.body)
	note("request finished")
	require.NoError(t, <-served)
	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, events, "background stopped")
}

func TestServeListenerFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln.Close()
	stopped := false
	err = serve(context.Background(), &http.Server{}, ln, time.Second, func(ctx context.Context) error {
		<-ctx.Done()
		stopped = true
		return nil
	}, discard)
	assert.Error(t, err)
	assert.True(t, stopped)
}

func TestSetupCatalogIsIdempotent(t *testing.T) {
	ctx := context.Background()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "verify.db")
	chans := []verify.Channel{channels.NewRecorder("sms"), channels.NewRecorder("email")}
	start := func() ([]verify.Flow, []verify.Template) {
		st, err := sqlstore.Open(ctx, dsn)
		require.NoError(t, err)
		defer st.Close()
		eng, err := verify.New(st, verify.WithChannels(chans...), verify.WithSecret(testSecret), verify.WithLogger(discard))
		require.NoError(t, err)
		require.NoError(t, httpapi.SetupCatalog(ctx, eng, "Acme"))
		flows, err := eng.Flows(ctx)
		require.NoError(t, err)
		tpls, err := eng.Templates(ctx)
		require.NoError(t, err)
		return flows, tpls
	}
	flows, tpls := start()
	assert.Len(t, flows, 2, "default, sms-then-email")
	assert.Len(t, tpls, 2)
	flows2, tpls2 := start()
	assert.Equal(t, flows, flows2)
	assert.Equal(t, tpls, tpls2)
	defaults := 0
	for _, f := range flows2 {
		if f.Default {
			defaults++
			assert.Equal(t, httpapi.DefaultFlowName, f.Name)
		}
	}
	assert.Equal(t, 1, defaults)
}

func TestLoadSecrets(t *testing.T) {
	dir := t.TempDir()
	dsn := "sqlite:" + filepath.Join(dir, "v.db") + "?_pragma=busy_timeout(1000)"
	none := envMap(nil)
	a, err := loadSecrets(dsn, none, discard)
	require.NoError(t, err)
	b, err := loadSecrets(dsn, none, discard)
	require.NoError(t, err)
	assert.Equal(t, a, b, "the generated secret is reused at the next start")
	fi, err := os.Stat(filepath.Join(dir, "v.db.secret"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	hexKey := hex.EncodeToString(testSecret)
	got, err := loadSecrets("postgres://db/verify", envMap(map[string]string{"VERIFY_SECRET": hexKey + ", MDEyMzQ1Njc4OWFiY2RlZg=="}), discard)
	require.NoError(t, err)
	assert.Equal(t, [][]byte{testSecret, []byte("0123456789abcdef")}, got)

	_, err = loadSecrets("postgres://db/verify", none, discard)
	assert.ErrorContains(t, err, "VERIFY_SECRET is required")
	_, err = loadSecrets(dsn, envMap(map[string]string{"VERIFY_SECRET": "short"}), discard)
	assert.Error(t, err)
	mem, err := loadSecrets("sqlite::memory:", none, discard)
	require.NoError(t, err)
	assert.Len(t, mem[0], 32)
}

func TestProvidersFromEnv(t *testing.T) {
	p, err := providersFromEnv(envMap(map[string]string{
		"TWILIO_ACCOUNT_SID": "AC123", "TWILIO_AUTH_TOKEN": "tok", "TWILIO_FROM": "+15557122661",
		"TWILIO_VOICE_FROM": "+15557122662", "TWILIO_STATUS_CALLBACK_URL": "https://example.com/hooks/twilio",
		"SMTP_HOST": "smtp.example.com", "SMTP_FROM": "Acme <no-reply@acme.example>", "SMTP_PORT": "2525",
		"VONAGE_API_KEY": "k", "VONAGE_API_SECRET": "s", "VONAGE_FROM": "Acme",
	}))
	require.NoError(t, err)
	require.True(t, p.any())
	chans, err := buildChannels(p, false, io.Discard)
	require.NoError(t, err)
	var got []string
	for _, c := range chans {
		got = append(got, c.ch.Name()+"/"+c.provider)
	}
	assert.Equal(t, []string{"sms/twilio", "voice/twilio", "email/smtp"}, got, "Twilio wins SMS over Vonage; no console")

	chans, err = buildChannels(p, true, io.Discard)
	require.NoError(t, err)
	assert.Len(t, chans, 5, "the console fills in whatsapp and viber")

	for _, env := range []map[string]string{
		{"TWILIO_ACCOUNT_SID": "AC123", "TWILIO_AUTH_TOKEN": "tok"},
		{"TWILIO_ACCOUNT_SID": "AC123", "TWILIO_API_KEY_SID": "SK1", "TWILIO_API_KEY_SECRET": "x", "TWILIO_FROM": "+1555", "TWILIO_STATUS_CALLBACK_URL": "https://x/y"},
		{"SMTP_HOST": "smtp.example.com"},
		{"SMTP_HOST": "smtp.example.com", "SMTP_FROM": "a@b.example", "SMTP_PORT": "x"},
		{"SMTP_HOST": "smtp.example.com", "SMTP_FROM": "a@b.example", "SMTP_SECURITY": "ssl3"},
	} {
		_, err := providersFromEnv(envMap(env))
		assert.Error(t, err, env)
	}
	p, err = providersFromEnv(envMap(nil))
	require.NoError(t, err)
	assert.False(t, p.any())
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions(nil, envMap(nil), io.Discard, false)
	require.NoError(t, err)
	assert.Equal(t, "sqlite:openverify.db", o.db)
	assert.Equal(t, "localhost:8080", o.addr)
	assert.True(t, o.console)
	assert.True(t, o.generatedAPIKey)
	assert.True(t, strings.HasPrefix(o.apiKeys[0], "ov_api_"))

	o, err = parseOptions([]string{"-db", "sqlite:other.db", "-api-key", "k1, k2", "-trust-proxy"},
		envMap(map[string]string{"VERIFY_DB": "postgres://x/y", "VERIFY_ADMIN_KEY": "adm"}), io.Discard, true)
	require.NoError(t, err)
	assert.Equal(t, "sqlite:other.db", o.db, "a flag beats the environment")
	assert.Equal(t, []string{"k1", "k2"}, o.apiKeys)
	assert.Equal(t, []string{"adm"}, o.adminKeys)
	assert.False(t, o.generatedAPIKey || o.generatedAdminKey)
	assert.True(t, o.trustProxy)
	assert.False(t, o.console, "no console once a provider is configured")

	_, err = parseOptions([]string{"extra"}, envMap(nil), io.Discard, false)
	assert.Error(t, err)
	_, err = parseOptions([]string{"-h"}, envMap(nil), io.Discard, false)
	assert.True(t, errors.Is(err, flag.ErrHelp))
}

func TestSmallHelpers(t *testing.T) {
	for dsn, want := range map[string]string{
		"sqlite:openverify.db":         "openverify.db",
		"sqlite:///tmp/v.db?_txlock=x": "/tmp/v.db",
		"file:data/v.db?cache=shared":  "data/v.db",
		"sqlite::memory:":              ":memory:",
	} {
		got, ok := sqlitePath(dsn)
		assert.True(t, ok, dsn)
		assert.Equal(t, want, got, dsn)
	}
	_, ok := sqlitePath("postgres://u:p@h/db")
	assert.False(t, ok)
	assert.Equal(t, "postgres://u:***@h/db", redactDSN("postgres://u:p@h/db"))
	assert.Equal(t, "sqlite:v.db", redactDSN("sqlite:v.db"))
}
