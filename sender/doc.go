// Package sender defines how the queue hands one delivery to the network and
// how the result comes back classified, and provides the HTTP implementation
// that signs every request and refuses to dial private addresses.
//
// The queue calls a Sender once per attempt with a Delivery (inbox, activity,
// attempt number) and acts on the Result: Delivered settles the delivery,
// Retry backs off (the whole domain when DomainLevel is set), Permanent
// records a dead letter, DomainGone marks the domain dead.
package sender
