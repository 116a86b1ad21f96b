package postgres_test

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/apqueue/apqueue/internal/pgtest"
	"github.com/apqueue/apqueue/store"
)

func benchActivities(n int) []store.NewActivity {
	out := make([]store.NewActivity, n)
	for i := range out {
		d := fmt.Sprintf("d%d.example", i%50)
		out[i] = store.NewActivity{
			Actor:       "https://local.example/users/alice",
			OrderingKey: fmt.Sprintf("https://local.example/notes/%d", i),
			Body:        []byte(`{"type":"Create","object":{"type":"Note","content":"hello, fediverse"}}`),
			Inboxes:     []string{"https://" + d + "/inbox"},
			Domains:     []string{d},
		}
	}
	return out
}

// BenchmarkAppend measures Append in batches of several sizes, serially and
// from parallel goroutines; activities/s is the figure to compare.
//
//	TEST_DATABASE_URL=... go test -run '^$' -bench Append ./store/postgres/
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{1, 100, 1000} {
		for _, parallel := range []bool{false, true} {
			b.Run(fmt.Sprintf("batch=%d/parallel=%v", size, parallel), func(b *testing.B) {
				s, _ := newStoreWith(b, pgtest.Options{MaxConns: 8})
				batch := benchActivities(size)
				b.ResetTimer()
				if parallel {
					b.SetParallelism(2) // 2×GOMAXPROCS goroutines
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := s.Append(b.Context(), batch); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					for b.Loop() {
						_, err := s.Append(b.Context(), batch)
						require.NoError(b, err)
					}
				}
				b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "activities/s")
			})
		}
	}
}

// BenchmarkAppendTx measures AppendTx of one activity in a caller's
// transaction, including the commit.
func BenchmarkAppendTx(b *testing.B) {
	s, db := newStoreWith(b, pgtest.Options{MaxConns: 8})
	batch := benchActivities(1)
	b.SetParallelism(2)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			err := pgx.BeginFunc(b.Context(), db.Pool, func(tx pgx.Tx) error {
				_, err := s.AppendTx(b.Context(), tx, batch)
				return err
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "activities/s")
}
