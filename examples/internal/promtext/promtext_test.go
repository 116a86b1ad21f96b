package promtext

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/queue"
)

func TestWrite(t *testing.T) {
	c := NewCounters()
	c.Observe(t.Context(), queue.Event{Kind: queue.EventDelivered, Domain: "a.example", Latency: 20 * time.Millisecond})
	c.Observe(t.Context(), queue.Event{Kind: queue.EventDelivered, Domain: "a.example", Latency: 30 * time.Millisecond})
	c.Observe(t.Context(), queue.Event{Kind: queue.EventRetry, Domain: "b.example"})
	st := queue.Stats{Head: 7, ObserverDropped: 3, Domains: []queue.DomainStats{
		{Domain: "a.example", Cursor: 7},
		{Domain: "b.example", Cursor: 3, Pending: 4, FailCount: 2},
	}}
	var b strings.Builder
	Write(&b, st, c)
	out := b.String()
	for _, want := range []string{
		"apqueue_head_id 7\n",
		"apqueue_observer_dropped_total 3\n",
		`apqueue_domain_behind_ids{domain="b.example"} 4` + "\n",
		`apqueue_domain_pending{domain="b.example"} 4` + "\n",
		`apqueue_domain_fail_count{domain="b.example"} 2` + "\n",
		`apqueue_events_total{kind="delivered",domain="a.example"} 2` + "\n",
		`apqueue_events_total{kind="retry",domain="b.example"} 1` + "\n",
		`apqueue_delivery_seconds_sum{domain="a.example"} 0.05` + "\n",
		"# TYPE apqueue_events_total counter\n",
	} {
		require.Contains(t, out, want)
	}
}
