package sender

import (
	"net/http"
	"strings"
	"time"
)

// MaxRetryAfter bounds the delay ParseRetryAfter returns, so a hostile or
// broken header cannot ask for centuries (the queue applies its own, lower
// backoff cap on top).
const MaxRetryAfter = 7 * 24 * time.Hour

// ParseRetryAfter parses a Retry-After header value, either delay-seconds
// ("120") or an HTTP date ("Wed, 21 Oct 2015 07:28:00 GMT", also the obsolete
// RFC 850 and asctime forms), relative to now. It returns the delay, at most
// MaxRetryAfter, and whether the value was valid. A date in the past is a
// valid zero delay.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		var secs int64
		for i := 0; i < len(v); i++ {
			c := v[i]
			if c < '0' || c > '9' {
				return 0, false
			}
			if secs < int64(MaxRetryAfter/time.Second) {
				secs = secs*10 + int64(c-'0')
			}
		}
		d := time.Duration(secs) * time.Second
		return min(d, MaxRetryAfter), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 {
		return 0, true
	}
	return min(d, MaxRetryAfter), true
}
