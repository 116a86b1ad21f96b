// Package sender defines how the queue hands one delivery to the network and
// how the result comes back classified, and provides the HTTP implementation
// that signs every request and refuses to dial private addresses.
//
// The queue calls a Sender once per attempt with a Delivery (inbox, activity,
// attempt number, the domain's remembered signature scheme) and acts on the
// Result: Delivered settles the delivery (and Result.Scheme is saved with the
// domain), Retry backs off (the whole domain when DomainLevel is set),
// Permanent records a dead letter, DomainGone marks the domain dead.
//
// The HTTP sender signs with draft-cavage or RFC 9421 HTTP signatures. For a
// domain whose scheme is unknown it follows HTTPConfig.SignaturePolicy
// (draft-cavage first by default) and, when the inbox refuses the signature,
// sends the same delivery again at once with the other scheme: the "double
// knock". The queue remembers the scheme that worked, so later deliveries,
// in any process and after restarts, start with it; a remembered scheme
// other than the preferred one is re-checked every SchemeRecheckInterval.
//
//	h, err := sender.NewHTTP(&sender.HTTPConfig{
//		Signer:          s, // a *signer.Signer
//		SignaturePolicy: sender.RFC9421First,
//	})
package sender
