package domain

import "strings"

// EscapeURL percent-encodes, after the authority of the absolute URL raw,
// every byte that may not appear raw in a URL: non-ASCII bytes (UTF-8 is
// encoded byte by byte), spaces and control characters. Escapes already
// present, such as %2F, are kept as they are, so the path sent is the path
// given: without this, net/url drops a raw path that mixes %2F with
// non-ASCII characters and sends "/users/a%2Fböb/inbox" as
// "/users/a/b%C3%B6b/inbox", another resource. The scheme and authority are
// left alone (a non-ASCII host is an IDN, which Normalize encodes).
func EscapeURL(raw string) string {
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + 3
		if j := strings.IndexAny(raw[start:], "/?#"); j >= 0 {
			start += j
		} else {
			return raw
		}
	}
	n := 0
	for i := start; i < len(raw); i++ {
		if mustEscape(raw[i]) {
			n++
		}
	}
	if n == 0 {
		return raw
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(raw) + 2*n)
	b.WriteString(raw[:start])
	for i := start; i < len(raw); i++ {
		c := raw[i]
		if mustEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func mustEscape(c byte) bool { return c <= ' ' || c >= 0x7f }
