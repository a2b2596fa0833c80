//go:build race

package sqlstore_test

// raceEnabled is true when the tests run under the race detector, which
// slows pure-Go SQLite down some forty times.
const raceEnabled = true
