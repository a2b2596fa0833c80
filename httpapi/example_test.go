package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/httpapi"
	"github.com/openverify/verify/memstore"
)

// A host mounts the handler in its own mux, next to its own routes.
func ExampleNew() {
	ctx := context.Background()
	sms := channels.NewRecorder("sms")
	eng, err := verify.New(memstore.New(), verify.WithChannels(sms),
		verify.WithSecret([]byte("0123456789abcdef0123456789abcdef")))
	if err != nil {
		panic(err)
	}
	// The default flow, and the per-channel flows the WAYSCloud API uses.
	flows, err := httpapi.SetupCatalog(ctx, eng, []verify.Channel{sms}, "Acme")
	if err != nil {
		panic(err)
	}
	api := httpapi.New(eng, httpapi.Config{
		SID:          "ACME",
		APIKeys:      []string{"a-long-random-api-key"},
		AdminKeys:    []string{"a-long-random-admin-key"},
		Channels:     []verify.Channel{sms},
		ChannelFlows: flows,
	})

	mux := http.NewServeMux()
	mux.Handle("/v1/", api)     // Kaleyra- and WAYSCloud-style
	mux.Handle("/api/v2/", api) // ThunderSMS-style
	mux.Handle("/admin/", api)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "the host's own page") })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/ACME/verify", strings.NewReader(`{"to":{"mobile":"+4791234567"}}`))
	req.Header.Set("api-key", "a-long-random-api-key")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	fmt.Println(res.Status, len(sms.Messages()), "message sent")

	// Without a key: refused.
	res, err = http.Post(srv.URL+"/v1/ACME/verify", "application/json", strings.NewReader(`{"to":{"mobile":"+4791234567"}}`))
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	fmt.Println(res.Status)
	// Output:
	// 200 OK 1 message sent
	// 401 Unauthorized
}
