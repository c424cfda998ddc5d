//go:build !race

package chaos

// raceBuild: see race_test.go.
const raceBuild = false
