package queue

import (
	"slices"
	"sort"
	"time"

	"github.com/apqueue/apqueue/store"
)

// A worker saves its progress above the cursor with its state
// (store.Progress): which activities it settled beyond an unsettled one,
// and how often, and until when, it is waiting to try each delivery it
// attempted. The next owner of the domain, after a graceful stop, a lease
// handover or an admin reload, applies it to the deliveries it reads, so it
// re-sends nothing that was settled and counts attempts on. After a crash
// only what settled since the last checkpoint is sent again.

// deliveryKey names one delivery: an activity to one inbox.
type deliveryKey struct {
	activity int64
	inbox    string
}

// restored is saved progress not yet applied to the deliveries that fill
// creates. It is dropped once fill has read past everything it mentions.
type restored struct {
	settled    []store.IDRange
	deliveries map[deliveryKey]store.DeliveryProgress
	// othersSettled are activities settled on every inbox but the ones
	// deliveries lists for them.
	othersSettled map[int64]bool
	last          int64 // highest activity ID it mentions
}

// newRestored keeps what p says above cursor; nil when nothing is left.
func newRestored(p *store.Progress, cursor int64) *restored {
	if p == nil {
		return nil
	}
	r := &restored{deliveries: make(map[deliveryKey]store.DeliveryProgress)}
	for _, s := range p.Settled {
		if s.Last <= cursor || s.Last < s.First {
			continue
		}
		s.First = max(s.First, cursor+1)
		r.settled = append(r.settled, s)
		r.last = max(r.last, s.Last)
	}
	sort.Slice(r.settled, func(i, j int) bool { return r.settled[i].First < r.settled[j].First })
	for _, d := range p.Deliveries {
		if d.ActivityID <= cursor {
			continue
		}
		r.deliveries[deliveryKey{d.ActivityID, d.Inbox}] = d
		r.last = max(r.last, d.ActivityID)
	}
	for _, id := range p.OthersSettled {
		if id <= cursor {
			continue
		}
		if r.othersSettled == nil {
			r.othersSettled = make(map[int64]bool)
		}
		r.othersSettled[id] = true
		r.last = max(r.last, id)
	}
	if r.last == 0 {
		return nil
	}
	return r
}

// apply gives d what the saved progress says of it, and reports whether it
// is settled already.
func (r *restored) apply(d *delivery) bool {
	id := d.entry.act.ID
	if r.settledAt(id, d.inbox) {
		return true
	}
	p, ok := r.deliveries[deliveryKey{id, d.inbox}]
	if !ok {
		return false
	}
	d.attempts = p.Attempts
	d.nextAttempt = p.NextAttemptAt
	return false
}

// checkOthersSettled drops the mark that activity id is settled on every
// inbox but the ones listed for it when it now goes only to the domain's
// shared inbox (inboxes; shared), learned since and not listed: the saved
// progress says nothing of it, and it is sent. Otherwise the mark stands:
// an inbox added since (a new follower) is taken for one that came after
// the activity was read, as a single owner does, and the listed ones that
// are gone are not sent.
func (r *restored) checkOthersSettled(id int64, inboxes []string, shared string) {
	if !r.othersSettled[id] || shared == "" || len(inboxes) != 1 || inboxes[0] != shared {
		return
	}
	if _, ok := r.deliveries[deliveryKey{id, shared}]; ok {
		return
	}
	delete(r.othersSettled, id)
}

// settledAt reports whether the saved progress says that the delivery of
// activity id to inbox was settled.
func (r *restored) settledAt(id int64, inbox string) bool {
	i := sort.Search(len(r.settled), func(i int) bool { return r.settled[i].Last >= id })
	if i < len(r.settled) && r.settled[i].First <= id {
		return true
	}
	p, ok := r.deliveries[deliveryKey{id, inbox}]
	if !ok {
		return r.othersSettled[id] // only its unsettled inboxes are listed
	}
	return p.Settled
}

// progress returns the worker's progress above its cursor: its pending
// deliveries, what settled and left them (settledAbove, othersSettled),
// and what of the restored progress fill has not reached yet. Its size is
// bounded by the pending deliveries (MaxPendingPerDomain: a pending
// activity's settled inboxes are not listed, see store.Progress), a range
// of settled activities next to each pending activity, and what was
// restored. Called by the run goroutine.
func (w *worker) progress() *store.Progress {
	var p store.Progress
	p.Settled = append(p.Settled, w.settledAbove...)
	// A range of settled activities grows across the IDs addressed
	// elsewhere (vacuously settled) until an unsettled activity ends it.
	var open *store.IDRange
	for i := 0; i < len(w.pending); {
		id := w.pending[i].entry.act.ID
		if id > w.touchedUpTo {
			break // never tried, not settled: nothing to save
		}
		j, settled := i, true
		for j < len(w.pending) && w.pending[j].entry.act.ID == id {
			settled = settled && w.pending[j].settled
			j++
		}
		if settled {
			if open == nil {
				p.Settled = append(p.Settled, store.IDRange{First: id, Last: id})
				open = &p.Settled[len(p.Settled)-1]
			}
			open.Last = id
		} else {
			open = nil
			others := w.othersSettled[id]
			if others {
				p.OthersSettled = append(p.OthersSettled, id)
			}
			for _, d := range w.pending[i:j] {
				if others || d.settled || d.attempts > 0 {
					p.Deliveries = append(p.Deliveries, store.DeliveryProgress{
						ActivityID: id, Inbox: d.inbox, Settled: d.settled, Attempts: d.attempts,
						NextAttemptAt: d.nextAttempt.Truncate(time.Microsecond),
					})
				}
			}
		}
		i = j
	}
	if r := w.restored; r != nil {
		for _, s := range r.settled {
			if s.Last > w.scanned {
				s.First = max(s.First, w.scanned+1)
				p.Settled = append(p.Settled, s)
			}
		}
		for k, d := range r.deliveries {
			if k.activity > w.scanned {
				p.Deliveries = append(p.Deliveries, d)
			}
		}
		for id := range r.othersSettled {
			if id > w.scanned {
				p.OthersSettled = append(p.OthersSettled, id)
			}
		}
		slices.Sort(p.OthersSettled)
		sort.Slice(p.Deliveries, func(i, j int) bool { return p.Deliveries[i].ActivityID < p.Deliveries[j].ActivityID })
	}
	if len(p.Settled) == 0 && len(p.Deliveries) == 0 && len(p.OthersSettled) == 0 {
		return nil
	}
	sort.Slice(p.Settled, func(i, j int) bool { return p.Settled[i].First < p.Settled[j].First })
	return &p
}
