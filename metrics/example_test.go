package metrics_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/openverify/verify"
	"github.com/openverify/verify/channels"
	"github.com/openverify/verify/memstore"
	"github.com/openverify/verify/metrics"
)

// A server that exposes the engine's metrics on /metrics, beside the Go
// runtime's.
func Example() {
	m := metrics.New()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m, collectors.NewGoCollector())

	eng, err := verify.New(memstore.New(),
		verify.WithChannels(channels.NewConsole("sms", os.Stdout)),
		verify.WithSecret([]byte("a secret of at least 16 bytes, from your config")),
		verify.WithObserver(m))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	go eng.Run(ctx)

	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	log.Fatal(http.ListenAndServe("localhost:9090", nil))
}

// Two engines in one process, told apart by a const label.
func ExampleWithConstLabels() {
	reg := prometheus.NewRegistry()
	for _, name := range []string{"customers", "staff"} {
		m := metrics.New(metrics.WithConstLabels(prometheus.Labels{"engine": name}))
		reg.MustRegister(m)
		if _, err := verify.New(memstore.New(), verify.WithObserver(m),
			verify.WithSecret([]byte("a secret of at least 16 bytes, from your config"))); err != nil {
			log.Fatal(err)
		}
	}

	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			fmt.Println(mf.GetName(), mt.GetLabel()[0].GetValue(), mt.GetLabel()[1].GetValue(), mt.GetCounter().GetValue())
		}
	}
	// Output:
	// openverify_sends_refused_total customers blocked 0
	// openverify_sends_refused_total customers rate_limited 0
	// openverify_sends_refused_total staff blocked 0
	// openverify_sends_refused_total staff rate_limited 0
}
