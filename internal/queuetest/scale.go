package queuetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// ScaleDomains is how many domains a server that has federated for a year
// knows.
const ScaleDomains = 20000

// ScaleRegistrations returns the registrations of n domains,
// d00000.example and up, each with its shared inbox, and their names.
func ScaleRegistrations(n int) ([]store.DomainRegistration, []string) {
	regs := make([]store.DomainRegistration, n)
	names := make([]string, n)
	for i := range regs {
		names[i] = fmt.Sprintf("d%05d.example", i)
		regs[i] = store.DomainRegistration{Domain: names[i], SharedInbox: "https://" + names[i] + "/inbox"}
	}
	return regs, names
}

// ScaleStepBound ends a step of a scale test that hangs. It is no speed
// target (the benchmarks and the load generator are): a step of 0.6 s
// plain takes 8 s under the race detector, and several times that when the
// whole suite runs beside it.
const ScaleStepBound = 5 * time.Minute

// Timed runs one step of a scale test: f, with a context that ends after
// ScaleStepBound, must succeed; the log shows how long it took.
func Timed(t *testing.T, name string, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ScaleStepBound)
	defer cancel()
	start := time.Now()
	require.NoError(t, f(ctx), name)
	t.Logf("%s: %v", name, time.Since(start))
}
