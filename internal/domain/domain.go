// Package domain normalises the remote domains that apqueue keys its state
// by: host[:port], lower-case, IDNA (punycode) encoded, without the scheme's
// default port.
package domain

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrInvalid is matched by every error this package returns.
var ErrInvalid = errors.New("invalid domain")

var profile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.Transitional(false),
	idna.VerifyDNSLength(true),
	idna.StrictDomainName(false), // underscores are seen in the wild; validASCII checks the rest
)

// validASCII reports whether host holds only letters, digits, '-', '_' and
// dots, as a DNS name in ASCII form does.
func validASCII(host string) bool {
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Normalize returns the normal form of a host with an optional port, as it
// appears in a URL's authority: "Example.COM:443" with scheme "https" becomes
// "example.com", "Bücher.example:8443" becomes "xn--bcher-kva.example:8443".
// IPv6 literals keep their brackets. scheme decides which port is the default
// (443 for https, 80 for http); pass "" to keep any port.
func Normalize(hostport, scheme string) (string, error) {
	if hostport == "" {
		return "", fmt.Errorf("%w: empty host", ErrInvalid)
	}
	if !utf8.ValidString(hostport) {
		return "", fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalid, hostport)
	}
	host, port := hostport, ""
	if i := strings.LastIndexByte(hostport, ':'); i >= 0 && !strings.HasSuffix(hostport, "]") {
		if strings.HasPrefix(hostport, "[") || strings.Count(hostport, ":") == 1 {
			host, port = hostport[:i], hostport[i+1:]
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '+' {
			return "", fmt.Errorf("%w: bad port %q", ErrInvalid, port)
		}
		port = strconv.Itoa(n)
		if (scheme == "https" && n == 443) || (scheme == "http" && n == 80) {
			port = ""
		}
	}
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return "", fmt.Errorf("%w: bad IPv6 literal %q", ErrInvalid, host)
		}
		ip := net.ParseIP(host[1 : len(host)-1])
		if ip == nil || ip.To4() != nil && !strings.Contains(host, ":") {
			return "", fmt.Errorf("%w: bad IPv6 literal %q", ErrInvalid, host)
		}
		host = "[" + ip.String() + "]"
	} else {
		if strings.Contains(host, ":") {
			return "", fmt.Errorf("%w: IPv6 address %q without brackets", ErrInvalid, hostport)
		}
		host = strings.TrimSuffix(host, ".")
		ascii, err := profile.ToASCII(host)
		if err != nil {
			return "", fmt.Errorf("%w: %q: %v", ErrInvalid, host, err)
		}
		if ascii == "" || !validASCII(ascii) || strings.HasSuffix(ascii, ".") || strings.Contains(ascii, "..") {
			return "", fmt.Errorf("%w: %q is not a host name", ErrInvalid, host)
		}
		host = strings.ToLower(ascii)
	}
	if port != "" {
		return host + ":" + port, nil
	}
	return host, nil
}

// FromURL returns the normalised domain of an absolute URL.
func FromURL(u *url.URL) (string, error) {
	return Normalize(u.Host, u.Scheme)
}
