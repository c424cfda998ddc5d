package api

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// decode reads a JSON body into v, a pointer to a request struct, strictly:
// field names match the struct's json names exactly (not case-insensitively,
// as sonic and encoding/json would), a field may appear once (neither
// decoder notices a duplicate: the last one would win), and unknown fields,
// malformed JSON and wrong types are bad requests whose message names the
// field and the rule. An empty body leaves v at its zero value when
// allowEmpty.
//
// The key check is a scan of the top-level object that allocates nothing,
// so the grab path stays allocation-free; explaining a failure may allocate.
func decode(ctx *fasthttp.RequestCtx, v any, allowEmpty bool) error {
	body := ctx.PostBody()
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return badRequest("request body is empty; a JSON object is required")
	}
	t := reflect.TypeOf(v).Elem()
	if err := checkKeys(body, fieldsOf(t)); err != nil {
		return err
	}
	if err := strictJSON.Unmarshal(body, v); err != nil {
		return badRequest(explain(body, t))
	}
	return nil
}

// requestField is one field of a request struct: its json name and type.
type requestField struct {
	name string
	typ  reflect.Type
}

var requestFields sync.Map // reflect.Type → []requestField

// fieldsOf lists t's json fields, once per type.
func fieldsOf(t reflect.Type) []requestField {
	if f, ok := requestFields.Load(t); ok {
		return f.([]requestField)
	}
	var fs []requestField
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("json"), ",")
		if !sf.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		fs = append(fs, requestField{name: name, typ: sf.Type})
	}
	requestFields.Store(t, fs)
	return fs
}

// checkKeys scans the top-level object of body and refuses a key that is not
// exactly one of fields, or one seen before. It leaves anything it cannot
// follow (malformed JSON, not an object) to the decoder, which reports it.
func checkKeys(body []byte, fields []requestField) error {
	var seen uint64 // request structs have fewer than 64 fields
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil
	}
	i++
	for {
		i = skipSpace(body, i)
		if i >= len(body) || body[i] != '"' {
			return nil // "}" of an empty object, or malformed
		}
		end := skipString(body, i)
		if end < 0 {
			return nil
		}
		key := body[i+1 : end-1]
		n := -1
		for j := range fields {
			if string(key) == fields[j].name {
				n = j
				break
			}
		}
		switch {
		case n < 0:
			return unknownField(key, fields)
		case n < 64 && seen&(1<<n) != 0:
			return badRequest(fmt.Sprintf("field %q appears more than once", key))
		case n < 64:
			seen |= 1 << n
		}
		i = skipSpace(body, end)
		if i >= len(body) || body[i] != ':' {
			return nil
		}
		if i = skipValue(body, skipSpace(body, i+1)); i < 0 {
			return nil
		}
		i = skipSpace(body, i)
		if i >= len(body) || body[i] != ',' {
			return nil // "}" ends the object; anything else is the decoder's to report
		}
		i++
	}
}

// unknownField words the refusal of key, pointing at the field it differs
// from only in case.
func unknownField(key []byte, fields []requestField) error {
	for _, f := range fields {
		if strings.EqualFold(string(key), f.name) {
			return badRequest(fmt.Sprintf("unknown field %q: field names are case-sensitive; did you mean %q?", key, f.name))
		}
	}
	if len(fields) == 0 {
		return badRequest(fmt.Sprintf("unknown field %q: this request takes no fields; send {} or no body", key))
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	return badRequest(fmt.Sprintf("unknown field %q: the fields are %s", key, strings.Join(names, ", ")))
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index just past the string that starts at b[i]
// (a '"'), or -1 when it does not end.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index just past the value that starts at b[i], or -1
// when it does not end. It follows strings and nesting, not the grammar.
func skipValue(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch c := b[i]; c {
		case '"':
			if i = skipString(b, i); i < 0 {
				return -1
			}
			if depth == 0 {
				return i
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
		i++
	}
	if depth == 0 {
		return i
	}
	return -1
}

// explain says why body does not decode into a t: where the JSON is
// malformed, or which field breaks which rule. It never names a Go type or
// quotes the decoder, and runs only on the error path.
func explain(body []byte, t reflect.Type) string {
	var raw any
	if err := stdjson.Unmarshal(body, &raw); err != nil {
		var se *stdjson.SyntaxError
		if errors.As(err, &se) {
			return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
		}
		return "malformed JSON"
	}
	var obj map[string]stdjson.RawMessage
	if stdjson.Unmarshal(body, &obj) != nil {
		return "the body must be a JSON object"
	}
	for _, f := range fieldsOf(t) {
		v, ok := obj[f.name]
		if !ok {
			continue
		}
		if stdjson.Unmarshal(v, reflect.New(f.typ).Interface()) != nil {
			return fmt.Sprintf("field %q must be %s", f.name, describe(f.typ))
		}
	}
	return "the body does not match the request's fields"
}

var timeType = reflect.TypeFor[time.Time]()

// describe names the JSON a field of type t accepts.
func describe(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == timeType {
		return `an RFC 3339 time string, e.g. "2026-01-02T15:04:05Z"`
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return fmt.Sprintf("an integer in [%d, %d]", int64(-1)<<(t.Bits()-1), int64(1)<<(t.Bits()-1)-1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}
