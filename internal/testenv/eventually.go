package testenv

import (
	"testing"
	"time"
)

// pollEvery is how long Eventually waits between two looks: short next to
// any timeout, long enough not to hammer the servers the condition reads.
const pollEvery = 5 * time.Millisecond

// Eventually calls cond until it reports ok, and fails t when timeout has
// passed without that, with what cond last said (why should name what it saw
// and what it wants, "3 orders, want 5"). cond runs on the caller's
// goroutine, so it may itself fail t. The timeout is a bound on a broken
// test, not a measure: make it generous.
func Eventually(t testing.TB, timeout time.Duration, cond func() (ok bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not so after %v: %s", timeout, why)
		}
		time.Sleep(pollEvery)
	}
}
