package channels_test

import (
	"log"
	"net/http"
	"os"
	"time"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/memstore"
)

// SMS first, then a voice call that reads the code out if the code has not
// been checked 60 seconds later.
func ExampleNewTwilio() {
	sms, err := channels.NewTwilio(channels.TwilioConfig{
		AccountSID:        os.Getenv("TWILIO_ACCOUNT_SID"),
		AuthToken:         os.Getenv("TWILIO_AUTH_TOKEN"),
		From:              "+15557122661",
		StatusCallbackURL: "https://example.com/hooks/twilio",
	})
	if err != nil {
		log.Fatal(err)
	}
	voice, err := channels.NewTwilio(channels.TwilioConfig{
		Kind:       channels.TwilioVoice,
		AccountSID: os.Getenv("TWILIO_ACCOUNT_SID"),
		AuthToken:  os.Getenv("TWILIO_AUTH_TOKEN"),
		From:       "+15557122661",
	})
	if err != nil {
		log.Fatal(err)
	}
	eng, err := verify.New(memstore.New(), verify.WithChannels(sms, voice))
	if err != nil {
		log.Fatal(err)
	}
	_ = verify.Flow{Name: "login", Default: true, Steps: []verify.Step{
		{Channel: "sms"},
		{Channel: "voice", After: 60 * time.Second},
	}}
	_ = eng
}

// The status callback handler hands Twilio's delivery reports to the
// engine.
func ExampleParseTwilioStatusCallback() {
	var eng *verify.Engine // built with verify.New
	token := os.Getenv("TWILIO_AUTH_TOKEN")
	http.HandleFunc("POST /hooks/twilio", func(w http.ResponseWriter, r *http.Request) {
		messageID, status, detail, err := channels.ParseTwilioStatusCallback(r, token, "https://example.com/hooks/twilio")
		if err != nil {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		if err := eng.ReportDelivery(r.Context(), messageID, status, detail); err != nil {
			log.Printf("delivery report for %s: %v", messageID, err)
		}
		w.WriteHeader(http.StatusNoContent)
	})
}
