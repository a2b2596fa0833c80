package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/httpapi"
	"github.com/openverify/verify/memstore"
)

// newEngine is an engine with one recording SMS channel and a default flow.
func newEngine() (*verify.Engine, *channels.Recorder) {
	sms := channels.NewRecorder("sms")
	eng, err := verify.New(memstore.New(), verify.WithChannels(sms),
		verify.WithSecret([]byte("0123456789abcdef0123456789abcdef")))
	if err != nil {
		panic(err)
	}
	if err := httpapi.SetupCatalog(context.Background(), eng, "Acme"); err != nil {
		panic(err)
	}
	return eng, sms
}

func post(url, body string, header ...string) string {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	return res.Status
}

// A host serves every endpoint with New, in its own mux next to its own
// routes.
func ExampleNew() {
	eng, sms := newEngine()
	api := httpapi.New(eng,
		httpapi.WithSID("ACME"),
		httpapi.WithAPIKeys("a-long-random-api-key"),
		httpapi.WithAdminKeys("a-long-random-admin-key"))

	mux := http.NewServeMux()
	mux.Handle("/v1/", api)     // Kaleyra- and WAYSCloud-style
	mux.Handle("/api/v2/", api) // ThunderSMS-style
	mux.Handle("/admin/", api)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "the host's own page") })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	fmt.Println(post(srv.URL+"/v1/ACME/verify", `{"to":{"mobile":"+4791234567"}}`, "api-key", "a-long-random-api-key"),
		len(sms.Messages()), "message sent")
	// Without a key: refused.
	fmt.Println(post(srv.URL+"/v1/ACME/verify", `{"to":{"mobile":"+4791234567"}}`))
	// Output:
	// 200 OK 1 message sent
	// 401 Unauthorized
}

// A host that authenticates requests its own way mounts one wire format
// behind an Authorizer: here, a session header its own middleware would
// check. Without WithAPIKeys or WithAuthorizer, a handler refuses every
// request.
func ExampleWAYSCloud() {
	eng, sms := newEngine()
	ways := httpapi.WAYSCloud(eng, httpapi.WithAuthorizer(func(r *http.Request) error {
		if r.Header.Get("X-Session") != "valid-session" {
			return errors.New("no session")
		}
		return nil
	}))
	mux := http.NewServeMux()
	mux.Handle("/v1/verify/", ways)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	fmt.Println(post(srv.URL+"/v1/verify/send", `{"to":"+4791234567","channel":"sms"}`, "X-Session", "valid-session"),
		len(sms.Messages()), "message sent")
	fmt.Println(post(srv.URL+"/v1/verify/send", `{"to":"+4791234567","channel":"sms"}`))
	// Output:
	// 200 OK 1 message sent
	// 401 Unauthorized
}

// The ThunderSMS API runs each request's channels as an ad-hoc flow. Its
// own message texts and sender IDs are refused unless the InlinePolicy
// allows them.
func ExampleThunderSMS() {
	eng, sms := newEngine()
	thunder := httpapi.ThunderSMS(eng,
		httpapi.WithAPIKeys("a-long-random-api-key"),
		httpapi.WithInlinePolicy(httpapi.InlinePolicy{Text: true, Senders: []string{"ACME"}}))
	srv := httptest.NewServer(thunder)
	defer srv.Close()

	body := `{"channels":[{"name":"sms","from":"ACME","recipient":{"to":"4791234567"}}],
		"payload":{"length":5,"timeout":60,"template":"ACME: {token} is your code"}}`
	fmt.Println(post(srv.URL+"/api/v2/verify/send", body, "Authorization", "Bearer a-long-random-api-key"))
	m, _ := sms.Last()
	fmt.Println(m.From, strings.Replace(m.Body, m.Code, "*****", 1))
	// Output:
	// 200 OK
	// ACME ACME: ***** is your code
}

// The admin API and console can be mounted alone, behind the host's own
// admin check.
func ExampleAdmin() {
	eng, _ := newEngine()
	admin := httpapi.Admin(eng, httpapi.WithAdminKeys("a-long-random-admin-key"))
	srv := httptest.NewServer(admin)
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/admin/flows", nil)
	req.Header.Set("X-Admin-Key", "a-long-random-admin-key")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	res.Body.Close()
	fmt.Println(res.Status)
	// Output:
	// 200 OK
}

// Each wire format mounted on its own, as package httpapi's documentation
// shows: the Kaleyra and WAYSCloud paths share /v1/, so they are mounted
// path by path.
func Example_mountEach() {
	eng, sms := newEngine()
	key := "a-long-random-api-key"
	mux := http.NewServeMux()
	kaleyra := httpapi.Kaleyra(eng, httpapi.WithAPIKeys(key))
	mux.Handle("/v1/{sid}/verify", kaleyra)
	mux.Handle("/v1/{sid}/verify/validate", kaleyra)
	ways := httpapi.WAYSCloud(eng, httpapi.WithAPIKeys(key))
	mux.Handle("/v1/verify/send", ways)
	mux.Handle("/v1/verify/check", ways)
	mux.Handle("/api/v2/verify/", httpapi.ThunderSMS(eng, httpapi.WithAPIKeys(key)))
	mux.Handle("/admin/", httpapi.Admin(eng, httpapi.WithAdminKeys("a-long-random-admin-key")))
	mux.Handle("/hooks/", httpapi.Hooks(eng, httpapi.WithKaleyraHook(httpapi.KaleyraHook{Secret: []byte("callback-secret")})))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	fmt.Println(post(srv.URL+"/v1/ACME/verify", `{"to":{"mobile":"+4791234561"}}`, "api-key", key))
	fmt.Println(post(srv.URL+"/v1/verify/send", `{"to":"+4791234562","channel":"sms"}`, "X-API-Key", key))
	fmt.Println(post(srv.URL+"/api/v2/verify/send", `{"channels":[{"name":"sms","recipient":{"to":"4791234563"}}]}`,
		"Authorization", "Bearer "+key))
	fmt.Println(len(sms.Messages()), "messages sent")
	// Output:
	// 200 OK
	// 200 OK
	// 200 OK
	// 3 messages sent
}
