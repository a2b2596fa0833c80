package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/openverify/verify"
	"github.com/openverify/verify/httpapi"
	"github.com/openverify/verify/memstore"
	"github.com/openverify/verify/phone"
	"github.com/openverify/verify/sqlstore"
)

// options are the command line's flags after the environment has filled
// in their defaults.
type options struct {
	addr       string
	db         string
	sid        string
	apiKeys    []string
	adminKeys  []string
	trustProxy bool
	console    bool
	brand      string
	region     string
	// inlineText and senders are the ThunderSMS API's InlinePolicy.
	inlineText bool
	senders    []string
	shutdown   time.Duration

	// generatedAPIKey and generatedAdminKey say that the keys were made up
	// at start, so run prints them.
	generatedAPIKey   bool
	generatedAdminKey bool
	// keysFile, if not empty, is where keys made up at an earlier start
	// were kept and taken from again (see keepKeys).
	keysFile string
}

// parseOptions reads the flags in args, with defaults from the
// environment: a flag beats its variable, which beats the built-in default.
func parseOptions(args []string, getenv func(string) string, stderr io.Writer, realProviders bool) (options, error) {
	var o options
	env := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	flags := flag.NewFlagSet("openverify", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.StringVar(&o.addr, "addr", env("VERIFY_ADDR", "localhost:8080"), "address to listen on (env VERIFY_ADDR)")
	flags.StringVar(&o.db, "db", env("VERIFY_DB", "sqlite:openverify.db"), "database: sqlite:path, file:path, postgres://... or memstore (in memory, gone at exit) (env VERIFY_DB)")
	flags.StringVar(&o.sid, "sid", env("VERIFY_SID", "demo"), "account SID in the Kaleyra-style paths /v1/{sid}/verify (env VERIFY_SID)")
	apiKey := flags.String("api-key", env("VERIFY_API_KEY", ""), "API key(s) for the verify APIs, comma-separated; default a random demo key printed at start (env VERIFY_API_KEY)")
	adminKey := flags.String("admin-key", env("VERIFY_ADMIN_KEY", ""), "admin key(s) for /admin, comma-separated; default a random key printed at start (env VERIFY_ADMIN_KEY)")
	flags.BoolVar(&o.trustProxy, "trust-proxy", env("VERIFY_TRUST_PROXY", "") == "1", "take the client IP from the last X-Forwarded-For entry (env VERIFY_TRUST_PROXY=1)")
	flags.BoolVar(&o.console, "console", !realProviders, "register Console channels (codes on stdout) for channels no provider covers; default on only when no provider is configured")
	flags.StringVar(&o.brand, "brand", env("VERIFY_BRAND", "OpenVerify"), "brand in the default flows' messages (env VERIFY_BRAND)")
	flags.StringVar(&o.region, "phone-region", env("VERIFY_PHONE_REGION", ""), "ISO region for phone numbers written without a country code, such as NO (env VERIFY_PHONE_REGION)")
	flags.BoolVar(&o.inlineText, "allow-inline-text", env("VERIFY_ALLOW_INLINE_TEXT", "") == "1", "let ThunderSMS-style requests send their own message text (payload.template) (env VERIFY_ALLOW_INLINE_TEXT=1)")
	senders := flags.String("allow-senders", env("VERIFY_ALLOW_SENDERS", ""), "sender IDs ThunderSMS-style requests may name in channels[].from, comma-separated, or * for any; default none (env VERIFY_ALLOW_SENDERS)")
	flags.DurationVar(&o.shutdown, "shutdown-timeout", 15*time.Second, "how long to wait for in-flight requests on SIGINT/SIGTERM")
	if err := flags.Parse(args); err != nil {
		return o, err
	}
	if flags.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q (all settings are flags; see -h)", flags.Args())
	}
	for _, s := range strings.Split(*senders, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.senders = append(o.senders, s)
		}
	}
	var err error
	if o.apiKeys, o.generatedAPIKey, err = keysOrRandom(*apiKey, "ov_api_"); err != nil {
		return o, err
	}
	if o.adminKeys, o.generatedAdminKey, err = keysOrRandom(*adminKey, "ov_admin_"); err != nil {
		return o, err
	}
	if o.sid == "" {
		return o, errors.New("-sid must not be empty")
	}
	return o, nil
}

// keysOrRandom splits a comma-separated key list, or makes one random key.
func keysOrRandom(list, prefix string) ([]string, bool, error) {
	var keys []string
	for _, k := range strings.Split(list, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		return keys, false, nil
	}
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return nil, false, err
	}
	return []string{prefix + base64.RawURLEncoding.EncodeToString(b)}, true, nil
}

