package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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

func benchStores(b *testing.B, api benchAPI) {
	b.Run("memstore", func(b *testing.B) { benchSendCheck(b, memstore.New(), api) })
	b.Run("sqlite", func(b *testing.B) {
		st, err := sqlstore.Open(context.Background(), "sqlite:"+filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		benchSendCheck(b, st, api)
	})
}

func benchSendCheck(b *testing.B, store verify.Store, api benchAPI) {
	ctx := context.Background()
	book := &codeBook{}
	eng, err := verify.New(store, verify.WithChannels(book), verify.WithSecret(testSecret),
		verify.WithLogger(discard), verify.WithProtection(verify.NoProtection()))
	if err != nil {
		b.Fatal(err)
	}
	if err := SetupCatalog(ctx, eng, "Acme"); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(New(eng, WithSID(testSID), WithAPIKeys(testAPIKey), WithAdminKeys(testAdminKey), WithLogger(discard)))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4 * runtime.GOMAXPROCS(0)}}
	defer client.CloseIdleConnections()

	post := func(path, body string) ([]byte, error) {
		req, err := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set(api.header, api.key)
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
			out, err := post(api.send(fmt.Sprintf("+47%08d", 40000000+n.Add(1))))
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
			out, err = post(api.check(id, code.(string)))
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
