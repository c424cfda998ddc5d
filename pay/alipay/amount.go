package alipay

import (
	"fmt"
	"math"
	"strconv"
)

// FormatYuan renders fen as the yuan string Alipay expects: always two
// decimals ("12.30", "0.01"). It is exact for every int64, including the
// extremes, because it never leaves integer arithmetic.
func FormatYuan(cents int64) string {
	neg := cents < 0
	// Work in uint64 so that math.MinInt64 has an absolute value.
	abs := uint64(cents)
	if neg {
		abs = -abs
	}
	yuan, fen := abs/100, abs%100
	s := strconv.FormatUint(yuan, 10) + "." + string(rune('0'+fen/10)) + string(rune('0'+fen%10))
	if neg {
		return "-" + s
	}
	return s
}

// ParseYuan turns a yuan string such as "12.30", "12.3" or "12" into fen,
// exactly. It rejects signs, more than two decimals, empty parts ("1.", ".5"),
// whitespace, exponents and values beyond int64 fen: a notify amount that is
// not plainly a non-negative money value is not trusted.
func ParseYuan(s string) (int64, error) {
	intPart, frac := s, ""
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			intPart, frac = s[:i], s[i+1:]
			if frac == "" {
				return 0, fmt.Errorf("yuan amount %q: no digits after the decimal point", s)
			}
			break
		}
	}
	if intPart == "" {
		return 0, fmt.Errorf("yuan amount %q: no digits before the decimal point", s)
	}
	if len(frac) > 2 {
		return 0, fmt.Errorf("yuan amount %q: more than two decimals", s)
	}
	var yuan int64
	for i := 0; i < len(intPart); i++ {
		c := intPart[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("yuan amount %q: unexpected character %q", s, c)
		}
		if yuan > (math.MaxInt64/100-int64(c-'0'))/10 {
			return 0, fmt.Errorf("yuan amount %q: too large", s)
		}
		yuan = yuan*10 + int64(c-'0')
	}
	var fen int64
	for i := 0; i < 2; i++ {
		fen *= 10
		if i < len(frac) {
			c := frac[i]
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("yuan amount %q: unexpected character %q", s, c)
			}
			fen += int64(c - '0')
		}
	}
	// yuan <= (MaxInt64/100 - 0)/10 was checked digit by digit, but the last
	// step can still leave yuan*100+fen above MaxInt64.
	if yuan > (math.MaxInt64-fen)/100 {
		return 0, fmt.Errorf("yuan amount %q: too large", s)
	}
	return yuan*100 + fen, nil
}
