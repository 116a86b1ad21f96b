package main

import (
	"github.com/apqueue/apqueue/signer"

	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/apqueue/apqueue/queue"
)

// options are the load generator's settings, from flags and a scenario.
type options struct {
	scenario string

	domains     int
	activities  int
	duration    time.Duration
	rate        float64
	batch       int
	bodyBytes   int
	fanout      string
	recipients  int
	maxInFlight int
	fixedLimit  bool
	globalCap   int
	checkpoint  time.Duration
	backoffMin  time.Duration
	backoffMax  time.Duration
	maxAttempts int
	leaseTTL    time.Duration
	sign        bool
	signScheme  string

	inboxLatency time.Duration
	// inboxCapacity, when positive, is how many requests each inbox works
	// at once; it answers 503 at once beyond.
	inboxCapacity int
	// The faults scenario's inboxes.
	faultRate       float64
	faultSeed       uint64
	faultRetryAfter int
	faultThrottles  int
	faultBurst      int
	faultSaturation int
	failRate        float64
	retryAfter      string

	store       string
	dbPath      string
	txPerBatch  bool
	databaseURL string
	dbLatency   time.Duration
	dbAlternate bool
	dbConns     int
	pollOnly    bool
	enqueueTx   bool
	// idempotencyKeys gives every activity a key of its own.
	idempotencyKeys bool

	workers    int
	workerMode string
	newDomains bool

	rounds           int
	baseline         bool
	baselineDuration time.Duration
	enqueuers        int

	// The many-domain scenarios (instance, backlog, restart, idle).
	knownDomains   int
	compareDomains int
	inboxServers   int
	maxConns       int
	audiences      int
	bigEvery       int
	allEvery       int
	seed           uint64
	windowBytes    int
	idleWindow     time.Duration

	timeout    time.Duration
	verbose    bool
	cpuProfile string
	memProfile string

	// child, set by the hidden -child flag, makes the program a worker
	// process of another load generator (see child.go).
	child bool
	// inboxChild, set by the hidden -inbox-child flag, makes the program
	// the inbox process of another load generator (see inboxprocess.go).
	inboxChild bool
}

// Scenario names.
const (
	scenarioThroughput = "throughput"
	scenarioLatency    = "latency"
	scenarioPostmortem = "postmortem"
	scenarioFanout     = "fanout"
	scenarioEnqueue    = "enqueue"
	scenarioIdle       = "idle"
	scenarioInstance   = "instance"
	scenarioBacklog    = "backlog"
	scenarioRestart    = "restart"
	scenarioFaults     = "faults"
	scenarioTxEnqueue  = "txenqueue"
	scenarioAppend     = "append"
	scenarioFar        = "far"
	scenarioCapacity   = "capacity"
)

// Fan-out modes: how an activity names its recipients.
const (
	fanoutInboxes  = "inboxes"
	fanoutAudience = "audience"
	fanoutAll      = "all"
)

