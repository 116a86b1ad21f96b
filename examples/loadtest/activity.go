package main

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

const (
	actor     = "https://local.example/users/alice"
	keyID     = actor + "#main-key"
	followers = actor + "/followers"
)

// Every body carries its sequence number and the wall-clock time it was
// enqueued (Unix nanoseconds), so the inboxes, in this process, measure
// enqueue-to-delivery latency and count duplicates without a shared map,
// even when the deliveries are made by other processes.
const (
	seqField  = `"loadtest_seq":`
	timeField = `"loadtest_enqueued_ns":`
)

// activityBody returns a Create of a Note of about size bytes.
func activityBody(seq int, enqueuedNS int64, size int) []byte {
	head := fmt.Sprintf(`{"@context":"https://www.w3.org/ns/activitystreams","id":"https://local.example/activities/%d","type":"Create","actor":%q,"to":[%q],"object":{"id":"https://local.example/notes/%d","type":"Note","attributedTo":%q,"content":"`,
		seq, actor, followers, seq, actor)
	tail := fmt.Sprintf(`"},%s%d,%s%d}`, seqField, seq, timeField, enqueuedNS)
	pad := max(0, size-len(head)-len(tail))
	return []byte(head + strings.Repeat("x", pad) + tail)
}

// parseMarks returns the sequence number and enqueue time of a body made by
// activityBody.
func parseMarks(body []byte) (seq int, enqueuedNS int64, ok bool) {
	s, ok1 := intAfter(body, seqField)
	t, ok2 := intAfter(body, timeField)
	return int(s), t, ok1 && ok2
}

func intAfter(body []byte, field string) (int64, bool) {
	i := bytes.LastIndex(body, []byte(field))
	if i < 0 {
		return 0, false
	}
	rest := body[i+len(field):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	v, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	return v, err == nil
}

// keyRun makes the idempotency keys of one run of the load generator its
// own, so that a run on a database a previous run used finds no duplicate.
var keyRun = time.Now().UnixNano()

// idempotencyKey returns activity seq's key when o asks for keys, else "".
func idempotencyKey(o *options, seq int) string {
	if !o.idempotencyKeys {
		return ""
	}
	return fmt.Sprintf("loadtest-%d-%d", keyRun, seq)
}
