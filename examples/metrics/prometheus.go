package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/apqueue/apqueue/queue"
)

// eventCounters is a queue.Observer that counts events per kind and domain
// and sums delivery latencies: what a Prometheus counter or histogram would
// record.
type eventCounters struct {
	mu      sync.Mutex
	counts  map[[2]string]int64 // kind, domain
	latency map[string]time.Duration
}

func newEventCounters() *eventCounters {
	return &eventCounters{counts: map[[2]string]int64{}, latency: map[string]time.Duration{}}
}

// Observe is called synchronously by the queue's workers: it only counts.
func (c *eventCounters) Observe(e queue.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[[2]string{e.Kind.String(), e.Domain}]++
	if e.Kind == queue.EventDelivered {
		c.latency[e.Domain] += e.Latency
	}
}

// writePrometheus writes the stats and the event counters in the Prometheus
// text exposition format.
func writePrometheus(w io.Writer, st queue.Stats, c *eventCounters) {
	fmt.Fprintln(w, "# HELP apqueue_head_id Highest activity ID in the log.")
	fmt.Fprintln(w, "# TYPE apqueue_head_id gauge")
	fmt.Fprintf(w, "apqueue_head_id %d\n", st.Head)
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