// scenarios are presets: flags given on the command line override them.
var scenarios = map[string]struct {
	doc string
	set map[string]string
}{
	scenarioThroughput: {
		doc: "deliver -activities to -domains as fast as possible, 3 rounds; the bare POST loop (and with -sign the raw signing rate) measured around each",
		set: map[string]string{"rounds": "3"},
	},
	scenarioLatency: {
		doc: "idle queue: one domain, 20 activities/s, enqueue-to-delivery percentiles",
		set: map[string]string{"domains": "1", "activities": "200", "rate": "20", "baseline": "false"},
	},
	scenarioPostmortem: {
		doc: "the post-mortem: one inbox answering in 1 s, 3 activities/s for it, default queue configuration; reports the lag",
		set: map[string]string{"domains": "1", "inbox-latency": "1s", "rate": "3", "duration": "30s", "baseline": "false"},
	},
	scenarioFar: {
		doc: "a receiver 200 ms away with no capacity limit, 50 activities/s for it for 30 s, default queue configuration; reports the lag and the in-flight limit",
		set: map[string]string{"domains": "1", "inbox-latency": "200ms", "rate": "50", "duration": "30s", "baseline": "false"},
	},
	scenarioCapacity: {
		doc: "a receiver answering in 100 ms that works 3 requests at once and answers 503 beyond, 1,500 activities at once; throughput, 503s and the in-flight limit (compare -fixed-inflight -max-inflight N)",
		set: map[string]string{"domains": "1", "inbox-latency": "100ms", "inbox-capacity": "3", "activities": "1500", "baseline": "false"},
	},
	scenarioFanout: {
		doc: "cost of one Enqueue with an audience reaching 1 domain and -domains domains (and explicit inboxes for comparison); nothing is delivered",
		set: map[string]string{"domains": "1000", "activities": "2000"},
	},
	scenarioEnqueue: {
		doc: "batch enqueue rate (EnqueueMany of -batch activities), nothing is delivered",
		set: map[string]string{"domains": "1", "activities": "50000", "batch": "100"},
	},
	scenarioIdle: {
		doc: "heap and stack per idle domain with -domains domains leased and nothing to deliver, and the CPU they use over -idle-window",
		set: map[string]string{"domains": "20000"},
	},
	scenarioInstance: {
		doc: "a server knowing -known-domains domains (registered at start with shared inboxes, served by -inbox-servers loopback servers through a fake DNS): a realistic mix of -activities (Zipf-followed audiences of 1–50 domains, every -big-every-th from a big account on 2,000 domains, every -all-every-th to AllDomains, a tenth direct messages), then a mix confined to the -compare-domains most followed domains with -known-domains and with -compare-domains known; deliveries/s, CPU per 1,000 deliveries, resolver calls, heap, and the CPU ratio",
		set: map[string]string{"activities": "3000"},
	},
	scenarioBacklog: {
		doc: "a backlog of -activities to all -domains enqueued before Start and drained, once by explicit inboxes and once by audience (the same shared inboxes), with the bare POST loop around each; drain rates and their ratios",
		set: map[string]string{"domains": "100", "activities": "1000"},
	},
	scenarioRestart: {
		doc: "restart with -domains domains behind: a backlog of -activities (-recipients domains each, -body-bytes) enqueued while no queue runs, drained by a new queue; how often each log row is read from the store, and heap against -window-bytes + 20 KiB per domain",
		set: map[string]string{"domains": "1000", "activities": "5000", "recipients": "5", "body-bytes": "4096", "window-bytes": "4194304"},
	},
	scenarioFaults: {
		doc: "6 domains answering in 100 ms: one activity answered 500 forever, 20% random 500s, bursts of 429 + Retry-After, each with a healthy twin; 20 activities/s for 60 s, a graceful restart and a lease handover mid-run; lag per domain, 429 pauses, attempts before the dead letter, duplicates",
		set: map[string]string{
			"domains": "6", "rate": "20", "duration": "60s", "inbox-latency": "100ms", "baseline": "false", "timeout": "4m",
			"backoff-min": "100ms", "backoff-max": "4s", "max-attempts": "10", "lease-ttl": "6s",
		},
	},
	scenarioTxEnqueue: {
		doc: "-enqueuers callers running BEGIN; INSERT; EnqueueTx; COMMIT vs the same without EnqueueTx, same pool, -rounds of -baseline-duration each (postgres)",
		set: map[string]string{"store": "postgres", "enqueuers": "64", "rounds": "3", "baseline-duration": "5s"},
	},
	scenarioAppend: {
		doc: "single-activity Enqueue from -enqueuers callers vs 1 caller, -rounds of -baseline-duration each",
		set: map[string]string{"store": "postgres", "enqueuers": "8", "rounds": "3"},
	},
}

