// Command openverify is OpenVerify's runnable HTTP server: it speaks the wire
// formats of Kaleyra Verify, WAYSCloud Verify and ThunderSMS Verify over one
// engine, with admin endpoints, a console for operators and
// delivery-report webhooks.
//
// With no flags and no environment it keeps its state in the SQLite file
// openverify.db in the working directory and writes the codes it "sends" to
// standard output:
//
//	go run ./cmd/openverify
//
// The handlers are package httpapi, which a Go service can mount in its own
// mux. See README.md in this directory for the flags, the environment variables
// that configure real channels, and a curl call for every endpoint.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the program at once
	}()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "openverify:", err)
		os.Exit(1)
	}
}
