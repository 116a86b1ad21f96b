package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
	"github.com/apqueue/apqueue/store/memory"
)

// runScenario parses args, runs the scenario and returns its report and
// printed text.
func runScenario(t *testing.T, args ...string) (*report, string) {
	t.Helper()
	o, err := parseOptions(args)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := run(ctx, o)
	require.NoError(t, err)
	var out bytes.Buffer
	rep.print(&out)
	return rep, out.String()
}

// TestSmokeInstance runs the instance scenario small: every case delivers
// exactly its planned deliveries through the fake DNS, and the report has
// the resolver calls and the CPU ratio.
func TestSmokeInstance(t *testing.T) {
	rep, out := runScenario(t, "-scenario", "instance", "-known-domains", "200", "-compare-domains", "40", "-activities", "100",
		"-audiences", "30", "-big-every", "50", "-all-every", "50", "-batch", "50", "-timeout", "60s")
	ir := rep.instance
	require.Len(t, ir.cases, 3)
	for _, c := range ir.cases {
		require.NoError(t, c.incomplete)
		require.Equal(t, c.work.deliveries, c.delivered, "%d known, %s", c.known, c.work.name)
		require.Zero(t, c.dups)
		require.Positive(t, c.resolverCalls)
		require.Positive(t, c.cpu)
		require.Positive(t, c.peakHeap)
	}
	require.Equal(t, rep.expected, rep.delivered)
	require.Same(t, ir.cases[1].work, ir.cases[2].work, "the comparison runs the same deliveries")
	require.Equal(t, 40, ir.cases[2].known)
	process, _ := ir.cpuRatio()
	require.Positive(t, process)
	require.Contains(t, out, "CPU ratio")
	require.Contains(t, out, "calls an activity")
}

// TestSmokeBacklog drains a small backlog both ways, with the bare loop
// around each drain.
func TestSmokeBacklog(t *testing.T) {
	rep, out := runScenario(t, "-scenario", "backlog", "-domains", "3", "-activities", "100", "-batch", "50", "-baseline-duration", "200ms", "-timeout", "60s")
	br := rep.backlog
	require.Len(t, br.drains, 2)
	require.Len(t, br.bare, 3)
	for i, d := range br.drains {
		require.Equal(t, br.deliveries, d.delivered, d.mode)
		w, _ := br.ratio(i)
		require.Positive(t, w)
	}
	require.Equal(t, rep.expected, rep.delivered)
	require.Zero(t, rep.duplicates)
	w, _ := br.modeRatio()
	require.Positive(t, w)
	require.Contains(t, out, "explicit/audience")
}

// TestSmokeRestart drains a small backlog after a restart and counts the
// log reads: every row is read at least once.
func TestSmokeRestart(t *testing.T) {
	rep, out := runScenario(t, "-scenario", "restart", "-domains", "50", "-activities", "200", "-recipients", "5", "-body-bytes", "512", "-timeout", "60s")
	rr := rep.restart
	require.NoError(t, rr.incomplete)
	require.Equal(t, int64(1000), rr.deliveries)
	require.Equal(t, rr.deliveries, rr.delivered)
	require.Zero(t, rep.duplicates)
	require.Equal(t, int64(200), rr.reads.rows)
	require.Zero(t, rr.reads.never, "every row of the backlog is read")
	require.GreaterOrEqual(t, rr.reads.total, rr.reads.rows)
	require.Positive(t, rr.peakLive)
	require.Contains(t, out, "log reads")
}

// TestSmokeIdleCPU measures the idle CPU of a few domains.
func TestSmokeIdleCPU(t *testing.T) {
	rep, out := runScenario(t, "-scenario", "idle", "-domains", "50", "-idle-window", "200ms")
	require.GreaterOrEqual(t, rep.idle.window, 200*time.Millisecond)
	require.Contains(t, out, "idle CPU")
}

// The workload is the same for the same seed, its deliveries are the sum of
// its activities' reach, and it has the big audiences and AllDomains
// activities it was asked for.
func TestWorkloadPlan(t *testing.T) {
	t.Parallel()
	shape := workloadShape{domains: 5000, allDomains: 5000, audiences: 100, activities: 1000, bigEvery: 100, allEvery: 500, bigSize: 2000, seed: 7}
	w, err := newWorkload("mix", shape)
	require.NoError(t, err)
	again, err := newWorkload("mix", shape)
	require.NoError(t, err)
	require.Equal(t, w.acts, again.acts)

	var sum, bound int64
	all, big, direct := 0, 0, 0
	for _, p := range w.acts {
		n := w.reach(p)
		sum += int64(n)
		bound += int64(n)
		switch {
		case p.all:
			all++
			require.Equal(t, 5000, n)
		case p.audience >= 0:
			bound++
			if n == 2000 {
				big++
			}
		default:
			direct++
			require.NotEmpty(t, p.inboxes)
		}
	}
	require.Equal(t, w.deliveries, sum)
	require.Equal(t, w.boundCalls, bound)
	require.Equal(t, 2, all)
	require.Equal(t, 8, big, "every 100th activity, except the two that are every 500th (AllDomains)")
	require.Positive(t, direct)
	for _, doms := range w.audiences {
		seen := map[int]bool{}
		for _, d := range doms {
			require.False(t, seen[d], "follower domains are distinct")
			require.Less(t, d, 5000)
			seen[d] = true
		}
		require.LessOrEqual(t, len(doms), 2000)
	}
	require.Len(t, w.audiences[0], 2000, "the first audiences are big accounts")

	_, err = newWorkload("empty", workloadShape{})
	require.Error(t, err)
}

// countingStore counts every row Activities returns, per ID.
func TestCountingStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mem := memory.New()
	ids, err := appendedIDs(mem.Append(ctx, []store.NewActivity{
		{Body: []byte(`{}`), AllDomains: true},
		{Body: []byte(`{}`), AllDomains: true},
		{Body: []byte(`{}`), AllDomains: true},
	}))
	require.NoError(t, err)
	c := newCountingStore(mem, ids[1], 2) // the first row is outside
	_, err = c.Activities(ctx, 0, 10)
	require.NoError(t, err)
	_, err = c.Activities(ctx, ids[1], 10)
	require.NoError(t, err)
	s := c.summary()
	require.Equal(t, rowReads{rows: 2, total: 3, calls: 2, outside: 1, maxReads: 2}, s)
}

// The explicit/audience ratio pairs each round's drains by mode, whichever
// drained first.
func TestBacklogModeRatio(t *testing.T) {
	t.Parallel()
	r := &backlogReport{drains: []backlogDrain{
		{mode: backlogExplicit, rate: rate{100, 10}}, {mode: backlogAudience, rate: rate{200, 20}},
		{mode: backlogAudience, rate: rate{100, 10}}, {mode: backlogExplicit, rate: rate{50, 5}},
	}}
	w, c := r.modeRatio()
	require.InDelta(t, 0.5, w, 1e-9)
	require.InDelta(t, 0.5, c, 1e-9)

	r.bare = []rate{{100, 10}, {100, 10}, {300, 30}, {100, 10}, {100, 10}}
	w, c = r.bareRatio(backlogExplicit) // 100/100 and 50/100
	require.InDelta(t, 0.75, w, 1e-9)
	require.InDelta(t, 0.75, c, 1e-9)
	w, _ = r.bareRatio(backlogAudience) // 200/200 and 100/200
	require.InDelta(t, 0.75, w, 1e-9)
}

// appendedIDs returns the IDs of what Append returned, and its error.
func appendedIDs(res []store.Appended, err error) ([]int64, error) {
	return store.AppendedIDs(res), err
}
