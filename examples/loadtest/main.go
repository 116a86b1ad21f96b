// Command loadtest is apqueue's load generator. It starts local ActivityPub
// inboxes on loopback (one server, one port, one domain each) with a chosen
// latency, failure rate and Retry-After, runs one or more queues with the
// in-memory or the PostgreSQL store, enqueues activities, and prints
// deliveries per second, database statements per delivery, the enqueue rate,
// enqueue-to-delivery latency percentiles (measured at the inboxes from a
// timestamp in each body), peak memory and the duplicates the inboxes saw.
// In the same run it measures a bare loop of POSTs with the same concurrency,
// sender and inboxes, and with -sign the raw RSA-2048 signing rate, and
// prints each ratio. Every run stops by itself (-timeout).
//
// Scenarios preset the flags (flags given override them):
//
//	go run ./examples/loadtest                                  # throughput, memory store, 10 domains
//	go run ./examples/loadtest -domains 100 -activities 2000 -store postgres
//	go run ./examples/loadtest -sign -domains 10 -activities 1000
//	go run ./examples/loadtest -scenario latency                # idle queue, in-process
//	go run ./examples/loadtest -scenario latency -store postgres -worker-mode exec
//	go run ./examples/loadtest -store postgres -db-latency 25ms -baseline=false
//	go run ./examples/loadtest -scenario postmortem             # 1 s inbox, 3 activities/s
//	go run ./examples/loadtest -scenario fanout -store postgres # enqueue cost, audience to 1 vs 1,000 domains
//	go run ./examples/loadtest -scenario enqueue -store postgres
//	go run ./examples/loadtest -scenario idle                   # heap per idle domain, 10,000 domains
//
// -store postgres reads -database-url (default $TEST_DATABASE_URL), creates a
// schema of its own and drops it at the end. -db-latency adds a round-trip
// time (half in each direction) through a TCP proxy inside the program.
// -worker-mode exec runs each of -workers queues in a child process (this
// program re-executed with a hidden flag) sharing the database; this
// process then only enqueues and runs the inboxes.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
)

func main() {
	o, err := parseOptions(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if o.child {
		err = runChild(ctx)
	} else {
		var rep *report
		if rep, err = run(ctx, o); err == nil {
			rep.print(os.Stdout)
			if rep.delivered < rep.expected {
				err = fmt.Errorf("%d of %d deliveries did not arrive", rep.expected-rep.delivered, rep.expected)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// run runs the scenario o names.
func run(ctx context.Context, o *options) (*report, error) {
	load := loadAverage()
	var rep *report
	var err error
	switch o.scenario {
	case scenarioFanout:
		rep, err = runFanout(ctx, o)
	case scenarioEnqueue:
		rep, err = runEnqueueRate(ctx, o)
	case scenarioIdle:
		rep, err = runIdle(ctx, o)
	default:
		rep, err = runDeliveries(ctx, o)
	}
	if err != nil {
		return nil, err
	}
	rep.loadStart, rep.loadEnd = load, loadAverage()
	return rep, nil
}
