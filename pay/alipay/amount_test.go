package alipay

import (
	"math"
	"testing"
)

func TestFormatYuan(t *testing.T) {
	for _, tc := range []struct {
		cents int64
		want  string
	}{
		{0, "0.00"}, {1, "0.01"}, {10, "0.10"}, {99, "0.99"}, {100, "1.00"}, {1230, "12.30"},
		{1234, "12.34"}, {99_999_00, "99999.00"}, {MaxAmountCents, "100000000.00"},
		{math.MaxInt64, "92233720368547758.07"}, {-1, "-0.01"}, {-1230, "-12.30"},
		{math.MinInt64, "-92233720368547758.08"},
	} {
		if got := FormatYuan(tc.cents); got != tc.want {
			t.Errorf("FormatYuan(%d) = %q, want %q", tc.cents, got, tc.want)
		}
	}
}

func TestParseYuan(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"0.00", 0}, {"0.01", 1}, {"0.1", 10}, {"0.10", 10}, {"1", 100}, {"12.3", 1230},
		{"12.30", 1230}, {"12.34", 1234}, {"007.05", 705}, {"99999.00", 99_999_00},
		{"92233720368547758.07", math.MaxInt64}, {"92233720368547758", 9223372036854775800},
	} {
		got, err := ParseYuan(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseYuan(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{
		"", ".", "-0.01", "-1", "+1", "1.", ".5", "1.234", "1.2.3", "1,00", " 1.00", "1.00 ", "1e2",
		"0x10", "１.00", "12.3a", "a", "NaN", "92233720368547758.08", "92233720368547759", "999999999999999999999",
	} {
		if got, err := ParseYuan(bad); err == nil {
			t.Errorf("ParseYuan(%q) = %d, want an error", bad, got)
		}
	}
}

func TestYuanRoundTrip(t *testing.T) {
	for _, c := range []int64{0, 1, 9, 10, 11, 99, 100, 101, 12345678, MaxAmountCents, math.MaxInt64} {
		got, err := ParseYuan(FormatYuan(c))
		if err != nil || got != c {
			t.Errorf("ParseYuan(FormatYuan(%d)) = %d, %v", c, got, err)
		}
	}
}
