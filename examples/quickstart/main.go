// Command quickstart walks through OpenVerify on the in-memory store: it
// creates an SMS template and a two-step flow (SMS, then email if the code
// is not verified in time), sends a code, lets the email fallback fire,
// checks a wrong code and then the right one, printing each result.
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -after 5s
//	go run ./examples/quickstart -db sqlite:quickstart.db
//	go run ./examples/quickstart -db postgres://user:pass@localhost/verify
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/memstore"
	"github.com/openverify/verify/sqlstore"
)

func main() {
	after := flag.Duration("after", 2*time.Second, "how long the email fallback waits after the SMS")
	db := flag.String("db", "", "a sqlstore DSN (sqlite:path, file:path or postgres://...); empty: in memory")
	flag.Parse()
	if err := run(context.Background(), *after, *db); err != nil {
		log.Fatal(err)
	}
}

// phone is a Console channel that also remembers the last message, standing
// in for the user's handset.
type phone struct {
	*channels.Console
	mu   sync.Mutex
	last verify.Message
}

func (p *phone) Send(ctx context.Context, m verify.Message) (verify.Receipt, error) {
	p.mu.Lock()
	p.last = m
	p.mu.Unlock()
	return p.Console.Send(ctx, m)
}

func (p *phone) lastCode() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last.Code
}

func run(ctx context.Context, after time.Duration, dsn string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var store verify.Store = memstore.New()
	if dsn != "" {
		s, err := sqlstore.Open(ctx, dsn) // opens, and migrates the schema
		if err != nil {
			return err
		}
		defer s.Close()
		store = s
		fmt.Printf("store: %s\n", s.Dialect())
	}

	sms := &phone{Console: channels.NewConsole("sms", os.Stdout)}
	email := channels.NewConsole("email", os.Stdout)

	// In production the secret comes from your configuration, and every
	// instance uses the same one.
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, err := verify.New(store,
		verify.WithChannels(sms, email),
		verify.WithSecret(secret),
		verify.WithLogger(logger),
		verify.WithPollInterval(100*time.Millisecond))
	if err != nil {
		return err
	}

	tpl, err := eng.CreateTemplate(ctx, verify.Template{
		Name: "login-sms", Channel: "sms",
		Body: "{brand}: {code} is your login code. It is valid for {minutes} minutes.",
	})
	if err != nil {
		return err
	}
	fmt.Printf("template %s created: %s\n", tpl.Name, tpl.Status)
	if err := eng.ApproveTemplate(ctx, tpl.ID); err != nil {
		return err
	}
	fmt.Printf("template %s approved\n", tpl.Name)

	flow, err := eng.CreateFlow(ctx, verify.Flow{
		Name:    "login",
		Brand:   "Acme",
		Default: true,
		Steps: []verify.Step{
			{Channel: "sms", From: "ACME", Template: tpl.ID},
			{Channel: "email", From: "no-reply@acme.example", After: after},
		},
	})
	if err != nil {
		return err
	}
	fmt.Printf("flow %q: %d-digit codes, valid %s, %d attempts, sms then email after %s\n",
		flow.Name, flow.CodeLength, flow.TTL, flow.MaxAttempts, after)

	// Run delivers fallback steps when they fall due.
	done := make(chan error, 1)
	go func() { done <- eng.Run(ctx) }()

	v, err := eng.Send(ctx, verify.SendRequest{
		To:        verify.Recipient{Phone: "+4712345678", Email: "ana@example.com"},
		ForeignID: "user-42",
	})
	if err != nil {
		return err
	}
	fmt.Printf("send: verification %s is %s, expires %s\n", v.ID, v.Status, v.ExpiresAt.Format(time.TimeOnly))

	fmt.Printf("waiting %s for the email fallback...\n", after)
	deadline := time.Now().Add(after + 5*time.Second)
	for {
		got, err := eng.Get(ctx, v.ID)
		if err != nil {
			return err
		}
		if len(got.Deliveries) >= 2 {
			for _, d := range got.Deliveries {
				fmt.Printf("  delivery %s on %s: %s\n", d.ID, d.Channel, d.Status)
			}
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the fallback did not fire")
		}
		time.Sleep(50 * time.Millisecond)
	}

	_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: "000000x"})
	var ve *verify.Error
	if errors.As(err, &ve) {
		fmt.Printf("check wrong code: %s %s (attempts remaining %d)\n", ve.Code, ve.Message, ve.AttemptsRemaining)
	}

	v, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: sms.lastCode()})
	if err != nil {
		return err
	}
	fmt.Printf("check right code: %s at %s after %d attempts\n", v.Status, v.VerifiedAt.Format(time.TimeOnly), v.Attempts)

	_, err = eng.Check(ctx, verify.CheckRequest{VerifyID: v.ID, Code: sms.lastCode()})
	if errors.As(err, &ve) {
		fmt.Printf("check again: %s %s\n", ve.Code, ve.Message)
	}

	cancel()
	return <-done
}
