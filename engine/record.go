package engine

import (
	"fmt"
	"strconv"
)

// recordDecoder reads the integer fields of one Redis record and keeps the
// first one that is not an integer, so a corrupt or truncated record fails
// loudly, naming its key and field, instead of reading as zero (a price of
// 0, an order created in 1970).
type recordDecoder struct {
	key string
	err error
}

// int parses field's value s; a bad one is remembered and reads as 0.
func (d *recordDecoder) int(field, s string) int64 {
	x, err := strconv.ParseInt(s, 10, 64)
	if err != nil && d.err == nil {
		d.err = fmt.Errorf("record %s: field %s is %q, not an integer", d.key, field, s)
	}
	return x
}
