package signer

import (
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"
)

// MinKeyBits is the smallest RSA modulus the signer accepts. Fediverse
// servers generate 2048-bit keys and some reject anything weaker.
const MinKeyBits = 2048

// ErrUnknownActor is returned (wrapped) by a KeySource that has no key for
// an actor.
var ErrUnknownActor = errors.New("signer: no key for actor")

// ErrWeakKey is returned (wrapped) for RSA keys shorter than MinKeyBits.
var ErrWeakKey = errors.New("signer: RSA key too short")

// Key is an actor's signing key: an RSA key (Private) or an Ed25519 key
// (Ed25519), exactly one of them.
type Key struct {
	// ID is the keyId receivers dereference to find the public key, usually
	// the actor IRI with a fragment: "https://example.com/users/alice#main-key".
	ID string
	// Private is the RSA private key, at least MinKeyBits long. Nil for an
	// Ed25519 key.
	Private *rsa.PrivateKey
	// Ed25519 is the Ed25519 private key, signed with RFC 9421's "ed25519"
	// algorithm. An Ed25519 key is never used for draft-cavage signatures
	// (most cavage verifiers know only RSA; see ErrCavageEd25519). Nil for an
	// RSA key.
	Ed25519 ed25519.PrivateKey
}

// KeySource maps a local actor IRI to its signing key. The signer calls it on
// every signature, so it must be fast (cache what is expensive) and safe for
// concurrent use. A missing actor is reported with an error wrapping
// ErrUnknownActor.
type KeySource interface {
	Key(ctx context.Context, actor string) (Key, error)
}

// KeySourceFunc adapts a function to the KeySource interface. It does no
// caching.
type KeySourceFunc func(ctx context.Context, actor string) (Key, error)

// Key calls f(ctx, actor).
func (f KeySourceFunc) Key(ctx context.Context, actor string) (Key, error) { return f(ctx, actor) }

// check validates a key handed out for actor.
func (k Key) check(actor string) error {
	switch {
	case k.Private != nil && k.Ed25519 != nil:
		return fmt.Errorf("signer: key of actor %s is both RSA and Ed25519", actor)
	case k.Ed25519 != nil:
		if len(k.Ed25519) != ed25519.PrivateKeySize {
			return fmt.Errorf("signer: Ed25519 key of actor %s has %d bytes, want %d", actor, len(k.Ed25519), ed25519.PrivateKeySize)
		}
		return nil
	}
	return checkKey(actor, k.Private)
}

func checkKey(actor string, k *rsa.PrivateKey) error {
	if k == nil {
		return fmt.Errorf("signer: nil private key for actor %s", actor)
	}
	if bits := k.N.BitLen(); bits < MinKeyBits {
		return fmt.Errorf("%w: key of actor %s is %d bits, at least %d required", ErrWeakKey, actor, bits, MinKeyBits)
	}
	return nil
}

// ParsePrivateKeyPEM parses an RSA private key in PEM form, PKCS#1
// ("RSA PRIVATE KEY", as Mastodon stores them) or PKCS#8 ("PRIVATE KEY"),
// and checks its size.
func ParsePrivateKeyPEM(data []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("signer: no PEM block found in private key")
	}
	var key *rsa.PrivateKey
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signer: parsing PKCS#1 private key: %w", err)
		}
		key = k
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signer: parsing PKCS#8 private key: %w", err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("signer: private key is %T, want RSA", k)
		}
		key = rk
	default:
		return nil, fmt.Errorf("signer: unsupported PEM block %q", block.Type)
	}
	if bits := key.N.BitLen(); bits < MinKeyBits {
		return nil, fmt.Errorf("%w: %d bits, at least %d required", ErrWeakKey, bits, MinKeyBits)
	}
	return key, nil
}

// ParseKeyPEM parses a private key in PEM form, RSA (see
// ParsePrivateKeyPEM) or Ed25519 (PKCS#8 "PRIVATE KEY"), into a Key without
// ID.
func ParseKeyPEM(data []byte) (Key, error) {
	block, _ := pem.Decode(data)
	if block != nil && block.Type == "PRIVATE KEY" {
		if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			if ek, ok := k.(ed25519.PrivateKey); ok {
				return Key{Ed25519: ek}, nil
			}
		}
	}
	rk, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return Key{}, err
	}
	return Key{Private: rk}, nil
}