// parseOptions reads the command line into options, applying the scenario's
// presets to every flag the command line does not set.
func parseOptions(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.StringVar(&o.scenario, "scenario", scenarioThroughput, "preset: throughput, latency, postmortem, far, capacity, fanout, enqueue, idle, txenqueue, append, instance, backlog, restart or faults (flags given override it)")

	fs.IntVar(&o.domains, "domains", 10, "number of remote domains, each a loopback inbox server on its own port")
	fs.IntVar(&o.activities, "activities", 2000, "activities to enqueue")
	fs.DurationVar(&o.duration, "duration", 0, "with -rate: enqueue for this long instead of -activities (activities = rate × duration)")
	fs.Float64Var(&o.rate, "rate", 0, "activities enqueued per second, one Enqueue each; 0: as fast as possible, in EnqueueMany batches of -batch")
	fs.IntVar(&o.batch, "batch", 100, "activities per EnqueueMany when -rate is 0")
	fs.IntVar(&o.bodyBytes, "body-bytes", 1024, "approximate size of each activity's JSON body")
	fs.StringVar(&o.fanout, "fanout", fanoutInboxes, "how activities name recipients: inboxes (explicit inbox URLs), audience (one followers key resolved per domain to its shared inbox), all (AllDomains, shared inboxes)")
	fs.IntVar(&o.recipients, "recipients", 0, "with -fanout inboxes: domains per activity, rotating over all domains; 0: every domain")
	fs.IntVar(&o.maxInFlight, "max-inflight", 0, "queue.Config.MaxInFlightPerDomain; 0: the queue's default")
	fs.BoolVar(&o.fixedLimit, "fixed-inflight", false, "queue.Config.FixedInFlight: every domain gets -max-inflight requests in flight, no adaptation")
	fs.IntVar(&o.globalCap, "global-inflight", 0, "queue.Config.MaxInFlight: requests in flight across all domains; 0: the queue's default (256), -1: no cap")
	fs.DurationVar(&o.checkpoint, "checkpoint-interval", 0, "queue.Config.CheckpointInterval; 0: the queue's default")
	fs.DurationVar(&o.backoffMin, "backoff-min", 0, "queue.Config.BackoffMin; 0: the queue's default")
	fs.DurationVar(&o.backoffMax, "backoff-max", 0, "queue.Config.BackoffMax; 0: the queue's default")
	fs.IntVar(&o.maxAttempts, "max-attempts", 0, "queue.Config.MaxAttempts; 0: the queue's default")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 0, "queue.Config.LeaseTTL; 0: the queue's default")
	fs.BoolVar(&o.sign, "sign", false, "sign deliveries (RSA-2048); the inboxes verify every signature")
	fs.StringVar(&o.signScheme, "sign-scheme", "cavage", "with -sign: cavage (draft-cavage) or rfc9421 (RFC 9421, rsa-v1_5-sha256), that scheme only")

	fs.DurationVar(&o.inboxLatency, "inbox-latency", 0, "delay before every inbox answers")
	fs.IntVar(&o.inboxCapacity, "inbox-capacity", 0, "requests each inbox works at once, answering 503 at once (no Retry-After) beyond; 0: no limit")
	fs.Float64Var(&o.failRate, "fail-rate", 0, "fraction of requests the inboxes answer 503")
	fs.Float64Var(&o.faultRate, "fault-rate", 0.2, "faults scenario: fraction of attempts the flaky domain answers 500 (no Retry-After)")
	fs.Uint64Var(&o.faultSeed, "fault-seed", 1, "faults scenario: seed of the flaky domain's failures (the same seed fails the same attempts)")
	fs.IntVar(&o.faultRetryAfter, "fault-retry-after", 3, "faults scenario: Retry-After, in seconds, of the throttled domain's 429 answers")
	fs.IntVar(&o.faultThrottles, "fault-throttles", 6, "faults scenario: how many 429 answers the throttled domain gives, in bursts spread evenly over the run")
	fs.IntVar(&o.faultSaturation, "fault-saturation", faultSaturationDefault, "faults scenario: activities enqueued at once after the paced ones, to every domain, to measure each domain's throughput when it has more to send than it can (0: none)")
	fs.IntVar(&o.faultBurst, "fault-burst", 2, "faults scenario: 429 answers in a row in each burst (the throttled domain's requests until its window passes)")
	fs.StringVar(&o.retryAfter, "retry-after", "", "Retry-After header sent with the 503 answers (\"1\" or an HTTP date); empty: none")

	fs.StringVar(&o.store, "store", "memory", "memory, sqlite or postgres")
	fs.StringVar(&o.dbPath, "db", "", "SQLite file for -store sqlite, kept at the end; default: a new file in a temporary directory, removed at the end")
	fs.BoolVar(&o.txPerBatch, "tx", false, "enqueue scenario: each EnqueueManyTx of -batch activities in a transaction of its own (with -batch 1: one transaction per activity); -store sqlite or postgres")
	fs.StringVar(&o.databaseURL, "database-url", os.Getenv("TEST_DATABASE_URL"), "PostgreSQL connection string for -store postgres (default $TEST_DATABASE_URL); the run creates its own schema and drops it")
	fs.DurationVar(&o.dbLatency, "db-latency", 0, "round-trip time added between the queue and PostgreSQL by a TCP proxy in this program (half in each direction), like a database 25 ms away by ping")
	fs.BoolVar(&o.dbAlternate, "db-latency-alternate", false, "with -db-latency: odd rounds (1st, 3rd, ...) run with no added latency, even ones with it, through the same proxy and queue, and the throughput ratio is printed")
	fs.IntVar(&o.dbConns, "db-conns", 8, "connections in each queue's PostgreSQL pool")
	fs.BoolVar(&o.pollOnly, "poll-only", false, "postgres.Config.PollOnly: no LISTEN/NOTIFY, the queue polls")
	fs.BoolVar(&o.enqueueTx, "enqueue-tx", false, "with -rate: enqueue each activity in a transaction of its own with EnqueueTx (postgres)")
	fs.BoolVar(&o.idempotencyKeys, "idempotency-keys", false, "enqueue and append scenarios: give every activity an Activity.IdempotencyKey of its own, to measure what keys cost")

	fs.IntVar(&o.workers, "workers", 1, "queue instances delivering; with postgres they share the database")
	fs.StringVar(&o.workerMode, "worker-mode", "inproc", "inproc: the workers run in this process, which also enqueues; exec: each worker is a child process (this program re-executed) and this process only enqueues and runs the inboxes (postgres or sqlite)")

	fs.BoolVar(&o.newDomains, "new-domains", false, "do not register the domains and wait for their leases before enqueueing: the first activity introduces each domain (first contact); with -fanout inboxes only")
	fs.IntVar(&o.rounds, "rounds", 1, "rounds of -activities, each followed by the baselines; ratios are per round, and the median is reported (scenario throughput: 3)")
	fs.BoolVar(&o.baseline, "baseline", true, "also measure, in the same run, a bare POST loop with the same concurrency and client (and the raw RSA signing rate with -sign)")
	fs.DurationVar(&o.baselineDuration, "baseline-duration", 3*time.Second, "how long each baseline measurement runs")
	fs.IntVar(&o.enqueuers, "enqueuers", 1, "goroutines enqueueing in the enqueue, txenqueue and append scenarios")

	fs.IntVar(&o.knownDomains, "known-domains", 20000, "instance scenario: remote domains the server knows, registered with their shared inboxes at start")
	fs.IntVar(&o.compareDomains, "compare-domains", 100, "instance scenario: the comparison workload draws from this many most followed domains and runs with -known-domains and with this many known; 0: no comparison")
	fs.IntVar(&o.inboxServers, "inbox-servers", 8, "instance and restart scenarios: loopback servers the domains are spread over (domain names resolve to 127.0.0.1 through a DNS server in this program)")
	fs.IntVar(&o.maxConns, "max-conns", 2000, "instance and restart scenarios: requests in flight across all domains, and idle connections kept, at most: a connection to each of 20,000 domains at once would exceed a common open-file limit (the instance scenario's inboxes share this process; the restart scenario's run in another)")
	fs.IntVar(&o.audiences, "audiences", 1000, "instance scenario: followers collections (audiences) the activities come from")
	fs.IntVar(&o.bigEvery, "big-every", 200, "instance scenario: every this many activities, one from a big account followed on 2,000 domains; 0: none")
	fs.IntVar(&o.allEvery, "all-every", 1500, "instance scenario: every this many activities, one to AllDomains; 0: none")
	fs.Uint64Var(&o.seed, "seed", 1, "instance scenario: seed of the workload (audiences, followers, the mix)")
	fs.IntVar(&o.windowBytes, "window-bytes", 0, "queue.Config.WindowBytes; 0: the queue's default")
	fs.DurationVar(&o.idleWindow, "idle-window", 10*time.Second, "idle scenario: how long the CPU of the idle domains is measured")

	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "the run gives up (and reports what is missing) after this long")
	fs.BoolVar(&o.verbose, "v", false, "log the queue's warnings and summaries to stderr")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the queue phase (baselines excluded; idle scenario: the idle window; faults scenario: from the saturation's enqueue to the end of the run; txenqueue: every round, the baseline and the reference included) to this file")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a heap profile, taken when every delivery has arrived (restart scenario: half of them), to this file")
	fs.BoolVar(&o.child, "child", false, "internal: run as a worker process of another load generator")
	fs.BoolVar(&o.inboxChild, "inbox-child", false, "internal: serve the inboxes of another load generator")

	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintln(out, "usage: loadtest [flags]\n\nscenarios (-scenario):")
		for _, name := range []string{scenarioThroughput, scenarioLatency, scenarioPostmortem, scenarioFar, scenarioCapacity, scenarioFanout, scenarioEnqueue, scenarioIdle, scenarioTxEnqueue, scenarioAppend, scenarioInstance, scenarioBacklog, scenarioRestart, scenarioFaults} {
			fmt.Fprintf(out, "  %-11s %s\n", name, scenarios[name].doc)
		}
		fmt.Fprintln(out, "\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	sc, ok := scenarios[o.scenario]
	if !ok {
		return nil, fmt.Errorf("unknown scenario %q", o.scenario)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, v := range sc.set {
		if !given[name] {
			if err := fs.Set(name, v); err != nil {
				return nil, fmt.Errorf("scenario %s: %w", o.scenario, err)
			}
		}
	}
	if o.rate > 0 && o.duration > 0 {
		o.activities = max(1, int(o.rate*o.duration.Seconds()))
	}
	return o, o.validate()
}

func (o *options) validate() error {
	switch {
	case o.child, o.inboxChild:
		return nil
	case o.domains < 1:
		return errors.New("-domains must be at least 1")
	case o.signScheme != string(signer.Cavage) && o.signScheme != string(signer.RFC9421):
		return fmt.Errorf("-sign-scheme must be %s or %s, not %q", signer.Cavage, signer.RFC9421, o.signScheme)
	case o.activities < 1:
		return errors.New("-activities must be at least 1")
	case o.rounds < 1:
		return errors.New("-rounds must be at least 1")
	case o.batch < 1:
		return errors.New("-batch must be at least 1")
	case o.rate < 0:
		return errors.New("-rate must not be negative")
	case o.duration > 0 && o.rate == 0:
		return errors.New("-duration needs -rate")
	case o.inboxCapacity < 0:
		return errors.New("-inbox-capacity must not be negative")
	case o.globalCap < -1:
		return errors.New("-global-inflight must be -1 (no cap), 0 (the default) or positive")
	case o.failRate < 0 || o.failRate >= 1:
		return errors.New("-fail-rate must be in [0, 1)")
	case o.store != "memory" && o.store != "sqlite" && o.store != "postgres":
		return fmt.Errorf("-store %q: want memory, sqlite or postgres", o.store)
	case o.dbPath != "" && o.store != "sqlite":
		return errors.New("-db needs -store sqlite")
	case o.txPerBatch && (o.store == "memory" || o.scenario != scenarioEnqueue):
		return errors.New("-tx needs -scenario enqueue and -store sqlite or postgres")
	case o.store == "postgres" && o.databaseURL == "":
		return errors.New("-store postgres needs -database-url or $TEST_DATABASE_URL")
	case o.dbAlternate && o.dbLatency == 0:
		return errors.New("-db-latency-alternate needs -db-latency")
	case o.scenario == scenarioTxEnqueue && o.store != "postgres":
		return errors.New("-scenario txenqueue needs -store postgres")
	case o.enqueueTx && (o.store != "postgres" || o.rate == 0):
		return errors.New("-enqueue-tx needs -store postgres and -rate")
	case o.enqueuers < 1:
		return errors.New("-enqueuers must be at least 1")
	case o.dbLatency > 0 && o.store != "postgres":
		return errors.New("-db-latency needs -store postgres")
	case o.workers < 1:
		return errors.New("-workers must be at least 1")
	case o.workerMode != "inproc" && o.workerMode != "exec":
		return fmt.Errorf("-worker-mode %q: want inproc or exec", o.workerMode)
	case o.workerMode == "exec" && o.store == "memory":
		return errors.New("-worker-mode exec needs -store postgres or sqlite: child processes share the database")
	case o.fanout != fanoutInboxes && o.fanout != fanoutAudience && o.fanout != fanoutAll:
		return fmt.Errorf("-fanout %q: want inboxes, audience or all", o.fanout)
	case o.recipients < 0 || o.recipients > o.domains:
		return errors.New("-recipients must be in [0, -domains]")
	case o.newDomains && o.fanout != fanoutInboxes:
		return errors.New("-new-domains works with -fanout inboxes only: audiences and AllDomains reach known domains")
	case o.recipients > 0 && o.fanout != fanoutInboxes:
		return errors.New("-recipients works with -fanout inboxes only")
	case o.scenario == scenarioFaults:
		return o.validateFaults()
	case o.knownDomains < 1:
		return errors.New("-known-domains must be at least 1")
	case o.compareDomains < 0 || o.compareDomains > o.knownDomains:
		return errors.New("-compare-domains must be in [0, -known-domains]")
	case o.inboxServers < 1:
		return errors.New("-inbox-servers must be at least 1")
	case o.maxConns < 1:
		return errors.New("-max-conns must be at least 1")
	case o.audiences < 1:
		return errors.New("-audiences must be at least 1")
	case o.bigEvery < 0 || o.allEvery < 0:
		return errors.New("-big-every and -all-every must not be negative")
	case o.windowBytes < 0:
		return errors.New("-window-bytes must not be negative")
	case o.idleWindow < 0:
		return errors.New("-idle-window must not be negative")
	}
	return nil
}

// recipientsPerActivity is how many domains each activity reaches.
func (o *options) recipientsPerActivity() int {
	if o.recipients > 0 {
		return o.recipients
	}
	return o.domains
}

// queueSettings is the queue configuration the flags set.
func (o *options) queueSettings() queueSettings {
	return queueSettings{
		MaxInFlight: o.maxInFlight, FixedLimit: o.fixedLimit, GlobalCap: o.globalCap, Checkpoint: o.checkpoint, BackoffMin: o.backoffMin, WindowBytes: o.windowBytes,
		BackoffMax: o.backoffMax, MaxAttempts: o.maxAttempts, LeaseTTL: o.leaseTTL, Verbose: o.verbose,
	}
}

// inFlight is the requests in flight per domain the bare loop is given to
// match the queue: the fixed limit, or where an adaptive one starts.
func (o *options) inFlight() int {
	upper := orDefault(o.maxInFlight, queue.MaxInFlightPerDomainDefault)
	if o.fixedLimit {
		return upper
	}
	return min(upper, queue.InitialInFlightLimit)
}

// validateFaults checks what the faults scenario needs: its six domains,
// paced activities to every one of them, queues in this process, a
// Retry-After the backoff cap lets through, and enough activities to have a
// broken one.
func (o *options) validateFaults() error {
	switch {
	case o.domains != faultDomains:
		return fmt.Errorf("-scenario faults has %d domains, not -domains %d", faultDomains, o.domains)
	case o.rate <= 0:
		return errors.New("-scenario faults needs -rate")
	case o.activities < 10:
		return errors.New("-scenario faults needs at least 10 activities")
	case o.fanout != fanoutInboxes || o.recipients != 0 || o.newDomains:
		return errors.New("-scenario faults sends every activity to every domain's inbox")
	case o.workers != 1 || o.workerMode != "inproc" || o.rounds != 1:
		return errors.New("-scenario faults starts and stops its own queues in this process, in one round")
	case o.faultRate < 0 || o.faultRate >= 1:
		return errors.New("-fault-rate must be in [0, 1)")
	case o.faultRetryAfter < 0 || o.faultThrottles < 0:
		return errors.New("-fault-retry-after and -fault-throttles must not be negative")
	case o.faultBurst < 1:
		return errors.New("-fault-burst must be at least 1")
	case o.faultSaturation < 0:
		return errors.New("-fault-saturation must not be negative")
	case o.failRate > 0:
		return errors.New("-scenario faults sets its own failures: -fail-rate does not apply")
	}
	return nil
}
