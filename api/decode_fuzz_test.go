package api

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// FuzzDecode feeds any body to the strict decoder (its key scan is written by
// hand, and every client reaches it) as a sale's create request does. It must
// never panic, must refuse with a bad request and nothing else, and what it
// accepts must be one JSON object whose keys, as encoding/json's tokenizer
// reads them, are each a field of the request exactly once, with the values
// encoding/json would decode.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"id":"s1","merchant_id":"m","price_cents":100,"stock":5,"per_user_limit":1,"starts_at":"2026-01-01T00:00:00Z","ends_at":"2027-01-01T00:00:00Z"}`,
		`{"stock":1,"stock":2}`, `{"STOCK":1}`, `{"st\u006fck":1}`, `{"id":"a\"b","stock":[1,{"x":"}"}]}`,
		`{"shards":2}`, `[1]`, `{`, `{"id":`, `"x"`, `{"stock":1,}`, `{} {}`, `{"id":"\`, ` `, `{"stock":1e3}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetBody(body)
		var got createSaleRequest
		err := decode(&ctx, &got, false)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != fasthttp.StatusBadRequest || ae.code != "bad_request" {
				t.Fatalf("body %q: refused with %v, want a 400", body, err)
			}
			return
		}
		keys, ok := topLevelKeys(body)
		if !ok {
			t.Fatalf("body %q accepted, but encoding/json does not read it as one object", body)
		}
		fields := fieldsOf(reflect.TypeFor[createSaleRequest]())
		seen := map[string]bool{}
		for _, k := range keys {
			known := false
			for _, fd := range fields {
				known = known || fd.name == k
			}
			if !known || seen[k] {
				t.Fatalf("body %q accepted with key %q (known %v, seen before %v)", body, k, known, seen[k])
			}
			seen[k] = true
		}
		var want createSaleRequest
		if err := stdjson.Unmarshal(body, &want); err != nil {
			t.Fatalf("body %q accepted, but encoding/json refuses it: %v", body, err)
		}
		if !sameRequest(got, want) {
			t.Fatalf("body %q decoded as %+v, encoding/json gives %+v", body, got, want)
		}
	})
}

// topLevelKeys reads body as exactly one JSON object with encoding/json's
// tokenizer and returns its keys, unescaped, in order.
func topLevelKeys(body []byte) ([]string, bool) {
	dec := stdjson.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != stdjson.Delim('{') {
		return nil, false
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		k, ok := tok.(string)
		if !ok {
			return nil, false
		}
		keys = append(keys, k)
		var v stdjson.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
	}
	if tok, err := dec.Token(); err != nil || tok != stdjson.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return keys, true
}

// sameRequest compares two decoded create requests by value: times by the
// instant (a zone is a pointer), the optional shards by what they point to.
func sameRequest(a, b createSaleRequest) bool {
	if (a.Shards == nil) != (b.Shards == nil) || a.Shards != nil && *a.Shards != *b.Shards {
		return false
	}
	if !a.StartsAt.Equal(b.StartsAt) || !a.EndsAt.Equal(b.EndsAt) {
		return false
	}
	a.Shards, b.Shards = nil, nil
	a.StartsAt, b.StartsAt, a.EndsAt, b.EndsAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return a == b
}
