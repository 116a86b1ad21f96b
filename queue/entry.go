package queue

import (
	"sort"

	"github.com/apqueue/apqueue/sender"
	"github.com/apqueue/apqueue/store"
)

// entry is one activity of the log as this process's workers see it: the
// stored activity, the payload shared by all its deliveries (so its digest is
// computed once), and its explicit inboxes grouped by domain, computed once
// per process rather than once per worker.
type entry struct {
	act      store.Activity
	payload  *sender.Activity
	byDomain map[string][]string
}

func newEntry(a store.Activity) *entry {
	e := &entry{
		act:     a,
		payload: &sender.Activity{ID: a.ID, Actor: a.Actor, Body: a.Body},
	}
	if len(a.Inboxes) > 0 {
		e.byDomain = make(map[string][]string, len(a.Domains))
		for _, inbox := range a.Inboxes {
			d := hostOf(inbox)
			e.byDomain[d] = append(e.byDomain[d], inbox)
		}
	}
	return e
}

// footprint approximates the memory an entry holds: its body, its inboxes
// twice (the activity's list and the per-domain index), its domains twice
// (the list and an index's slot), and fixed overheads.
func (e *entry) footprint() int {
	n := 512 + len(e.act.Body) + len(e.act.Actor) + len(e.act.OrderingKey)
	for _, in := range e.act.Inboxes {
		n += 2*len(in) + 96
	}
	for _, d := range e.act.Domains {
		n += len(d) + 48
	}
	for _, a := range e.act.Audiences {
		n += len(a) + 16
	}
	return n
}

// logIndex holds consecutive activities of the log in ID order, indexed by
// the domains they address, so that a domain finds the activities addressed
// to it without looking at the others: the cost of a read follows the
// domain's own deliveries, not the log's traffic.
type logIndex struct {
	entries []*entry            // ascending IDs
	byDom   map[string][]*entry // per addressed domain, ascending IDs
	all     []*entry            // activities addressed to every domain
}

func newLogIndex() logIndex { return logIndex{byDom: make(map[string][]*entry)} }

// push appends e, whose ID is above every ID held.
func (x *logIndex) push(e *entry) {
	x.entries = append(x.entries, e)
	for _, d := range e.act.Domains {
		x.byDom[d] = append(x.byDom[d], e)
	}
	if e.act.AllDomains {
		x.all = append(x.all, e)
	}
}

// popFront removes the oldest n entries.
func (x *logIndex) popFront(n int) {
	for _, e := range x.entries[:n] {
		for _, d := range e.act.Domains {
			l := x.byDom[d]
			if len(l) > 0 && l[0] == e {
				if len(l) == 1 {
					delete(x.byDom, d)
				} else {
					l[0] = nil
					x.byDom[d] = l[1:]
				}
			}
		}
		if e.act.AllDomains && len(x.all) > 0 && x.all[0] == e {
			x.all[0] = nil
			x.all = x.all[1:]
		}
	}
	clear(x.entries[:n])
	x.entries = append(x.entries[:0:0], x.entries[n:]...)
}

// addressed returns up to limit entries after the given ID that address
// dom (by name or as all domains), in ID order.
func (x *logIndex) addressed(dom string, after int64, limit int) []*entry {
	mine := after1(x.byDom[dom], after)
	all := after1(x.all, after)
	if len(all) == 0 {
		return append([]*entry(nil), mine[:min(limit, len(mine))]...)
	}
	out := make([]*entry, 0, min(limit, len(mine)+len(all)))
	for len(out) < limit && (len(mine) > 0 || len(all) > 0) {
		switch {
		case len(all) == 0 || (len(mine) > 0 && mine[0].act.ID < all[0].act.ID):
			out, mine = append(out, mine[0]), mine[1:]
		case len(mine) > 0 && mine[0] == all[0]: // all domains and named too
			out, mine, all = append(out, mine[0]), mine[1:], all[1:]
		default:
			out, all = append(out, all[0]), all[1:]
		}
	}
	return out
}

// after1 returns the suffix of l with IDs above after.
func after1(l []*entry, after int64) []*entry {
	i := sort.Search(len(l), func(i int) bool { return l[i].act.ID > after })
	return l[i:]
}
