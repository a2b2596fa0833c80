package verify_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/benbjohnson/clock"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/memstore"
)

// The basic cycle: a flow, a Send, a wrong Check and a right one.
func Example() {
	ctx := context.Background()
	sms := channels.NewRecorder("sms")
	eng, err := verify.New(memstore.New(),
		verify.WithChannels(sms),
		verify.WithSecret([]byte("a secret of at least 16 bytes, from your config")))
	if err != nil {
		panic(err)
	}
	if _, err := eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true,
		Steps: []verify.Step{{Channel: "sms", From: "ACME"}}}); err != nil {
		panic(err)
	}

	v, err := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345678"}})
	if err != nil {
		panic(err)
	}
	fmt.Println("status:", v.Status)

	_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: "000000x"})
	var ve *verify.Error
	if errors.As(err, &ve) {
		fmt.Println("wrong code:", ve.Code, ve.Message, "- attempts left:", ve.AttemptsRemaining)
	}

	m, _ := sms.Last() // what the user received
	v, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
	fmt.Println("right code:", v.Status, err)
	// Output:
	// status: sent
	// wrong code: E912 Invalid Request/OTP - attempts left: 4
	// right code: verified <nil>
}

// New builds an engine; every option has a documented default.
func ExampleNew() {
	eng, err := verify.New(memstore.New(),
		verify.WithChannels(channels.NewRecorder("sms"), channels.NewRecorder("email")),
		verify.WithSecret([]byte("current secret, 32 random bytes"), []byte("previous secret, still accepted")),
		verify.WithMaxSends(3),
	)
	fmt.Println(eng != nil, err)
	// Output: true <nil>
}

// A two-step flow: SMS first, email 30 seconds later if the code has not
// been verified. A mock clock and ProcessDue make the fallback
// deterministic.
func ExampleEngine_Send() {
	ctx := context.Background()
	clk := clock.NewMock()
	sms, email := channels.NewRecorder("sms"), channels.NewRecorder("email")
	eng, _ := verify.New(memstore.New(), verify.WithChannels(sms, email), verify.WithClock(clk),
		verify.WithSecret([]byte("a secret of at least 16 bytes, from your config")))
	flow, _ := eng.CreateFlow(ctx, verify.Flow{Name: "signup", Steps: []verify.Step{
		{Channel: "sms"},
		{Channel: "email", After: 30 * time.Second},
	}})

	v, err := eng.Send(ctx, verify.SendRequest{FlowID: flow.ID, ForeignID: "user-17",
		To: verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"}})
	fmt.Println(v.Status, v.ForeignID, len(v.Deliveries), err)

	clk.Add(30 * time.Second)
	n, _ := eng.ProcessDue(ctx)
	fmt.Println("fallback steps sent:", n, "emails:", email.Len())
	// Output:
	// sent user-17 1 <nil>
	// fallback steps sent: 1 emails: 1
}

// Check answers with typed errors that say why a code was refused.
func ExampleEngine_Check() {
	ctx := context.Background()
	sms := channels.NewRecorder("sms")
	eng, _ := verify.New(memstore.New(), verify.WithChannels(sms),
		verify.WithSecret([]byte("a secret of at least 16 bytes, from your config")))
	eng.CreateFlow(ctx, verify.Flow{Name: "pin", MaxAttempts: 2, Default: true, Steps: []verify.Step{{Channel: "sms"}}})
	v, _ := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345678"}})

	for _, code := range []string{"", "12-34", "000000x", "000000y", "000000z"} {
		_, err := eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: code})
		switch {
		case errors.Is(err, verify.ErrInvalidOTP):
			ve, _ := verify.AsError(err)
			fmt.Println(ve.Code, "remaining", ve.AttemptsRemaining)
		default:
			ve, _ := verify.AsError(err)
			fmt.Println(ve.Code, ve.Message, ve.HTTPStatus())
		}
	}
	// Output:
	// E801 otp field is mandatory 400
	// E803 OTP can contain only alphanumeric values. 400
	// E912 remaining 1
	// E912 remaining 0
	// E911 Exceeded max number of attempts 429
}

// Observers run on the engine's hot path, so this one only hands each event
// to a buffered channel (dropping it if the consumer falls behind) and a
// separate goroutine does the slow work.
func ExampleWithObserver() {
	ctx := context.Background()
	events := make(chan verify.Event, 1024)
	forward := verify.ObserverFunc(func(_ context.Context, ev verify.Event) {
		select {
		case events <- ev:
		default: // consumer behind: drop rather than slow Send and Check
		}
	})
	sms := channels.NewRecorder("sms")
	eng, _ := verify.New(memstore.New(), verify.WithChannels(sms), verify.WithObserver(forward),
		verify.WithSecret([]byte("a secret of at least 16 bytes, from your config")))
	eng.CreateFlow(ctx, verify.Flow{Name: "login", Default: true, Steps: []verify.Step{{Channel: "sms"}}})
	v, _ := eng.Send(ctx, verify.SendRequest{To: verify.Recipient{Phone: "+4712345678"}})
	m, _ := sms.Last()
	eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: m.Code})
	close(events)

	for ev := range events { // in a real program: a goroutine feeding a queue or metrics
		fmt.Println(strings.TrimSpace(string(ev.Type) + " " + ev.Channel))
	}
	// Output:
	// created
	// sent sms
	// verified
}
