package sqlstore_test

import (
	"context"
	"fmt"
	"log"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/sqlstore"
)

func Example() {
	ctx := context.Background()
	// A file ("sqlite:verify.db") or PostgreSQL ("postgres://...") works the
	// same way; Open migrates the schema.
	st, err := sqlstore.Open(ctx, "sqlite::memory:")
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	sms := channels.NewRecorder("sms")
	eng, err := verify.New(st, verify.WithChannels(sms), verify.WithSecret([]byte("a secret of at least 16 bytes")))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{{Channel: "sms"}}}); err != nil {
		log.Fatal(err)
	}
	v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345678"}})
	if err != nil {
		log.Fatal(err)
	}
	m, _ := sms.Last()
	v, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
	fmt.Println(v.Status, err)
	// Output: verified <nil>
}
