package domain

import (
	"errors"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNormalize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, scheme, want string
	}{
		{"Example.COM", "https", "example.com"},
		{"example.com:443", "https", "example.com"},
		{"example.com:443", "http", "example.com:443"},
		{"example.com:80", "http", "example.com"},
		{"example.com:8443", "https", "example.com:8443"},
		{"example.com:08443", "https", "example.com:8443"},
		{"example.com.", "https", "example.com"},
		{"Bücher.example", "https", "xn--bcher-kva.example"},
		{"xn--bcher-kva.example", "https", "xn--bcher-kva.example"},
		{"BÜCHER.example", "https", "xn--bcher-kva.example"},
		{"127.0.0.1:8080", "http", "127.0.0.1:8080"},
		{"[::1]:8080", "http", "[::1]:8080"},
		{"[0:0::1]", "https", "[::1]"},
		{"my_host.example", "https", "my_host.example"},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in, tt.scheme)
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
}

func TestNormalizeRejects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", ":443", "example.com:0", "example.com:65536", "example.com:x", "::1", "[::1", "[example]", "a..b", "exa mple.com"} {
		_, err := Normalize(in, "https")
		require.Error(t, err, in)
		require.True(t, errors.Is(err, ErrInvalid), in)
	}
}

func TestFromURL(t *testing.T) {
	t.Parallel()
	u, err := url.Parse("https://Social.Example:443/users/a/inbox")
	require.NoError(t, err)
	got, err := FromURL(u)
	require.NoError(t, err)
	require.Equal(t, "social.example", got)
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"example.com", "Bücher.example:8443", "[::1]:80", "a.b.c.", "xn--bcher-kva.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Normalize(in, "https")
		if err != nil {
			return
		}
		// The normal form is a fixed point.
		again, err := Normalize(out, "https")
		if err != nil {
			t.Fatalf("Normalize(%q) = %q, which does not normalise again: %v", in, out, err)
		}
		if again != out {
			t.Fatalf("Normalize(%q) = %q, then %q", in, out, again)
		}
	})
}
