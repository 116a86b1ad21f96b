package main

import (
	"fmt"
	"math/rand/v2"
)

// workload is the traffic of the instance scenario, planned before the run
// so that every case of a run sends exactly the same activities and the
// inboxes can be checked against the deliveries it implies.
//
// Audiences are followers collections of local actors. The domains that
// follow an actor are drawn from a Zipf distribution over the known domains
// (domain 0 is the most followed, as a few large instances are in the
// fediverse). Most audiences reach 1 to 50 domains, skewed towards few;
// every bigEvery-th activity comes from one of a few big accounts whose
// followers are on 2,000 domains; every allEvery-th activity is addressed to
// AllDomains (an account deletion); a tenth of the others are direct
// messages to 1–5 personal inboxes, with no audience.
type workload struct {
	name string
	// domains is how many domains the workload draws from (indices below
	// it); allDomains, how many an AllDomains activity reaches.
	domains, allDomains int
	// audiences holds each audience's follower domains, distinct.
	audiences [][]int
	acts      []plannedActivity
	// deliveries is the sum of every activity's domains.
	deliveries int64
	// boundCalls is, summed over the activities, the audiences each names
	// plus the domains it reaches: what the resolver calls may add up to at
	// most.
	boundCalls int64
}

// plannedActivity is one activity of a workload.
type plannedActivity struct {
	audience int   // index into workload.audiences, -1 for none
	inboxes  []int // domains addressed through a personal inbox
	all      bool  // AllDomains
}

// workloadShape sets the mix; a zero bigEvery or allEvery leaves that kind
// of activity out.
type workloadShape struct {
	domains, allDomains, audiences, activities int
	bigEvery, allEvery                         int
	bigSize                                    int
	seed                                       uint64
}

// Shape constants: the Zipf exponent of follower domains, how many of the
// audiences are big accounts, the share of direct messages.
const (
	zipfExponent   = 1.2
	bigAudiences   = 5
	directShare    = 0.1
	maxDirect      = 5
	maxAudienceLen = 50
)

// newWorkload plans a workload of shape s.
func newWorkload(name string, s workloadShape) (*workload, error) {
	if s.domains < 1 || s.audiences < 1 || s.activities < 1 {
		return nil, fmt.Errorf("workload %s: needs at least one domain, audience and activity", name)
	}
	r := rand.New(rand.NewPCG(s.seed, 0x5eed))
	zipf := rand.NewZipf(r, zipfExponent, 1, uint64(s.domains-1))
	w := &workload{name: name, domains: s.domains, allDomains: s.allDomains}
	big := 0
	if s.bigEvery > 0 {
		big = min(bigAudiences, s.audiences)
	}
	for a := range s.audiences {
		n := 1 + int(float64(maxAudienceLen-1)*cube(r.Float64()))
		if a < big {
			n = s.bigSize
		}
		w.audiences = append(w.audiences, distinctDomains(r, zipf, min(n, s.domains), s.domains))
	}
	for i := range s.activities {
		var p plannedActivity
		switch {
		case s.allEvery > 0 && i%s.allEvery == s.allEvery/2:
			p = plannedActivity{audience: -1, all: true}
		case big > 0 && i%s.bigEvery == s.bigEvery/2:
			p = plannedActivity{audience: r.IntN(big)}
		case r.Float64() < directShare:
			n := min(1+r.IntN(maxDirect), s.domains)
			p = plannedActivity{audience: -1, inboxes: distinctDomains(r, zipf, n, s.domains)}
		default:
			p = plannedActivity{audience: big + r.IntN(s.audiences-big)}
			if s.audiences == big {
				p.audience = r.IntN(s.audiences)
			}
		}
		n := w.reach(p)
		w.deliveries += int64(n)
		w.boundCalls += int64(n)
		if p.audience >= 0 {
			w.boundCalls++
		}
		w.acts = append(w.acts, p)
	}
	return w, nil
}

// reach is how many domains activity p is delivered to.
func (w *workload) reach(p plannedActivity) int {
	switch {
	case p.all:
		return w.allDomains
	case p.audience >= 0:
		return len(w.audiences[p.audience])
	}
	return len(p.inboxes)
}

func cube(x float64) float64 { return x * x * x }

// distinctDomains draws n distinct domains below limit from zipf, filling up
// uniformly if the distribution's head keeps repeating itself.
func distinctDomains(r *rand.Rand, zipf *rand.Zipf, n, limit int) []int {
	seen := make(map[int]bool, n)
	out := make([]int, 0, n)
	for tries := 0; len(out) < n && tries < 100*n; tries++ {
		if d := int(zipf.Uint64()); !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for len(out) < n {
		if d := r.IntN(limit); !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// audienceKey is the followers collection of local actor a.
func audienceKey(a int) string { return fmt.Sprintf("https://local.example/users/u%d/followers", a) }
