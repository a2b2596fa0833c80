// Package faults is a fault-injection suite for the engine and sqlstore on
// a real PostgreSQL. It has no code of its own: everything is in its tests.
//
// TestFaults starts a private PostgreSQL cluster with PostgreSQL's default
// durability (fsync, synchronous_commit and full_page_writes on), so that
// a crash of the server loses no acknowledged commit, and runs its
// scenarios on it, each in a schema of its own:
//
//   - KillWorker: engines in several worker processes send and deliver
//     fallback steps; a worker is killed with SIGKILL while one of its
//     deliveries is in flight, and started again, twice. Afterwards no step
//     of any open verification is missing, no Send that returned success
//     lost its verification, every message in flight at a kill is sent
//     again, and the duplicates (the same Message.ID delivered twice) stay
//     within what the kills can explain.
//   - SlowBacklog: many steps fall due at once while the provider takes
//     300–800 ms per message and two engines run Run: no step is sent twice.
//   - ReadOnly: the server refuses writes (default_transaction_read_only);
//     Send answers the store-unavailable error and hands nothing to a
//     channel, and succeeds again once writes are allowed.
//   - RestartImmediate: the server is restarted with pg_ctl restart
//     -m immediate under load. Every error a caller sees is a *verify.Error
//     (the store-unavailable error, or another refusal), every worker sends
//     successfully again within a few seconds of the server accepting
//     connections, without being restarted, and every open verification
//     still verifies with the code its messages carried.
//
// A worker is the test binary itself, re-executed with FAULTS_ROLE=worker:
// TestMain then runs the worker instead of the tests. Each worker opens its
// own Store and Engine on the scenario's schema (all engines share one
// secret, so any engine can check any code), runs Engine.Run, and calls
// Send for the recipients the parent hands out. Its channels POST every
// message to an HTTP sink in the parent, which records each delivery (so
// the parent knows the codes and counts duplicates by Message.ID) and can
// answer slowly; the workers report the outcome of every call to the same
// server. The engines use the wall clock with short durations (a 3 s lease,
// a 1 s send timeout, steps 1–3 s apart).
//
// Run it with
//
//	go test -race -v ./sqlstore/faults/
//
// (about 45 s on two cores; it also runs as part of go test ./...; -v
// prints each scenario's figures). It needs the PostgreSQL server binaries
// under /usr/lib/postgresql/*/bin (the Debian and Ubuntu package
// postgresql; the highest version is used). Run as root, as CI does, it
// runs initdb and pg_ctl as the postgres user through runuser, in a
// directory under os.TempDir() (or /tmp, if the postgres user cannot reach
// that); otherwise as the current user. The cluster listens on a free
// loopback port and is removed when the test ends. Without the binaries
// the test is skipped, except under CI=true, where it fails. It does not
// use VERIFY_POSTGRES_DSN: the shared CI cluster runs with fsync and
// synchronous_commit off, where an immediate restart can lose
// acknowledged commits.
package faults
