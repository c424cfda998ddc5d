package wechat

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseNotify feeds arbitrary headers and bodies to ParseNotify. The
// clock is pinned to the committed valid seed's timestamp so that mutations
// of a valid notify get past the signature check's cheap rejections. It must
// never panic, and whatever it accepts must be a paid-or-not transaction of ours.
func FuzzParseNotify(f *testing.F) {
	ts, _ := strconv.ParseInt(vectorTS, 10, 64)
	cl := newTestClient(f, "", time.Unix(ts, 0))
	f.Add(vectorTS, headerNonce, "", certSerial, []byte(`{}`))
	f.Fuzz(func(t *testing.T, timestamp, nonce, signature, serial string, body []byte) {
		tx, err := cl.ParseNotify(NotifyHeader{Timestamp: timestamp, Nonce: nonce, Signature: signature, Serial: serial}, body)
		if err != nil {
			if tx != nil {
				t.Fatalf("error %v with a transaction", err)
			}
			return
		}
		if tx == nil || tx.MchID != "1900000109" || tx.AppID != "wxd678efh567hg6787" || tx.OutTradeNo == "" {
			t.Fatalf("accepted %+v", tx)
		}
		if tx.Paid && tx.TotalCents <= 0 {
			t.Fatalf("paid with amount %d", tx.TotalCents)
		}
	})
}

// TestFuzzSeedIsValidNotify makes sure the committed corpus really holds an
// accepted notify (and a refused probe), so the fuzzer starts from the deep path.
func TestFuzzSeedIsValidNotify(t *testing.T) {
	ts, _ := strconv.ParseInt(vectorTS, 10, 64)
	cl := newTestClient(t, "", time.Unix(ts, 0))
	for file, want := range map[string]error{"valid_notify": nil, "signtest_probe": ErrProbe} {
		b, err := os.ReadFile("testdata/fuzz/FuzzParseNotify/" + file)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 6 || lines[0] != "go test fuzz v1" {
			t.Fatalf("%s: unexpected corpus format", file)
		}
		var args [5]string
		for i, l := range lines[1:] {
			l = strings.TrimPrefix(strings.TrimPrefix(l, "string("), "[]byte(")
			if args[i], err = strconv.Unquote(strings.TrimSuffix(l, ")")); err != nil {
				t.Fatalf("%s line %d: %v", file, i+2, err)
			}
		}
		tx, err := cl.ParseNotify(NotifyHeader{args[0], args[1], args[2], args[3]}, []byte(args[4]))
		if !errors.Is(err, want) || (want == nil && (tx == nil || !tx.Paid || tx.TotalCents != 100)) {
			t.Fatalf("%s: got %+v, %v; want %v", file, tx, err, want)
		}
	}
}
