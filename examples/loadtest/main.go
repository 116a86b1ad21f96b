// Command loadtest is apqueue's load generator. It starts local ActivityPub
// inboxes on loopback (one server, one port, one domain each) with a chosen
// latency, failure rate and Retry-After, runs one or more queues with the
// in-memory, the SQLite or the PostgreSQL store, enqueues activities, and prints
// deliveries per second, database statements per delivery, the enqueue rate,
// enqueue-to-delivery latency percentiles (measured at the inboxes from a
// timestamp in each body), peak memory and the duplicates the inboxes saw.
//
// In the same run it measures a bare loop of POSTs with the same
// concurrency (domains × in-flight limit), the same sender and the same
// inboxes, and with -sign the raw RSA-2048 signing rate, and prints each
// ratio. The machine may be shared, so a run has -rounds rounds with the
// baselines measured before the first and after each; every round is
// compared with the baselines around it and the median ratio is printed.
// Every run stops by itself (-timeout); the exit status is 1 if a delivery
// is missing.
//
// Scenarios preset flags (flags given override them); the main commands:
//
//	go run ./examples/loadtest -domains 100 -activities 1000                  # queue/bare, memory store
//	go run ./examples/loadtest -domains 100 -activities 1000 -store postgres  # queue/bare and statements/delivery
//	go run ./examples/loadtest -sign -domains 10 -activities 500              # signed/raw-sign (draft-cavage)
//	go run ./examples/loadtest -sign -sign-scheme rfc9421 -domains 10 -activities 500 # signed/raw-sign (RFC 9421)
//	go run ./examples/loadtest -scenario latency                              # idle enqueue-to-delivery, in-process
//	go run ./examples/loadtest -scenario latency -store postgres -worker-mode exec   # from another process
//	go run ./examples/loadtest -store postgres -domains 100 -activities 1000 -baseline=false \
//		-db-latency 25ms -db-latency-alternate -rounds 4                      # 25 ms database vs 0 ms
//	go run ./examples/loadtest -scenario postmortem                           # 1 s inbox, 3 activities/s: lag
//	go run ./examples/loadtest -scenario far                                  # 200 ms inbox, 50 activities/s: lag, in-flight limit
//	go run ./examples/loadtest -scenario capacity [-fixed-inflight -max-inflight 3]  # inbox working 3 at once, 503 beyond
//	go run ./examples/loadtest -scenario fanout -store postgres               # Enqueue cost: audience to 1 vs 1,000 domains
//	go run ./examples/loadtest -scenario enqueue -store postgres              # batch enqueue rate
//	go run ./examples/loadtest -scenario enqueue -store sqlite -tx -batch 1 -activities 5000  # a transaction per activity
//	go run ./examples/loadtest -domains 100 -activities 1000 -store sqlite    # SQLite: queue/bare and statements/delivery
//	go run ./examples/loadtest -scenario idle                                 # heap and CPU per idle domain, 20,000 domains
//	go run ./examples/loadtest -scenario faults [-store postgres]             # broken activity, 500s, 429s, restart, handover
//	go run ./examples/loadtest -scenario txenqueue [-db-latency 25ms]         # EnqueueTx's cost in a caller's transaction
//	go run ./examples/loadtest -scenario append                               # single-activity Enqueue, 8 callers vs 1
//	go run ./examples/loadtest -scenario instance [-store postgres]           # 20,000 known domains vs 100: CPU per delivery, resolver calls
//	go run ./examples/loadtest -scenario backlog [-store postgres]            # backlog drain: explicit inboxes vs audience vs bare loop
//	go run ./examples/loadtest -scenario restart [-store postgres]            # 1,000 domains behind: log reads per row, heap
//
// The instance and restart scenarios name their domains dNNNNN.instance.test
// with the port of one of -inbox-servers loopback servers, and give the
// sender a resolver (internal/fakedns) that answers every name with
// 127.0.0.1: tens of thousands of domains without a listening socket each.
// The inboxes and the sender share this process, so each connection costs
// two descriptors: those scenarios keep at most -max-conns requests in
// flight across all domains (a wrapper around the sender; the report says
// how many sends waited) and as many idle connections, and raise the
// open-file limit where they may.
//
// -store sqlite runs on a new file in a temporary directory (or -db), with
// a *sql.DB of its own per queue. -store postgres reads -database-url (default $TEST_DATABASE_URL), creates a
// schema of its own, migrates it and drops it at the end. -db-latency adds a
// round-trip time (half in each direction, as ping would measure it) through
// a TCP proxy inside the program; -db-latency-alternate switches it off in
// every other round, so one run compares both. -worker-mode exec runs each
// of -workers queues in a child process (this program re-executed with the
// hidden -child flag) that shares only the database with this process,
// which enqueues and runs the inboxes; -worker-mode inproc (the default)
// runs them in this process, each with its own pool. Unless -new-domains,
// the domains are registered and their leases split between the workers
// before the first enqueue, so what is measured is a running server's
// steady state. -cpuprofile and -memprofile profile the queue phase (the
// idle scenario: -cpuprofile its idle window; the faults scenario: from the
// saturation's enqueue to the end of the run).
//
// -scenario faults measures how the queue copes with hostile receivers. Six
// inboxes (answering in -inbox-latency) receive every activity: one answers
// the activity a tenth of the way through the run 500 forever, one fails
// -fault-rate of attempts with 500 (decided by -fault-seed, the activity and
// the attempt's number, so a run fails the same attempts whatever the
// timing), one answers -fault-throttles 429s with Retry-After:
// -fault-retry-after, in bursts of -fault-burst; each has a healthy twin. A producer queue
// enqueues at -rate for -duration while a delivering queue works; a third of
// the way it is stopped gracefully and a new one started on the same store,
// two thirds of the way another joins and the first stops gracefully (a lease
// handover). Then -fault-saturation activities are enqueued at once, more
// than the domains can take, so that throughput is measured where it is the
// limit; enough of them (4,000 by default) that a healthy domain takes
// about three times longer to drain them than the flaky domain's longest
// chain of retries takes to wait out its backoff. The report gives each
// domain's lag percentiles and throughput against its twin, the pause
// after each 429, the attempts the broken activity got before its dead
// letter and the dead letters stored for it, and the duplicate deliveries
// after the restart and after the handover, each next to the target of
// issue 8. The queue's backoff (-backoff-min,
// -backoff-max, -max-attempts) and -lease-ttl are set so that the broken
// activity can become a dead letter within the run, and are printed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
)

func main() {
	o, err := parseOptions(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	switch {
	case o.child:
		err = runChild(ctx)
	case o.inboxChild:
		err = runInboxChild(ctx)
	default:
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
	case scenarioInstance:
		rep, err = runInstance(ctx, o)
	case scenarioBacklog:
		rep, err = runBacklog(ctx, o)
	case scenarioRestart:
		rep, err = runRestart(ctx, o)
	case scenarioFaults:
		rep, err = runFaults(ctx, o)
	case scenarioTxEnqueue:
		rep, err = runTxEnqueue(ctx, o)
	case scenarioAppend:
		rep, err = runAppendScaling(ctx, o)
	default:
		rep, err = runDeliveries(ctx, o)
	}
	if err != nil {
		return nil, err
	}
	rep.loadStart, rep.loadEnd = load, loadAverage()
	return rep, nil
}
