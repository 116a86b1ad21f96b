package sender

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"007", 7 * time.Second, true},
		{"99999999999999999999999", MaxRetryAfter, true},
		{"Mon, 23 Nov 2026 10:05:00 GMT", 5 * time.Minute, true},   // IMF-fixdate
		{"Monday, 23-Nov-26 10:00:30 GMT", 30 * time.Second, true}, // RFC 850
		{"Mon Nov 23 10:01:00 2026", time.Minute, true},            // asctime
		{"Mon, 23 Nov 2026 09:00:00 GMT", 0, true},                 // past
		{"Mon, 23 Nov 2099 09:00:00 GMT", MaxRetryAfter, true},
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"12s", 0, false},
		{"soon", 0, false},
		{"Mon, 32 Nov 2026 10:05:00 GMT", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfter(tt.in, now)
		require.Equal(t, tt.ok, ok, "%q", tt.in)
		require.Equal(t, tt.want, got, "%q", tt.in)
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "", "-1", "Mon, 23 Nov 2026 10:05:00 GMT", "Monday, 23-Nov-26 10:00:30 GMT", "Mon Nov 23 10:01:00 2026", "99999999999999999999"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ParseRetryAfter(v, now)
		if d < 0 || d > MaxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %s out of range", v, d)
		}
		if !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %s with ok=false", v, d)
		}
	})
}
