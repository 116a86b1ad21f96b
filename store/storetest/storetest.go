// Package storetest is the conformance suite of the store.Store contract.
// Every store runs it with one call, and a new behaviour of the contract is
// added here first:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return memory.New() })
//	}
//
// Each subtest gets a fresh, empty store and runs in parallel with the others.
// The suite uses real clocks and short lease TTLs, waiting with
// require.Eventually rather than sleeping, so a store backed by a database
// server runs it unchanged. Stores keep times at microsecond precision,
// truncating what they are given, so that times round-trip exactly.
package storetest

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// Run runs the conformance suite against the stores made by newStore, which
// must return a new, empty store each time it is called. It may use t to
// register cleanup or to skip when the store's backing service is absent.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Helper()
	su := suite{newStore: newStore}
	groups := []struct {
		name string
		fn   func(t *testing.T, su suite)
	}{
		{"Append", testAppend},
		{"Activities", testActivities},
		{"RegisterDomains", testRegisterDomains},
		{"Domains", testDomains},
		{"Leases", testLeases},
		{"LeaseKeeper", testLeaseKeeper},
		{"Checkpoint", testCheckpoint},
		{"ChangeDomain", testChangeDomain},
		{"DeadLetters", testDeadLetters},
		{"DeadLetterRetention", testDeadLetterRetention},
		{"Prune", testPrune},
		{"Concurrency", testConcurrency},
		{"Listen", testListen},
		{"Context", testContext},
		{"Idempotency", testIdempotency},
		{"DomainPolicy", testDomainPolicy},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			g.fn(t, su)
		})
	}
}

// suite carries the store constructor to the test groups.
type suite struct {
	newStore func(t *testing.T) store.Store
}

// run runs fn as a parallel subtest with a fresh store.
func (su suite) run(t *testing.T, name string, fn func(t *testing.T, s store.Store)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		s := su.newStore(t)
		require.NotNil(t, s, "newStore returned nil")
		fn(t, s)
	})
}

const (
	// longTTL is a lease TTL no test outlives.
	longTTL = time.Minute
	// shortTTL is a lease TTL tests wait out with require.Eventually. It
	// is also the longest a test that keeps a lease held may pause
	// between two calls: a stalled machine (SQLite under the race
	// detector, beside the other packages) pauses for hundreds of
	// milliseconds.
	shortTTL = time.Second
	// waitFor bounds every require.Eventually.
	waitFor = 10 * time.Second
	// tick is the polling interval of require.Eventually.
	tick = 10 * time.Millisecond
	// clockSlack tolerates the difference between the test's clock and the
	// store's (a database server's clock, for example).
	clockSlack = time.Second
)

var bodySeq atomic.Int64

// activity returns a valid activity addressed to the inboxes of domains,
// with a unique body.
func activity(domains ...string) store.NewActivity {
	n := bodySeq.Add(1)
	a := store.NewActivity{
		Actor:       "https://local.example/users/alice",
		OrderingKey: fmt.Sprintf("https://local.example/notes/%d", n),
		Body:        fmt.Appendf(nil, `{"type":"Create","id":"https://local.example/activities/%d"}`, n),
		Domains:     slices.Clone(domains),
	}
	for _, d := range domains {
		a.Inboxes = append(a.Inboxes, "https://"+d+"/inbox")
	}
	return a
}

// appendOne appends one activity addressed to domains and returns its ID.
func appendOne(t *testing.T, s store.Store, domains ...string) int64 {
	t.Helper()
	ids, err := appendedIDs(s.Append(t.Context(), []store.NewActivity{activity(domains...)}))
	require.NoError(t, err)
	require.Len(t, ids, 1)
	return ids[0]
}

