package channels_test

import (
	"errors"
	"log"
	"net/http"
	"os"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/memstore"
)

// Kaleyra on the India pod, with the DLT template ID Indian routes need and
// signed delivery reports.
func ExampleNewKaleyra() {
	sms, err := channels.NewKaleyra(channels.KaleyraConfig{
		SID:            os.Getenv("KALEYRA_SID"),
		APIKey:         os.Getenv("KALEYRA_API_KEY"),
		From:           "KLRHXA",
		TemplateID:     "1707162848701603303",
		BaseURL:        "https://api.in.kaleyra.io",
		CallbackURL:    "https://example.com/hooks/kaleyra",
		CallbackSecret: []byte(os.Getenv("KALEYRA_CALLBACK_SECRET")),
	})
	if err != nil {
		log.Fatal(err)
	}
	eng, err := verify.New(memstore.New(), verify.WithChannels(sms))
	if err != nil {
		log.Fatal(err)
	}
	_ = eng
}

func ExampleParseKaleyraDLR() {
	var eng *verify.Engine // built with verify.New
	secret := []byte(os.Getenv("KALEYRA_CALLBACK_SECRET"))
	http.HandleFunc("/hooks/kaleyra", func(w http.ResponseWriter, r *http.Request) {
		messageID, status, detail, err := channels.ParseKaleyraDLR(r, secret)
		if errors.Is(err, channels.ErrInvalidSignature) {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := eng.ReportDelivery(r.Context(), messageID, status, detail); err != nil {
			log.Printf("delivery report for %s: %v", messageID, err)
		}
	})
}
