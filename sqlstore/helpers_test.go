package sqlstore_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/stretchr/testify/require"

	"github.com/openverify/verify"
	"github.com/openverify/verify/sqlstore"
)

// testSecret is the secret every engine in these tests shares, as every
// instance of a deployment would.
var testSecret = []byte("sqlstore-test-secret-0123456789ab")

// start is the mock clock's starting time.
var start = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

// postgresDSN returns $VERIFY_POSTGRES_DSN. Without it the test is skipped,
// except under CI=true, where it fails: CI must run the PostgreSQL tests.
func postgresDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv("VERIFY_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("VERIFY_POSTGRES_DSN is not set, but CI=true: CI must run the PostgreSQL tests (see .ci/run)")
		}
		tb.Skip("VERIFY_POSTGRES_DSN is not set; skipping PostgreSQL (set it to postgres://user@host:port/db?sslmode=disable)")
	}
	return dsn
}

var (
	adminOnce sync.Once
	adminDB   *sql.DB
	adminErr  error
)

// admin returns a connection to the PostgreSQL test database, for creating
// and dropping schemas.
func admin(tb testing.TB) *sql.DB {
	tb.Helper()
	dsn := postgresDSN(tb)
	adminOnce.Do(func() {
		adminDB, adminErr = sql.Open("pgx", dsn)
		if adminErr == nil {
			adminDB.SetMaxOpenConns(4)
			adminErr = adminDB.PingContext(context.Background())
		}
	})
	require.NoError(tb, adminErr, "connecting to VERIFY_POSTGRES_DSN")
	return adminDB
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freshSchema creates an empty schema, dropped when the test ends, and
// returns a DSN whose search_path puts everything there.
func freshSchema(tb testing.TB) string {
	tb.Helper()
	db := admin(tb)
	name := "sqlstore_test_" + randomHex(6)
	_, err := db.Exec(`CREATE SCHEMA ` + name)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		if _, err := db.Exec(`DROP SCHEMA ` + name + ` CASCADE`); err != nil {
			tb.Errorf("dropping schema %s: %v", name, err)
		}
	})
	u, err := url.Parse(postgresDSN(tb))
	require.NoError(tb, err)
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// backend is a kind of database the tests run against.
type backend struct {
	name string
	// newDSN returns the DSN of a fresh, empty database.
	newDSN func(tb testing.TB) string
}

var backends = []backend{
	{"sqlite", func(tb testing.TB) string {
		return "sqlite:" + filepath.Join(tb.TempDir(), "verify.db")
	}},
	{"postgres", freshSchema},
}

// open opens (and migrates) a Store on dsn, closed when the test ends.
func open(tb testing.TB, dsn string, opts ...sqlstore.Option) *sqlstore.Store {
	tb.Helper()
	st, err := sqlstore.Open(context.Background(), dsn, opts...)
	require.NoError(tb, err)
	tb.Cleanup(func() { st.Close() })
	return st
}

// recorder is a test channel that keeps every message it is handed.
type recorder struct {
	name    string
	byEmail bool

	mu   sync.Mutex
	msgs []verify.Message
}

var (
	_ verify.Channel   = (*recorder)(nil)
	_ verify.Addresser = (*recorder)(nil)
)

func newRecorder(name string, byEmail bool) *recorder { return &recorder{name: name, byEmail: byEmail} }

func (r *recorder) Name() string { return r.name }

func (r *recorder) Addressing() verify.Addressing {
	if r.byEmail {
		return verify.ByEmail
	}
	return verify.ByPhone
}

func (r *recorder) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	if err := ctx.Err(); err != nil {
		return verify.Receipt{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	return verify.Receipt{ProviderID: "p-" + m.ID}, nil
}

// sent returns the messages sent for one verification.
func (r *recorder) sent(verificationID string) []verify.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []verify.Message
	for _, m := range r.msgs {
		if m.VerificationID == verificationID {
			out = append(out, m)
		}
	}
	return out
}

// instance is one engine with its own Store (its own connection pool), as
// one process of a deployment would have.
type instance struct {
	store *sqlstore.Store
	eng   *verify.Engine
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func newInstance(tb testing.TB, dsn string, clk clock.Clock, chs ...verify.Channel) instance {
	tb.Helper()
	st := open(tb, dsn)
	eng, err := verify.New(st, verify.WithChannels(chs...), verify.WithSecret(testSecret),
		verify.WithClock(clk), verify.WithLogger(quietLog))
	require.NoError(tb, err)
	return instance{store: st, eng: eng}
}

func newClock() *clock.Mock {
	clk := clock.NewMock()
	clk.Set(start)
	return clk
}
