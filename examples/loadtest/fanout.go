package main

import (
	"context"
	"fmt"
	"time"

	"github.com/apqueue/apqueue/queue"
	"github.com/apqueue/apqueue/sender"
)

// fanoutRow is the cost of one Enqueue for one way of addressing n domains.
type fanoutRow struct {
	name    string
	domains int
	perOp   time.Duration
}

// fanoutCase is one queue, set up with its domains, being measured.
type fanoutCase struct {
	row fanoutRow
	q   *queue.Queue
	act func(seq int) queue.Activity
	be  *backend
}

// runFanout measures what one Enqueue costs when the activity reaches 1 and
// o.domains domains through an audience (resolved per domain when
// delivering, so enqueueing should not care how many domains there are), and
// through explicit inboxes for comparison. Each case has its own store with
// its domains registered; the queues are not started, so nothing competes
// with the enqueues. Cases are measured in three interleaved rounds of
// o.activities sequential Enqueue calls and the best round counts.
func runFanout(ctx context.Context, o *options) (*report, error) {
	snd, err := sender.NewHTTP(nil) // never called: the queues are not started
	if err != nil {
		return nil, err
	}
	defer snd.Close()
	var cases []*fanoutCase
	defer func() {
		for _, c := range cases {
			c.be.close()
		}
	}()
	for _, spec := range []struct {
		name     string
		domains  int
		audience bool
	}{
		{"audience", 1, true},
		{"audience", o.domains, true},
		{"explicit inboxes", 1, false},
		{"explicit inboxes", o.domains, false},
	} {
		be, err := openBackend(ctx, o, newLogger(o.verbose))
		if err != nil {
			return nil, err
		}
		c := &fanoutCase{row: fanoutRow{name: spec.name, domains: spec.domains}, be: be}
		cases = append(cases, c)
		st, err := be.newStore(ctx)
		if err != nil {
			return nil, err
		}
		names := make([]string, spec.domains)
		inboxes := make([]string, spec.domains)
		for i := range names {
			names[i] = fmt.Sprintf("fanout-%05d.example", i)
			inboxes[i] = "https://" + names[i] + "/inbox"
		}
		// The audience reaches the shared inbox of every domain of the case.
		resolver := queue.ResolverFunc(func(context.Context, string) ([]string, error) { return inboxes, nil })
		if c.q, err = queue.New(st, snd, queueConfig(queueSettings{Verbose: o.verbose}, resolver, nil)); err != nil {
			return nil, err
		}
		if err := c.q.AddDomains(ctx, names...); err != nil {
			return nil, err
		}
		c.act = func(seq int) queue.Activity {
			a := queue.Activity{Body: activityBody(seq, 0, o.bodyBytes)}
			if spec.audience {
				a.Audiences = []string{followers}
			} else {
				a.Inboxes = inboxes
			}
			return a
		}
		for seq := range 100 { // warm up: connections, caches, new domains
			if _, err := c.q.Enqueue(ctx, c.act(seq)); err != nil {
				return nil, err
			}
		}
	}
	for round := range 3 {
		for _, c := range cases {
			start := time.Now()
			for i := range o.activities {
				if _, err := c.q.Enqueue(ctx, c.act(100+round*o.activities+i)); err != nil {
					return nil, err
				}
			}
			perOp := time.Since(start) / time.Duration(o.activities)
			if round == 0 || perOp < c.row.perOp {
				c.row.perOp = perOp
			}
		}
	}
	rep := &report{scenario: o.scenario, opts: o}
	for _, c := range cases {
		rep.fanout = append(rep.fanout, c.row)
	}
	return rep, nil
}
