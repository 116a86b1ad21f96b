package sqlite_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/store"
)

// benchActivities returns n activities of about 1 KiB, for 50 domains.
func benchActivities(n int) []store.NewActivity {
	out := make([]store.NewActivity, n)
	for i := range out {
		d := fmt.Sprintf("d%d.example", i%50)
		out[i] = store.NewActivity{
			Actor:       "https://local.example/users/alice",
			OrderingKey: fmt.Sprintf("https://local.example/notes/%d", i),
			Body:        fmt.Appendf(nil, `{"type":"Create","object":{"type":"Note","content":"%01000d"}}`, i),
			Inboxes:     []string{"https://" + d + "/inbox"},
			Domains:     []string{d},
		}
	}
	return out
}

// BenchmarkAppend measures Append in batches of several sizes;
// activities/s is the figure to compare. Every call commits, with the WAL
// synced (synchronous FULL).
//
//	go test -run '^$' -bench Append ./store/sqlite/
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s, _ := newStore(b, nil)
			batch := benchActivities(size)
			for b.Loop() {
				_, err := s.Append(b.Context(), batch)
				require.NoError(b, err)
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "activities/s")
		})
	}
}

// BenchmarkAppendTx measures AppendTx of one activity in a caller's
// transaction, including its BEGIN and COMMIT.
func BenchmarkAppendTx(b *testing.B) {
	path := tempPath(b)
	db := openDB(b, dsn(path, ""))
	s := storeOn(b, db, nil)
	batch := benchActivities(1)
	for b.Loop() {
		tx, err := db.BeginTx(b.Context(), nil)
		require.NoError(b, err)
		_, err = s.AppendTx(b.Context(), tx, batch)
		require.NoError(b, err)
		require.NoError(b, tx.Commit())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "activities/s")
}
