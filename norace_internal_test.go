//go:build !race

package verify

// raceEnabled is true when the tests run under the race detector, which
// drops sync.Pool's items at random, so pooled work allocates.
const raceEnabled = false
