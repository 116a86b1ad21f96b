package main

import (
	"context"
	"fmt"
	"time"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
)

// Backlog modes: how the backlog's activities name their recipients.
const (
	backlogExplicit = "explicit inboxes"
	backlogAudience = "audience"
)

// backlogReport is what the backlog scenario measured: per round, the drain
// rate of each mode, and the bare POST loop before the first drain and after
// each.
type backlogReport struct {
	concurrency int
	deliveries  int64 // per drain
	drains      []backlogDrain
	bare        []rate
}

// backlogDrain is one drain of the backlog.
type backlogDrain struct {
	mode      string
	rate      rate // deliveries per second and per CPU-second, Start to last delivery
	elapsed   time.Duration
	delivered int64
	retries   int64
	dead      int64
}

// runBacklog is the backlog scenario: o.activities activities, each to every
// one of o.domains domains, enqueued before Start and drained, in each round
// once addressed by explicit (personal) inboxes and once by an audience
// resolved to the same domains' shared inboxes (in turn first); the bare POST loop, with the
// queue's concurrency and sender, is measured before the first drain and
// after each, and every drain is compared with the loops around it.
func runBacklog(ctx context.Context, o *options) (*report, error) {
	in, err := startInboxes(o.domains, inboxConfig{})
	if err != nil {
		return nil, err
	}
	defer in.close()
	snd, err := newSender(o.queueSettings(), sender.HTTPConfig{})
	if err != nil {
		return nil, err
	}
	defer snd.Close()
	br := &backlogReport{concurrency: o.domains * o.inFlight(), deliveries: int64(o.activities * o.domains)}
	br.bare = append(br.bare, bareLoop(ctx, in, snd, br.concurrency, o.baselineDuration, o.bodyBytes))
	seq := 0
	for r := range o.rounds {
		// Alternate which mode drains first, so that neither always has
		// the machine in the same state.
		modes := []string{backlogExplicit, backlogAudience}
		if r%2 == 1 {
			modes[0], modes[1] = modes[1], modes[0]
		}
		for _, mode := range modes {
			d, err := drainBacklog(ctx, o, in, snd, mode, seq)
			if err != nil {
				return nil, fmt.Errorf("%s backlog: %w", mode, err)
			}
			seq += o.activities
			br.drains = append(br.drains, d)
			br.bare = append(br.bare, bareLoop(ctx, in, snd, br.concurrency, o.baselineDuration, o.bodyBytes))
		}
	}
	rep := &report{scenario: o.scenario, opts: o, backlog: br}
	rep.expected = br.deliveries * int64(len(br.drains))
	rep.delivered = in.rec.unique.Load()
	rep.duplicates = in.rec.duplicates.Load()
	return rep, nil
}

// drainBacklog enqueues the backlog (sequence numbers from firstSeq) into a
// fresh store whose domains are registered with their shared inboxes, then
// starts a queue and measures until the last delivery.
func drainBacklog(ctx context.Context, o *options, in *inboxes, snd sender.Sender, mode string, firstSeq int) (backlogDrain, error) {
	d := backlogDrain{mode: mode}
	be, st, err := openStore(ctx, o)
	if err != nil {
		return d, err
	}
	defer be.close()
	var resolver queue.Resolver
	if mode == backlogAudience {
		resolver = sharedInboxResolver(sharedInboxes(in))
	}
	ev := &events{}
	q, err := queue.New(st, snd, queueConfig(o.queueSettings(), resolver, ev))
	if err != nil {
		return d, err
	}
	if _, err := registerKnown(ctx, q, in); err != nil {
		return d, err
	}
	personal := make([]string, len(in.domains))
	for i := range personal {
		personal[i] = in.inbox(i)
	}
	now := time.Now().UnixNano()
	for first := 0; first < o.activities; first += o.batch {
		acts := make([]queue.Activity, 0, o.batch)
		for i := first; i < min(first+o.batch, o.activities); i++ {
			a := queue.Activity{Body: activityBody(firstSeq+i, now, o.bodyBytes)}
			if mode == backlogAudience {
				a.Audiences = []string{followers}
			} else {
				a.Inboxes = personal
			}
			acts = append(acts, a)
		}
		if _, err := q.EnqueueMany(ctx, acts); err != nil {
			return d, err
		}
	}
	before := in.rec.unique.Load()
	want := before + int64(o.activities*o.domains)
	runCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	start, cpu0 := time.Now(), cpuTime()
	if err := q.Start(ctx); err != nil {
		return d, err
	}
	defer func() { _ = stopQueue(ctx, q) }()
	err = waitDeliveries(runCtx, in, want, nil)
	cpu := cpuTime() - cpu0
	d.delivered = in.rec.unique.Load() - before
	if last := in.rec.lastNS.Load(); last > 0 && d.delivered > 0 {
		d.elapsed = time.Unix(0, last).Sub(start)
	}
	d.rate = newRate(d.delivered, d.elapsed, cpu)
	d.retries, d.dead = ev.retries.Load(), ev.deadLetters.Load()
	return d, err
}

