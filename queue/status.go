package queue

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/apqueue/apqueue/store"
)

//go:embed status.html
var statusFS embed.FS

var statusPage = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"ago": func(t time.Time, now time.Time) string {
		if t.IsZero() {
			return ""
		}
		return now.Sub(t).Round(time.Second).String()
	},
	"in": func(t time.Time, now time.Time) string {
		if t.IsZero() || !t.After(now) {
			return ""
		}
		return t.Sub(now).Round(time.Second).String()
	},
	"ms": func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		if d < time.Millisecond {
			return d.Round(time.Microsecond).String() // a local receiver
		}
		return d.Round(time.Millisecond).String()
	},
}).ParseFS(statusFS, "status.html"))

// statusRow is one domain on the status page.
type statusRow struct {
	DomainStats
	Behind int64
	Lag    time.Duration
	Class  string
}

type statusView struct {
	Stats
	Now  time.Time
	Rows []statusRow
	// Lookup is the activity ID asked for, Activity its status, and
	// LookupError why there is none.
	Lookup      string
	Activity    *ActivityStatus
	LookupError string
}

// domainStatus is a domain in the JSON status.
type domainStatus struct {
	DomainStats
	Behind     int64   `json:"behind"`
	LagSeconds float64 `json:"lag_seconds"`
}

// StatusHandler serves the queue's stats for an admin: as JSON when the
// request asks for it (Accept: application/json, or ?format=json), else as
// a small HTML page with the domains sorted by lag and the failing ones
// highlighted. With ?activity=ID it serves where that activity stands on
// each domain it addresses instead (Queue.ActivityStatus; 404 for an
// unknown ID, 400 for one that is not a number). It has no authentication
// of its own: mount it behind yours.
func (q *Queue) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Query().Has("activity") {
			q.serveActivityStatus(w, r)
			return
		}
		st, err := q.Stats(r.Context())
		if err != nil {
			http.Error(w, "apqueue: reading stats failed", http.StatusServiceUnavailable)
			q.logger.WarnContext(r.Context(), "apqueue: status page", "error", err)
			return
		}
		now := time.Now()
		rows := statusRows(st, now)
		w.Header().Set("Cache-Control", "no-store")
		if wantsJSON(r) {
			out := struct {
				Stats
				Domains []domainStatus `json:"domains"`
			}{Stats: st}
			for _, row := range rows {
				out.Domains = append(out.Domains, domainStatus{DomainStats: row.DomainStats, Behind: row.Behind, LagSeconds: row.Lag.Seconds()})
			}
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(out)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = statusPage.Execute(w, statusView{Stats: st, Now: now, Rows: rows})
	})
}

// serveActivityStatus serves the status page's lookup of one activity.
func (q *Queue) serveActivityStatus(w http.ResponseWriter, r *http.Request) {
	lookup := strings.TrimSpace(r.URL.Query().Get("activity"))
	view := statusView{Now: time.Now(), Lookup: lookup}
	code := http.StatusOK
	id, err := strconv.ParseInt(lookup, 10, 64)
	if err != nil {
		code, view.LookupError = http.StatusBadRequest, fmt.Sprintf("%q is not an activity ID", lookup)
	} else if st, err := q.ActivityStatus(r.Context(), id); err == nil {
		view.Activity = &st
	} else if errors.Is(err, store.ErrNotFound) {
		code, view.LookupError = http.StatusNotFound, fmt.Sprintf("no activity %d in the log", id)
	} else {
		code, view.LookupError = http.StatusServiceUnavailable, "apqueue: reading the activity's status failed"
		q.logger.WarnContext(r.Context(), "apqueue: status page", "error", err, "activity_id", id)
	}
	w.Header().Set("Cache-Control", "no-store")
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if view.Activity != nil {
			_ = enc.Encode(view.Activity)
		} else {
			_ = enc.Encode(map[string]string{"error": view.LookupError})
		}
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_ = statusPage.Execute(w, view)
}

// statusRows orders the domains by lag, most behind first.
func statusRows(st Stats, now time.Time) []statusRow {
	rows := make([]statusRow, len(st.Domains))
	for i, d := range st.Domains {
		row := statusRow{DomainStats: d, Behind: int64(d.Pending) + d.Unread, Lag: d.Lag(now)}
		switch {
		case d.Status == store.StatusDead:
			row.Class = "dead"
		case d.Status == store.StatusPaused:
			row.Class = "paused"
		case d.Status == store.StatusSuspended:
			row.Class = "suspended"
		case d.FailCount > 0 || d.Blocked != "":
			row.Class = "failing"
		}
		rows[i] = row
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Lag != rows[j].Lag {
			return rows[i].Lag > rows[j].Lag
		}
		if rows[i].Behind != rows[j].Behind {
			return rows[i].Behind > rows[j].Behind
		}
		return rows[i].Domain < rows[j].Domain
	})
	return rows
}

func wantsJSON(r *http.Request) bool {
	if r.URL.Query().Get("format") == "json" {
		return true
	}
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html")
}
