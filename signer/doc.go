// Package signer signs ActivityPub deliveries with draft-cavage HTTP
// signatures, using github.com/superseriousbusiness/httpsig.
//
// Every signature uses RSA PKCS#1 v1.5 with SHA-256, is labelled
// algorithm="rsa-sha256" (httpsig writes "hs2019", which some verifiers
// reject), and covers "(request-target) host date digest". The Digest is
// computed once per activity by the caller (sender.Activity.Digest) and
// reused for every inbox; Date and signature are made fresh on every call, so
// a retry never reuses an old signature.
//
// Keys come from a KeySource, which maps a local actor IRI to its key ID and
// RSA private key. StaticKeys holds a fixed set; PEMKeys looks PEM keys up
// through a function and caches the parsed keys. Keys shorter than
// MinKeyBits are refused.
//
//	keys := &signer.StaticKeys{}
//	if err := keys.AddPEM("https://example.com/users/alice",
//		"https://example.com/users/alice#main-key", pemBytes); err != nil {
//		return err
//	}
//	s, err := signer.New(keys, nil)
//	// pass s as sender.HTTPConfig.Signer
package signer