// ratio is drain i over the mean of the bare loops around it.
func (r *backlogReport) ratio(i int) (wall, cpu float64) {
	b := around(r.bare, i)
	if b.wall > 0 {
		wall = r.drains[i].rate.wall / b.wall
	}
	if b.cpu > 0 {
		cpu = r.drains[i].rate.cpu / b.cpu
	}
	return wall, cpu
}

// bareRatio is the median over the rounds of mode's drain rate over the
// bare loops around it.
func (r *backlogReport) bareRatio(mode string) (wall, cpu float64) {
	var ws, cs []float64
	for i, d := range r.drains {
		if d.mode == mode {
			w, c := r.ratio(i)
			ws, cs = append(ws, w), append(cs, c)
		}
	}
	return median(ws), median(cs)
}

// modeRatio is the median over the rounds of the explicit drain's rate over
// the audience drain's.
func (r *backlogReport) modeRatio() (wall, cpu float64) {
	var ws, cs []float64
	for i := 0; i+1 < len(r.drains); i += 2 { // a round's two drains
		e, a := r.drains[i].rate, r.drains[i+1].rate
		if r.drains[i].mode == backlogAudience {
			e, a = a, e
		}
		if a.wall > 0 && a.cpu > 0 {
			ws, cs = append(ws, e.wall/a.wall), append(cs, e.cpu/a.cpu)
		}
	}
	return median(ws), median(cs)
}

func (r *backlogReport) print(p func(string, ...any), o *options) {
	p("  setup          store %s, %d domains, a backlog of %d activities to every domain (%d deliveries) enqueued before Start, %d round(s)",
		o.store, o.domains, o.activities, r.deliveries, o.rounds)
	for i, d := range r.drains {
		w, c := r.ratio(i)
		p("  %-16s %d of %d delivered in %s: %.0f deliveries/s, %.0f per CPU-second; vs the bare loop %.2f (per CPU-second %.2f); retries %d, dead letters %d",
			d.mode, d.delivered, r.deliveries, d.elapsed.Round(time.Millisecond), d.rate.wall, d.rate.cpu, w, c, d.retries, d.dead)
	}
	p("  bare POST loop %s deliveries/s (before the first drain and after each); %d goroutines, the queue's sender", list(walls(r.bare), "%.0f"), r.concurrency)
	for _, mode := range []string{backlogExplicit, backlogAudience} {
		w, c := r.bareRatio(mode)
		p("  %s/bare %.2f (per CPU-second %.2f), median of the rounds (target ≥ 0.7 memory, ≥ 0.5 PostgreSQL)", mode, w, c)
	}
	w, c := r.modeRatio()
	p("  explicit/audience %.2f (per CPU-second %.2f), median of the rounds (target ≥ 0.9)", w, c)
}
