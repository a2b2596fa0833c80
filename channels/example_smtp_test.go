package channels_test

import (
	"log"
	"os"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/memstore"
)

// An email channel through a provider's submission port (STARTTLS on 587).
func ExampleNewSMTP() {
	email, err := channels.NewSMTP(channels.SMTPConfig{
		Host:     "smtp.example.com",
		Username: os.Getenv("SMTP_USERNAME"),
		Password: os.Getenv("SMTP_PASSWORD"),
		From:     "Acme <no-reply@acme.example>",
		Subjects: map[string]string{"de": "Ihr Bestätigungscode", "fr": "Votre code de vérification"},
	})
	if err != nil {
		log.Fatal(err)
	}
	eng, err := verify.New(memstore.New(), verify.WithChannels(email))
	if err != nil {
		log.Fatal(err)
	}
	_ = eng
}
