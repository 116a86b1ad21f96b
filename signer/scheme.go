package signer

import "fmt"

// Scheme names an HTTP signature scheme. The store keeps a domain's
// accepted scheme as this string, so the values never change.
type Scheme string

const (
	// Cavage is draft-cavage-http-signatures-12, the scheme every
	// ActivityPub server verifies: a Signature header with keyId,
	// algorithm, headers and signature, and a Digest header.
	Cavage Scheme = "cavage"
	// RFC9421 is RFC 9421 HTTP Message Signatures: Signature-Input and
	// Signature headers, and an RFC 9530 Content-Digest header.
	RFC9421 Scheme = "rfc9421"
)

// Valid reports whether s is Cavage or RFC9421.
func (s Scheme) Valid() bool { return s == Cavage || s == RFC9421 }

// Other returns the scheme that is not s: RFC9421 for Cavage and the
// reverse. For an invalid scheme it returns "".
func (s Scheme) Other() Scheme {
	switch s {
	case Cavage:
		return RFC9421
	case RFC9421:
		return Cavage
	}
	return ""
}

// ParseScheme returns the Scheme named s, "" for the empty string (a scheme
// not known yet), and an error for anything else.
func ParseScheme(s string) (Scheme, error) {
	switch sc := Scheme(s); {
	case sc == "" || sc.Valid():
		return sc, nil
	}
	return "", fmt.Errorf("signer: unknown signature scheme %q (want %q or %q)", s, Cavage, RFC9421)
}
