package store

import (
	"slices"
	"strings"
)

// MergeRegistrations returns domains with one entry per domain, sorted by
// name, the last non-empty shared inbox given for a domain winning. A
// database store registers the result in one statement, which may not
// change a row twice, and in one order, so that concurrent registrations
// take row locks alike. The argument must have passed CheckRegistrations.
func MergeRegistrations(domains []DomainRegistration) []DomainRegistration {
	inbox := make(map[string]string, len(domains))
	for _, r := range domains {
		if _, ok := inbox[r.Domain]; !ok || r.SharedInbox != "" {
			inbox[r.Domain] = r.SharedInbox
		}
	}
	out := make([]DomainRegistration, 0, len(inbox))
	for d, shared := range inbox {
		out = append(out, DomainRegistration{Domain: d, SharedInbox: shared})
	}
	slices.SortFunc(out, func(a, b DomainRegistration) int { return strings.Compare(a.Domain, b.Domain) })
	return out
}

// LatestStates returns the last state given for each domain, in the order
// of those last states: Checkpoint saves only the last state of a domain
// listed more than once, and a database statement may not change a row
// twice.
func LatestStates(states []DomainState) []DomainState {
	last := make(map[string]int, len(states))
	for i, st := range states {
		last[st.Domain] = i
	}
	out := make([]DomainState, 0, len(last))
	for i, st := range states {
		if last[st.Domain] == i {
			out = append(out, st)
		}
	}
	return out
}
