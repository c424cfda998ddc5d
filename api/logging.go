package api

import (
	"fmt"
	"log/slog"
	"regexp"
)

// fasthttpLogger routes fasthttp's own messages into the server's slog
// logger, scrubbed: fasthttp quotes the raw bytes of a request it cannot
// parse ("error when reading request headers: … contents: …"), and those
// carry the client's Authorization header.
type fasthttpLogger struct{ log *slog.Logger }

// Printf logs one fasthttp message with its secrets removed.
func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn("http server", "detail", scrubSecrets(fmt.Sprintf(format, args...)))
}

// secretPatterns match what must never reach a log: the value of an
// Authorization or Cookie header (up to the end of its line, written raw or
// escaped by %q), a bearer credential anywhere, and anything shaped like a
// JWT.
var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)((?:proxy-)?authorization|cookie)(\s*:\s*)(?:[^\r\n\\"]|\\[^rn])*`),
	regexp.MustCompile(`(?i)(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+`),
	regexp.MustCompile(`()()eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*`),
}

// scrubSecrets replaces every credential in s by "[redacted]".
func scrubSecrets(s string) string {
	for _, p := range secretPatterns {
		s = p.ReplaceAllString(s, "${1}${2}[redacted]")
	}
	return s
}