// appendN appends n activities addressed to nobody, one batch, and returns
// their IDs.
func appendN(t *testing.T, s store.Store, n int) []int64 {
	t.Helper()
	batch := make([]store.NewActivity, n)
	for i := range batch {
		batch[i] = activity()
	}
	ids, err := appendedIDs(s.Append(t.Context(), batch))
	require.NoError(t, err)
	require.Len(t, ids, n)
	return ids
}

// register registers domains without shared inboxes.
func register(t *testing.T, s store.Store, domains ...string) {
	t.Helper()
	regs := make([]store.DomainRegistration, len(domains))
	for i, d := range domains {
		regs[i] = store.DomainRegistration{Domain: d}
	}
	require.NoError(t, s.RegisterDomains(t.Context(), regs))
}

// domainState returns the state of one known domain.
func domainState(t *testing.T, s store.Store, domain string) store.DomainState {
	t.Helper()
	got, err := s.Domains(t.Context(), []string{domain})
	require.NoError(t, err)
	require.Len(t, got, 1, "domain %s is not known", domain)
	require.Equal(t, domain, got[0].Domain)
	return got[0]
}

// head returns the store's head.
func head(t *testing.T, s store.Store) int64 {
	t.Helper()
	h, err := s.Head(t.Context())
	require.NoError(t, err)
	return h
}

// setStates changes the saved state of every known domain with change, as a
// setup step: it leases every domain to a setup owner, checkpoints, and
// releases the leases. No domain may be leased when it is called.
func setStates(t *testing.T, s store.Store, change func(st *store.DomainState)) {
	t.Helper()
	const owner = "storetest-setup"
	ctx := t.Context()
	all, err := s.Domains(ctx, nil)
	require.NoError(t, err)
	leased, err := s.AcquireLeases(ctx, owner, longTTL, len(all))
	require.NoError(t, err)
	require.Len(t, leased, len(all), "setup needs every domain unleased")
	leases := make([]store.Lease, len(leased))
	for i := range leased {
		leases[i] = leased[i].Lease()
		change(&leased[i])
	}
	require.NoError(t, s.Checkpoint(ctx, leased, nil))
	require.NoError(t, s.ReleaseLeases(ctx, owner, leases))
}

// requireTimeEqual checks that two times are the same instant, whatever
// their locations.
func requireTimeEqual(t *testing.T, want, got time.Time, what string) {
	t.Helper()
	require.Truef(t, want.Equal(got), "%s: want %v, got %v", what, want, got)
}

// requireNear checks that got is within clockSlack of [from, to].
func requireNear(t *testing.T, from, to, got time.Time, what string) {
	t.Helper()
	require.Falsef(t, got.Before(from.Add(-clockSlack)), "%s: %v is before %v", what, got, from)
	require.Falsef(t, got.After(to.Add(clockSlack)), "%s: %v is after %v", what, got, to)
}

// ids returns the IDs of activities.
func ids(acts []store.Activity) []int64 {
	out := make([]int64, len(acts))
	for i, a := range acts {
		out[i] = a.ID
	}
	return out
}

// names returns the domain names of states.
func names(states []store.DomainState) []string {
	out := make([]string, len(states))
	for i, st := range states {
		out[i] = st.Domain
	}
	return out
}

// byDomain indexes states by domain name.
func byDomain(states []store.DomainState) map[string]store.DomainState {
	out := make(map[string]store.DomainState, len(states))
	for _, st := range states {
		out[st.Domain] = st
	}
	return out
}

// leasesOf returns the leases of states.
func leasesOf(states []store.DomainState) []store.Lease {
	out := make([]store.Lease, len(states))
	for i, st := range states {
		out[i] = st.Lease()
	}
	return out
}

func leaseNames(leases []store.Lease) []string {
	out := make([]string, len(leases))
	for i, l := range leases {
		out[i] = l.Domain
	}
	return out
}

// appendedIDs returns the IDs of what Append returned, and its error.
func appendedIDs(res []store.Appended, err error) ([]int64, error) {
	return store.AppendedIDs(res), err
}
