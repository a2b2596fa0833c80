package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openverify/verify"
	"github.com/openverify/verify/memstore"
	"github.com/openverify/verify/sqlstore"
)

// codeBook is a channel that keeps each verification's code, so that
// concurrent clients can each find their own.
type codeBook struct{ codes sync.Map }

func (c *codeBook) Name() string { return "sms" }

func (c *codeBook) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	c.codes.Store(m.VerificationID, m.Code)
	return verify.Receipt{}, nil
}

// benchAPI is how a benchmark client speaks one wire format.
type benchAPI struct {
	header, key string
	// send and check return a request's path and body.
	send  func(mobile string) (string, string)
	check func(id, code string) (string, string)
}

var (
	kaleyraBench = benchAPI{header: "api-key", key: testAPIKey,
		send: func(mobile string) (string, string) {
			return "/v1/" + testSID + "/verify", `{"to":{"mobile":"` + mobile + `"}}`
		},
		check: func(id, code string) (string, string) {
			return "/v1/" + testSID + "/verify/validate", `{"verify_id":"` + id + `","otp":"` + code + `"}`
		}}
	// thunderBench sends a two-channel ad-hoc flow (SMS, then SMS again
	// after 30 s) and checks with the body form.
	thunderBench = benchAPI{header: "Authorization", key: "Bearer " + testAPIKey,
		send: func(mobile string) (string, string) {
			to := strings.TrimPrefix(mobile, "+")
			return "/api/v2/verify/send", `{"channels":[{"name":"sms","recipient":{"to":"` + to + `"},"wait":30},` +
				`{"name":"sms","recipient":{"to":"` + to + `"}}],"payload":{"length":6,"timeout":120}}`
		},
		check: func(id, code string) (string, string) {
			return "/api/v2/verify/check", `{"id":"` + id + `","token":"` + code + `"}`
		}}
)

// BenchmarkServerSendCheck measures one Kaleyra-style generate and one
// validate over HTTP on loopback, by concurrent clients, on memstore and
// on a SQLite file. It reports pairs/s.
func BenchmarkServerSendCheck(b *testing.B) {
	benchStores(b, kaleyraBench)
}

// BenchmarkServerThunderSMS is BenchmarkServerSendCheck with
// ThunderSMS-style sends, whose channels run as an ad-hoc flow that is
// validated on every send.
func BenchmarkServerThunderSMS(b *testing.B) {
	benchStores(b, thunderBench)
}

// benchStores runs the benchmark on memstore, a SQLite file and, with
// $VERIFY_POSTGRES_DSN, PostgreSQL (a schema of its own), each without
// protections and with the server's defaults ("-protected": every pair
// from another client IP and number prefix, as many users are; on
// PostgreSQL the rate limits counted in the database, as cmd/openverify
// counts them there).
func benchStores(b *testing.B, api benchAPI) {
	sqlite := func(b *testing.B) *sqlstore.Store {
		st, err := sqlstore.Open(context.Background(), "sqlite:"+filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	for _, protected := range []bool{false, true} {
		suffix := ""
		if protected {
			suffix = "-protected"
		}
		b.Run("memstore"+suffix, func(b *testing.B) { benchSendCheck(b, memstore.New(), api, protected) })
		b.Run("sqlite"+suffix, func(b *testing.B) { benchSendCheck(b, sqlite(b), api, protected) })
		if dsn := os.Getenv("VERIFY_POSTGRES_DSN"); dsn != "" {
			b.Run("postgres"+suffix, func(b *testing.B) {
				st := benchPostgres(b, dsn)
				var opts []verify.Option
				if protected {
					opts = append(opts, verify.WithLimiter(verify.NewStoreLimiter(st)))
				}
				benchSendCheck(b, st, api, protected, opts...)
			})
		}
	}
}

// benchPostgres opens a store on a new schema of the database dsn names,
// dropped when the benchmark ends.
func benchPostgres(b *testing.B, dsn string) *sqlstore.Store {
	ctx := context.Background()
	admin, err := sqlstore.Open(ctx, dsn, sqlstore.WithoutMigrate())
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	schema := fmt.Sprintf("bench_%d", time.Now().UnixNano())
	if _, err := admin.DB().ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if st, err := sqlstore.Open(ctx, dsn, sqlstore.WithoutMigrate()); err == nil {
			st.DB().ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE")
			st.Close()
		}
	})
	u, err := url.Parse(dsn)
	if err != nil {
		b.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	st, err := sqlstore.Open(ctx, u.String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func benchSendCheck(b *testing.B, store verify.Store, api benchAPI, protected bool, opts ...verify.Option) {
	ctx := context.Background()
	book := &codeBook{}
	p := verify.NoProtection()
	if protected {
		p = verify.DefaultProtection()
	}
	eng, err := verify.New(store, append([]verify.Option{verify.WithChannels(book), verify.WithSecret(testSecret),
		verify.WithLogger(discard), verify.WithProtection(p)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	if err := SetupCatalog(ctx, eng, "Acme"); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(New(eng, WithSID(testSID), WithAPIKeys(testAPIKey), WithAdminKeys(testAdminKey),
		WithLogger(discard), WithTrustProxy()))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4 * runtime.GOMAXPROCS(0)}}
	defer client.CloseIdleConnections()

	post := func(ip, path, body string) ([]byte, error) {
		req, err := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set(api.header, api.key)
		req.Header.Set("X-Forwarded-For", ip)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer res.Body.Close()
		out, err := io.ReadAll(res.Body)
		if err == nil && res.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %d %s", path, res.StatusCode, out)
		}
		return out, err
	}

	var n atomic.Int64
	b.SetParallelism(4) // 4 clients per CPU
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var sent struct {
			ID   string `json:"id"` // ThunderSMS
			Data struct {
				VerifyID string `json:"verify_id"` // Kaleyra
			} `json:"data"`
		}
		for pb.Next() {
			// Another user each time: another IP, and a number spread
			// over 5,000 prefixes, as real traffic is.
			i := int(n.Add(1))
			ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
			path, body := api.send(fmt.Sprintf("+47%04d%04d", 4000+i%5000, i/5000))
			out, err := post(ip, path, body)
			if err != nil {
				b.Error(err)
				return
			}
			sent.ID, sent.Data.VerifyID = "", ""
			if err := json.Unmarshal(out, &sent); err != nil {
				b.Error(err)
				return
			}
			id := sent.ID + sent.Data.VerifyID
			code, _ := book.codes.LoadAndDelete(id)
			path, body = api.check(id, code.(string))
			out, err = post(ip, path, body)
			if err != nil {
				b.Error(err)
				return
			}
			if bytes.Contains(out, []byte(`"status":"invalid"`)) {
				b.Errorf("check: %s", out)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}