// run is the whole program: it opens the store, builds the engine and its
// channels, creates the default catalog, and serves until ctx is done. ready,
// if not nil, is told the address it listens on.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready func(addr string)) error {
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	prov, err := providersFromEnv(getenv)
	if err != nil {
		return err
	}
	o, err := parseOptions(args, getenv, stderr, prov.any())
	if err != nil {
		return err
	}
	chans, err := buildChannels(prov, o.console, stdout)
	if err != nil {
		return err
	}
	if len(chans) == 0 {
		return errors.New("no channels: configure a provider (see README.md) or pass -console")
	}
	secrets, err := loadSecrets(o.db, getenv, logger)
	if err != nil {
		return err
	}
	if err := keepKeys(&o); err != nil {
		return err
	}

	engOpts := []verify.Option{
		verify.WithChannels(channelList(chans)...),
		verify.WithSecret(secrets...),
		verify.WithLogger(logger),
		verify.WithPhoneParser(phone.Parser{DefaultRegion: o.region}),
	}
	var store verify.Store
	if o.db == memstoreDB {
		store = memstore.New()
	} else {
		st, err := sqlstore.Open(ctx, o.db)
		if err != nil {
			return err
		}
		defer st.Close()
		store = st
		if _, isSQLite := sqlitePath(o.db); !isSQLite {
			// Instances sharing PostgreSQL share their rate limits too.
			engOpts = append(engOpts, verify.WithLimiter(verify.NewStoreLimiter(st)))
		}
	}
	eng, err := verify.New(store, engOpts...)
	if err != nil {
		return err
	}
	if err := httpapi.SetupCatalog(ctx, eng, o.brand); err != nil {
		return fmt.Errorf("creating the default flows: %w", err)
	}

	apiOpts := []httpapi.Option{
		httpapi.WithSID(o.sid),
		httpapi.WithAPIKeys(o.apiKeys...),
		httpapi.WithAdminKeys(o.adminKeys...),
		httpapi.WithLogger(logger),
		httpapi.WithAdHocFlow(verify.Flow{Brand: o.brand}),
		httpapi.WithInlinePolicy(httpapi.InlinePolicy{Text: o.inlineText, Senders: o.senders}),
	}
	if o.trustProxy {
		apiOpts = append(apiOpts, httpapi.WithTrustProxy())
	}
	if prov.twilio != nil && prov.twilio.callbackURL != "" && prov.twilio.authToken != "" {
		apiOpts = append(apiOpts, httpapi.WithTwilioHook(httpapi.TwilioHook{AuthToken: prov.twilio.authToken, PublicURL: prov.twilio.callbackURL}))
	}
	if prov.kaleyra != nil && prov.kaleyra.CallbackURL != "" {
		apiOpts = append(apiOpts, httpapi.WithKaleyraHook(httpapi.KaleyraHook{Secret: prov.kaleyra.CallbackSecret}))
	}
	handler := httpapi.New(eng, apiOpts...)

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      time.Minute, // a Send may wait for a slow provider
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	printBanner(stdout, ln.Addr().String(), o, chans)
	if ready != nil {
		ready(ln.Addr().String())
	}
	return serve(ctx, srv, ln, o.shutdown, eng.Run, logger)
}

