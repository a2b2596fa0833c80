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

// BenchmarkServerSendCheck measures one Kaleyra-style generate and one
// validate over HTTP on loopback, by concurrent clients, on memstore and
// on a SQLite file. It reports pairs/s.
func BenchmarkServerSendCheck(b *testing.B) {
	b.Run("memstore", func(b *testing.B) { benchSendCheck(b, memstore.New()) })
	b.Run("sqlite", func(b *testing.B) {
		st, err := sqlstore.Open(context.Background(), "sqlite:"+filepath.Join(b.TempDir(), "bench.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		benchSendCheck(b, st)
	})
}

func benchSendCheck(b *testing.B, store verify.Store) {
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

	post := func(path string, body []byte) ([]byte, error) {
		req, err := http.NewRequest("POST", srv.URL+"/v1/"+testSID+path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("api-key", testAPIKey)
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
		var gen struct {
			Data struct {
				VerifyID string `json:"verify_id"`
			} `json:"data"`
		}
		for pb.Next() {
			mobile := fmt.Sprintf("+47%08d", 40000000+n.Add(1))
			out, err := post("/verify", []byte(`{"to":{"mobile":"`+mobile+`"}}`))
			if err != nil {
				b.Error(err)
				return
			}
			if err := json.Unmarshal(out, &gen); err != nil {
				b.Error(err)
				return
			}
			code, _ := book.codes.LoadAndDelete(gen.Data.VerifyID)
			if _, err := post("/verify/validate", []byte(`{"verify_id":"`+gen.Data.VerifyID+`","otp":"`+code.(string)+`"}`)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
}
