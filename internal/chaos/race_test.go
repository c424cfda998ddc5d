//go:build race

package chaos

// raceBuild: the test binary has the race detector, and so gets the
// flashgrab binary it runs (the build then reuses the test's compiled
// packages instead of compiling them all a second time).
const raceBuild = true
