// Package chaos holds the chaos suite (issue 9 item 9): real faults injected
// into real processes under load, and the books compared with what the
// clients were answered. The suite is its tests: they build the flashgrab
// binary, run `serve` as subprocesses against redis-servers and a MySQL
// database of their own, kill, cut or flush them mid-load, wait for
// settlement to drain, then count every win answered 200 in MySQL and run
// `flashgrab reconcile`.
//
// `go test ./internal/chaos/` runs the short version (small load, a MySQL
// cut of a few seconds); FLASHGRAB_CHAOS=full (`make chaos`) runs the full
// one, with a 30 s MySQL cut, and prints the table.
package chaos
