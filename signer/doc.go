// Package signer signs ActivityPub deliveries with HTTP signatures:
// draft-cavage (with github.com/superseriousbusiness/httpsig) or RFC 9421
// HTTP Message Signatures (over the standard library).
//
// A draft-cavage signature uses RSA PKCS#1 v1.5 with SHA-256, is labelled
// algorithm="rsa-sha256" (httpsig writes "hs2019", which some verifiers
// reject), and covers "(request-target) host date digest". The Digest is
// computed once per activity by the caller (sender.Activity.Digest) and
// reused for every inbox; Date and signature are made fresh on every call, so
// a retry never reuses an old signature.
//
// An RFC 9421 signature is one signature labelled "sig1", covering
// "@method" "@target-uri" "content-digest" with created, keyid and alg
// parameters, made with rsa-v1_5-sha256 for RSA keys and ed25519 for
// Ed25519 keys: what Mastodon 4.5+ verifies, and what Fedify and the other
// RFC 9421 servers accept. The RFC 9530 Content-Digest is computed once per
// activity (sender.Activity.ContentDigest); created is fresh on every call.
// When the receiver answered with an Accept-Signature (RFC 9421 §5.1),
// Options.Accept makes the signature cover the components it asks for.
// ParseSignatureInput and ParseAcceptSignature parse those fields, and
// SignatureBase and SignSpec reproduce the RFC's examples exactly.
//
// RFC 9421 is built over the standard library rather than on
// github.com/yaronf/httpsign: apqueue needs two algorithms and one request
// shape, the signature base is a few lines that the RFC's test vectors pin
// down, and a signer that builds no per-call configuration keeps signed
// deliveries close to the raw RSA signing rate.
//
// Keys come from a KeySource, which maps a local actor IRI to its key ID and
// RSA or Ed25519 private key. StaticKeys holds a fixed set; PEMKeys looks PEM
// keys up through a function and caches the parsed keys. RSA keys shorter
// than MinKeyBits are refused. An Ed25519 key is never used for a
// draft-cavage signature (ErrCavageEd25519).
//
//	keys := &signer.StaticKeys{}
//	if err := keys.AddPEM("https://example.com/users/alice",
//		"https://example.com/users/alice#main-key", pemBytes); err != nil {
//		return err
//	}
//	s, err := signer.New(keys, nil)
//	// pass s as sender.HTTPConfig.Signer
package signer
