package swarmbench

import (
	"fmt"
	"strconv"
	"strings"
)

// rateUnits are tc's: bit, kbit, mbit, gbit are bits per second; bps,
// kbps, mbps, gbps bytes per second (decimal multiples).
var rateUnits = []struct {
	suffix string
	bits   float64
}{
	{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1},
	{"gbps", 8e9}, {"mbps", 8e6}, {"kbps", 8e3}, {"bps", 8},
}

// ParseRate parses a link rate the way tc writes one ("40mbit",
// "500kbit", "5mbps" = 5 MB/s) and returns bits per second. A bare number
// is bits per second.
func ParseRate(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range rateUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.bits
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad rate %q (want e.g. 40mbit)", s)
	}
	return int64(v * mult), nil
}

// FormatRate writes bits per second as tc does ("40mbit").
func FormatRate(bps int64) string {
	switch {
	case bps%1e9 == 0:
		return fmt.Sprintf("%dgbit", bps/1e9)
	case bps%1e6 == 0:
		return fmt.Sprintf("%dmbit", bps/1e6)
	case bps%1e3 == 0:
		return fmt.Sprintf("%dkbit", bps/1e3)
	}
	return fmt.Sprintf("%dbit", bps)
}