// StaticKeys is a KeySource holding a fixed set of keys in memory, for
// servers with few actors (a relay, a single-user server), tests and the
// quick start. Add keys before use; it is safe for concurrent use.
type StaticKeys struct {
	mu   sync.RWMutex
	keys map[string]Key
}

// Add registers the RSA key of actor, replacing any previous one.
func (s *StaticKeys) Add(actor, keyID string, key *rsa.PrivateKey) error {
	return s.AddKey(actor, Key{ID: keyID, Private: key})
}

// AddKey registers key (RSA or Ed25519) for actor under its ID, replacing
// any previous one.
func (s *StaticKeys) AddKey(actor string, key Key) error {
	if err := key.check(actor); err != nil {
		return err
	}
	if key.ID == "" {
		return fmt.Errorf("signer: empty key ID for actor %s", actor)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = make(map[string]Key)
	}
	s.keys[actor] = key
	return nil
}

// AddPEM parses a PEM-encoded private key, RSA or Ed25519 (see
// ParseKeyPEM), once and registers it for actor.
func (s *StaticKeys) AddPEM(actor, keyID string, pemKey []byte) error {
	k, err := ParseKeyPEM(pemKey)
	if err != nil {
		return fmt.Errorf("key of actor %s: %w", actor, err)
	}
	k.ID = keyID
	return s.AddKey(actor, k)
}

// Key returns the key registered for actor.
func (s *StaticKeys) Key(_ context.Context, actor string) (Key, error) {
	s.mu.RLock()
	k, ok := s.keys[actor]
	s.mu.RUnlock()
	if !ok {
		return Key{}, fmt.Errorf("%w %s", ErrUnknownActor, actor)
	}
	return k, nil
}

// PEMLookupFunc returns the key ID and PEM-encoded RSA or Ed25519 private key of a local
// actor, typically from the application's database. It returns an error
// wrapping ErrUnknownActor when the actor has no key.
type PEMLookupFunc func(ctx context.Context, actor string) (keyID string, pemKey []byte, err error)

// PEMKeysTTLDefault is how long PEMKeys keeps a looked-up key by default.
const PEMKeysTTLDefault = 10 * time.Minute

// PEMKeys is a KeySource for servers that store actors' keys as PEM: it
// calls a lookup function on a miss, parses the key once and caches it for a
// TTL. Call Forget after rotating an actor's key. Failed lookups are not
// cached.
type PEMKeys struct {
	lookup PEMLookupFunc
	ttl    time.Duration
	now    func() time.Time

	mu    sync.RWMutex
	cache map[string]pemEntry
}

type pemEntry struct {
	key     Key
	expires time.Time
}

// NewPEMKeys returns a PEMKeys that looks keys up with lookup and keeps them
// for ttl (PEMKeysTTLDefault when zero; negative keeps them until Forget).
func NewPEMKeys(lookup PEMLookupFunc, ttl time.Duration) *PEMKeys {
	if ttl == 0 {
		ttl = PEMKeysTTLDefault
	}
	return &PEMKeys{lookup: lookup, ttl: ttl, now: time.Now, cache: make(map[string]pemEntry)}
}

// Key returns the cached key of actor, looking it up and parsing it on a
// miss or after the TTL.
func (p *PEMKeys) Key(ctx context.Context, actor string) (Key, error) {
	now := p.now()
	p.mu.RLock()
	e, ok := p.cache[actor]
	p.mu.RUnlock()
	if ok && (p.ttl < 0 || now.Before(e.expires)) {
		return e.key, nil
	}
	keyID, data, err := p.lookup(ctx, actor)
	if err != nil {
		return Key{}, fmt.Errorf("looking up key of actor %s: %w", actor, err)
	}
	if keyID == "" {
		return Key{}, fmt.Errorf("signer: empty key ID for actor %s", actor)
	}
	k, err := ParseKeyPEM(data)
	if err != nil {
		return Key{}, fmt.Errorf("key of actor %s: %w", actor, err)
	}
	k.ID = keyID
	e = pemEntry{key: k, expires: now.Add(p.ttl)}
	p.mu.Lock()
	p.cache[actor] = e
	p.mu.Unlock()
	return e.key, nil
}

// Forget drops the cached key of actor, so that the next signature looks it
// up again (after a key rotation).
func (p *PEMKeys) Forget(actor string) {
	p.mu.Lock()
	delete(p.cache, actor)
	p.mu.Unlock()
}
