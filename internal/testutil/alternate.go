package testutil

import (
	"runtime"
	"testing"
	"time"
)

// Rate is what Alternate measured of one contender over all its rounds:
// operations a second, and heap allocations per operation.
type Rate struct {
	PerSecond   float64
	AllocsPerOp float64
}

// Ratio is r's rate as a fraction of ref's.
func (r Rate) Ratio(ref Rate) float64 { return r.PerSecond / ref.PerSecond }

// Alternate measures contenders in turn, each run(n) doing n operations:
// in each of rounds rounds every contender does its share of b.N, in an
// order that rotates from round to round. Whatever drifts during a run (a
// warming cache, a filling table, a growing heap, a neighbour on a shared
// machine) so falls on all of them alike, and their ratios hold where each
// one's own figure moves. The benchmark's timer runs for contenders[0]
// alone: its ns/op and allocs/op are the first contender's. Every
// contender does b.N operations in all.
func Alternate(b *testing.B, rounds int, contenders ...func(n int)) []Rate {
	b.Helper()
	rounds = max(min(rounds, b.N), 1)
	elapsed := make([]time.Duration, len(contenders))
	mallocs := make([]uint64, len(contenders))
	var ms runtime.MemStats
	b.StopTimer()
	b.ResetTimer()
	for r := range rounds {
		n := b.N / rounds
		if r == rounds-1 {
			n = b.N - n*(rounds-1)
		}
		for k := range contenders {
			i := (k + r) % len(contenders)
			runtime.ReadMemStats(&ms)
			before := ms.Mallocs
			if i == 0 {
				b.StartTimer()
			}
			start := time.Now()
			contenders[i](n)
			elapsed[i] += time.Since(start)
			if i == 0 {
				b.StopTimer()
			}
			runtime.ReadMemStats(&ms)
			mallocs[i] += ms.Mallocs - before
		}
	}
	rates := make([]Rate, len(contenders))
	for i := range rates {
		rates[i] = Rate{PerSecond: float64(b.N) / elapsed[i].Seconds(), AllocsPerOp: float64(mallocs[i]) / float64(b.N)}
	}
	return rates
}
