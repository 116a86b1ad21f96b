// Package promtext serves a queue's Stats and Observer events as
// Prometheus text, for the example programs, without a metrics library: a
// server with one would register the same figures as collectors.
package promtext

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/apqueue/apqueue/queue"
)

// Counters is a queue.Observer that counts events per kind and domain
// and sums delivery latencies: what a Prometheus counter or histogram would
// record.
type Counters struct {
	mu      sync.Mutex
	counts  map[[2]string]int64 // kind, domain
	latency map[string]time.Duration
}

// NewCounters returns empty counters.
func NewCounters() *Counters {
	return &Counters{counts: map[[2]string]int64{}, latency: map[string]time.Duration{}}
}

// Observe is called by the queue's observer goroutine, one event at a time:
// it only counts.
func (c *Counters) Observe(_ context.Context, e queue.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[[2]string{e.Kind.String(), e.Domain}]++
	if e.Kind == queue.EventDelivered {
		c.latency[e.Domain] += e.Latency
	}
}

// Write writes the stats and the event counters in the Prometheus text
// exposition format.
func Write(w io.Writer, st queue.Stats, c *Counters) {
	fmt.Fprintln(w, "# HELP apqueue_head_id Highest activity ID in the log.")
	fmt.Fprintln(w, "# TYPE apqueue_head_id gauge")
	fmt.Fprintf(w, "apqueue_head_id %d\n", st.Head)
	fmt.Fprintln(w, "# HELP apqueue_observer_dropped_total Events dropped because the Observer did not keep up.")
	fmt.Fprintln(w, "# TYPE apqueue_observer_dropped_total counter")
	fmt.Fprintf(w, "apqueue_observer_dropped_total %d\n", st.ObserverDropped)
	fmt.Fprintln(w, "# HELP apqueue_observer_panics_total Observer calls that panicked.")
	fmt.Fprintln(w, "# TYPE apqueue_observer_panics_total counter")
	fmt.Fprintf(w, "apqueue_observer_panics_total %d\n", st.ObserverPanics)
	gauge := func(name, help string, value func(queue.DomainStats) float64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
		for _, d := range st.Domains {
			fmt.Fprintf(w, "%s{domain=%q} %g\n", name, d.Domain, value(d))
		}
	}
	gauge("apqueue_domain_pending", "Deliveries read and not yet settled.", func(d queue.DomainStats) float64 { return float64(d.Pending) })
	gauge("apqueue_domain_behind_ids", "Log IDs after the domain's cursor.", func(d queue.DomainStats) float64 { return float64(st.Head - d.Cursor) })
	gauge("apqueue_domain_lag_seconds", "Age of the oldest unsettled activity.", func(d queue.DomainStats) float64 { return d.Lag(time.Now()).Seconds() })
	gauge("apqueue_domain_fail_count", "Consecutive failures since the last success.", func(d queue.DomainStats) float64 { return float64(d.FailCount) })
	gauge("apqueue_domain_in_flight", "Requests in flight.", func(d queue.DomainStats) float64 { return float64(d.InFlight) })

	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintln(w, "# HELP apqueue_events_total Delivery and domain events by kind.")
	fmt.Fprintln(w, "# TYPE apqueue_events_total counter")
	for k, n := range c.counts {
		fmt.Fprintf(w, "apqueue_events_total{kind=%q,domain=%q} %d\n", k[0], k[1], n)
	}
	fmt.Fprintln(w, "# HELP apqueue_delivery_seconds_sum Total time of successful deliveries.")
	fmt.Fprintln(w, "# TYPE apqueue_delivery_seconds_sum counter")
	for d, l := range c.latency {
		fmt.Fprintf(w, "apqueue_delivery_seconds_sum{domain=%q} %g\n", d, l.Seconds())
	}
}

// Handler serves /metrics: q's Stats, read at each scrape, and the
// counters c (the Observer given to q).
func Handler(q *queue.Queue, c *Counters) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := q.Stats(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		Write(w, st, c)
	})
}
