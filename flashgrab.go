// Package flashgrab is the domain vocabulary of flash sales and red packets:
// sales and the orders their grabs win, red packets and their shares, the
// settlement events a won grab produces, the limits on each, and the errors
// every layer reports. It imports nothing of the project and no storage or
// transport library: engine (Redis) and settle (MySQL) implement these types,
// and api maps them, and its errors, to HTTP.
package flashgrab

// IDRule is the rule ValidID checks, as messages state it.
const IDRule = "1-64 of [A-Za-z0-9_-]"

// InvalidID is the error for a field that holds no valid id: one rule, one
// message, wherever an id comes in.
func InvalidID(field string) error { return Invalid(field, "must be "+IDRule) }

// ValidID reports whether s is an acceptable id for a sale, user, account or
// idempotency key (IDRule). The API checks user ids with it too. (A loop,
// not a regexp: every grab checks three ids.)
func ValidID(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
