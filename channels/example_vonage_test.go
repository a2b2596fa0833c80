package channels_test

import (
	"log"
	"os"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/memstore"
)

func ExampleNewVonage() {
	sms, err := channels.NewVonage(channels.VonageConfig{
		APIKey:    os.Getenv("VONAGE_API_KEY"),
		APISecret: os.Getenv("VONAGE_API_SECRET"),
		From:      "Acme",
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
