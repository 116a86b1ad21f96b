package domain

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEscapeURLKeepsThePathGiven(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"https://remote.example/users/a%2Fböb/inbox": "/users/a%2Fb%C3%B6b/inbox",
		"https://remote.example/users/böb/inbox":     "/users/b%C3%B6b/inbox",
		"https://remote.example/users/a%2Fb/inbox":   "/users/a%2Fb/inbox",
		"https://remote.example/a b?q=ü":             "/a%20b",
		"https://bücher.example/inbox":               "/inbox",
		"https://remote.example":                     "",
	}
	for in, wantPath := range tests {
		u, err := url.Parse(EscapeURL(in))
		require.NoError(t, err, in)
		require.Equal(t, wantPath, u.EscapedPath(), in)
		// What is sent decodes to what was given.
		p, err := url.PathUnescape(u.EscapedPath())
		require.NoError(t, err)
		rawPath := in[strings.Index(in, "://")+3:]
		if i := strings.IndexAny(rawPath, "/?"); i >= 0 {
			rawPath = rawPath[i:]
		} else {
			rawPath = ""
		}
		rawPath, _, _ = strings.Cut(rawPath, "?")
		want, err := url.PathUnescape(rawPath)
		require.NoError(t, err)
		require.Equal(t, want, p, in)
	}
	require.Equal(t, "https://bücher.example/inbox", EscapeURL("https://bücher.example/inbox"), "the host is left to Normalize")
	require.Equal(t, "https://remote.example/a?q=%C3%BC", EscapeURL("https://remote.example/a?q=ü"))
}

func FuzzEscapeURL(f *testing.F) {
	for _, s := range []string{"https://remote.example/users/a%2Fböb/inbox", "https://x/a b", "no scheme ü", "https://h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := EscapeURL(in)
		if EscapeURL(out) != out {
			t.Fatalf("not idempotent: %q -> %q", in, out)
		}
		// Only bytes after the authority change, and they decode back.
		i := strings.Index(in, "://")
		if i < 0 {
			i = 0
		}
		if !strings.HasPrefix(out, in[:i]) {
			t.Fatalf("%q: the scheme changed in %q", in, out)
		}
		if strings.ContainsFunc(out[i:], func(r rune) bool { return r <= ' ' || r >= 0x7f }) && strings.Contains(in, "://") {
			j := strings.IndexAny(in[i+3:], "/?#")
			if j >= 0 && strings.ContainsFunc(out[i+3+j:], func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
				t.Fatalf("%q: raw bytes left in %q", in, out)
			}
		}
	})
}
