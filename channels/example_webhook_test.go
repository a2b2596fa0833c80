package channels_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"time"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/memstore"
)

// A Webhook channel hands codes to an in-house gateway. Here the gateway is
// a local test server that checks the signature, as a real one must.
func ExampleNewWebhook() {
	secret := []byte(os.Getenv("GATEWAY_SECRET"))
	if len(secret) == 0 {
		secret = []byte("example-secret-0123456789abcdef")
	}

	gateway := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get(channels.WebhookSignatureHeader)
		if err := channels.VerifyWebhookSignature(secret, sig, body, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		var p channels.WebhookPayload
		_ = json.Unmarshal(body, &p)
		fmt.Printf("gateway: deliver a %d-digit code to %s over %s\n", len(p.Code), p.To, p.Channel)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"gw-1"}`)
	}))
	defer gateway.Close()

	viber, err := channels.NewWebhook(channels.WebhookConfig{
		Name:   "viber",
		URL:    gateway.URL,
		Secret: secret,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	eng, err := verify.New(memstore.New(),
		verify.WithChannels(viber),
		verify.WithSecret([]byte("engine-secret-0123456789abcdef!!")),
	)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{{Channel: "viber"}}}); err != nil {
		log.Fatal(err)
	}
	v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345678"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(v.Status, v.Deliveries[0].ProviderID)
	// Output:
	// gateway: deliver a 6-digit code to +4712345678 over viber
	// sent gw-1
}

// A gateway written in Go verifies each request before delivering it.
func ExampleVerifyWebhookSignature() {
	secret := []byte("example-secret-0123456789abcdef")
	handler := func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "unreadable", http.StatusBadRequest)
			return
		}
		if err := channels.VerifyWebhookSignature(secret, r.Header.Get(channels.WebhookSignatureHeader), body, time.Now(), 5*time.Minute); err != nil {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		var p channels.WebhookPayload
		if err := json.Unmarshal(body, &p); err != nil {
			http.Error(w, "bad payload", http.StatusBadRequest)
			return
		}
		// De-duplicate on r.Header.Get("Idempotency-Key") (== p.ID), then
		// deliver p.Body to p.To.
		w.WriteHeader(http.StatusAccepted)
	}

	// A signed request, as the Webhook channel sends it.
	body := []byte(`{"id":"v-1","to":"+4712345678","code":"483920","body":"Your code is 483920"}`)
	req := httptest.NewRequest(http.MethodPost, "/send", bytes.NewReader(body))
	req.Header.Set(channels.WebhookSignatureHeader, channels.SignWebhook(secret, body, time.Now()))
	rec := httptest.NewRecorder()
	handler(rec, req)
	fmt.Println(rec.Code)

	// The same request with the code changed in transit.
	req = httptest.NewRequest(http.MethodPost, "/send", bytes.NewReader([]byte(`{"id":"v-1","to":"+4712345678","code":"000000"}`)))
	req.Header.Set(channels.WebhookSignatureHeader, channels.SignWebhook(secret, body, time.Now()))
	rec = httptest.NewRecorder()
	handler(rec, req)
	fmt.Println(rec.Code)
	// Output:
	// 202
	// 403
}