// serve serves srv on ln and runs background (the engine's fallback loop)
// until ctx is done. Then it stops accepting connections, waits up to
// timeout for the requests in flight to finish, and only then stops
// background and waits for it, so that no request loses the engine.
func serve(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration, background func(context.Context) error, log *slog.Logger) error {
	bgCtx, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	bgDone := make(chan error, 1)
	go func() { bgDone <- background(bgCtx) }()

	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve(ln) }()

	var err error
	select {
	case <-ctx.Done():
		log.Info("shutting down: finishing the requests in flight", "timeout", timeout)
	case err = <-srvDone: // the listener failed
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if serr := srv.Shutdown(shutCtx); serr != nil {
		err = errors.Join(err, fmt.Errorf("shutting down: %w", serr))
	}
	if err == nil {
		if serr := <-srvDone; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = serr
		}
	}
	stopBG()
	if bgErr := <-bgDone; bgErr != nil {
		err = errors.Join(err, bgErr)
	}
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// loadSecrets returns the engine's secrets: VERIFY_SECRET (comma-separated
// hex or base64 keys, newest first), else, for a SQLite file, a random key
// kept in a file beside the database (created on first start), else, for
// an in-memory SQLite database, a random key for this process. PostgreSQL
// without VERIFY_SECRET is refused: every instance must share one secret.
func loadSecrets(dsn string, getenv func(string) string, log *slog.Logger) ([][]byte, error) {
	if v := strings.TrimSpace(getenv("VERIFY_SECRET")); v != "" {
		var keys [][]byte
		for _, s := range strings.Split(v, ",") {
			k, err := decodeSecret(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("VERIFY_SECRET: %w", err)
			}
			keys = append(keys, k)
		}
		return keys, nil
	}
	path, ok := sqlitePath(dsn)
	if !ok && dsn != memstoreDB {
		return nil, errors.New("VERIFY_SECRET is required with a PostgreSQL database, and every instance needs the same one (make one with: openssl rand -hex 32)")
	}
	if path == "" || path == ":memory:" {
		k := make([]byte, 32)
		_, err := rand.Read(k)
		return [][]byte{k}, err
	}
	file := path + ".secret"
	if b, err := os.ReadFile(file); err == nil {
		k, err := decodeSecret(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return [][]byte{k}, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storing a generated secret: %w (or set VERIFY_SECRET)", err)
	}
	if _, err := fmt.Fprintln(f, hex.EncodeToString(k)); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	log.Warn("no VERIFY_SECRET: generated a secret and stored it beside the database; set VERIFY_SECRET in production", "file", file)
	return [][]byte{k}, nil
}

// memstoreDB is the -db value for an in-memory store (memstore): nothing
// survives the process.
const memstoreDB = "memstore"

// keepKeys makes generated API and admin keys last across restarts of a
// server on a SQLite file: the first start keeps the keys it made up in a
// file beside the database (mode 0600, as the generated secret), and later
// starts take them from there, so that the keys a user exported keep
// working. Keys given by flag or environment are never stored, and win.
// With PostgreSQL or in memory, made-up keys last for the process.
func keepKeys(o *options) error {
	path, ok := sqlitePath(o.db)
	if !ok || path == "" || path == ":memory:" || !(o.generatedAPIKey || o.generatedAdminKey) {
		return nil
	}
	o.keysFile = path + ".keys"
	stored := map[string]string{}
	b, err := os.ReadFile(o.keysFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && v != "" {
			stored[k] = v
		}
	}
	changed := false
	take := func(name string, keys *[]string, generated *bool) {
		if !*generated {
			return
		}
		if v, ok := stored[name]; ok {
			*keys, *generated = []string{v}, false // made up at an earlier start
			return
		}
		stored[name], changed = (*keys)[0], true
	}
	take("api_key", &o.apiKeys, &o.generatedAPIKey)
	take("admin_key", &o.adminKeys, &o.generatedAdminKey)
	if !changed {
		return nil
	}
	var out strings.Builder
	out.WriteString("# Keys the server made up at its first start; set VERIFY_API_KEY and VERIFY_ADMIN_KEY to choose your own.\n")
	for _, name := range []string{"api_key", "admin_key"} {
		if v, ok := stored[name]; ok {
			fmt.Fprintf(&out, "%s=%s\n", name, v)
		}
	}
	return writePrivate(o.keysFile, out.String())
}

// writePrivate replaces the file at path with content, readable and
// writable by its owner only, atomically (a temporary file renamed over it).
func writePrivate(path, content string) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// decodeSecret accepts hex or base64 (standard or URL alphabet, padded or
// not) of at least 16 bytes.
func decodeSecret(s string) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil && len(s) >= 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) < 16 {
				return nil, fmt.Errorf("a secret must be at least 16 bytes (32 recommended), got %d", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("a secret must be hex or base64 of at least 16 random bytes (make one with: openssl rand -hex 32)")
}

// sqlitePath returns the file a SQLite DSN names, and false for other
// databases.
func sqlitePath(dsn string) (string, bool) {
	var rest string
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		rest = strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//")
	case strings.HasPrefix(dsn, "file:"):
		rest = strings.TrimPrefix(dsn, "file:")
	default:
		return "", false
	}
	path, _, _ := strings.Cut(rest, "?")
	return path, true
}

// printBanner tells the user where the server is and how to call it. Keys
// given by flag or environment are not printed.
func printBanner(w io.Writer, addr string, o options, chans []namedChannel) {
	base := "http://" + addr
	fmt.Fprintf(w, "OpenVerify server listening on %s\n", base)
	fmt.Fprintf(w, "  database: %s\n", redactDSN(o.db))
	fmt.Fprintf(w, "  channels:")
	for _, c := range chans {
		fmt.Fprintf(w, " %s (%s)", c.ch.Name(), c.provider)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  Kaleyra-style API: %s/v1/%s/verify\n", base, o.sid)
	if o.generatedAPIKey {
		fmt.Fprintf(w, "  demo API key (set VERIFY_API_KEY to choose one):\n    export API_KEY=%s\n", o.apiKeys[0])
	}
	if o.generatedAdminKey {
		fmt.Fprintf(w, "  admin key (set VERIFY_ADMIN_KEY to choose one):\n    export ADMIN_KEY=%s\n", o.adminKeys[0])
	}
	if o.keysFile != "" && !o.generatedAPIKey && !o.generatedAdminKey {
		fmt.Fprintf(w, "  keys: the ones made up at the first start, kept in %s\n", o.keysFile)
	}
	fmt.Fprintf(w, "  console:   %s/admin/console/ (sign in with the admin key)\n", base)
}

// redactDSN hides a PostgreSQL password.
func redactDSN(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		if at := strings.LastIndex(dsn, "@"); at > i {
			if colon := strings.Index(dsn[i+3:at], ":"); colon >= 0 {
				return dsn[:i+3+colon] + ":***" + dsn[at:]
			}
		}
	}
	return dsn
}
