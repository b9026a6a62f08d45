package gemv

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/saddle-ml/saddle/internal/team"
)

// TestTeamMatchesGoroutines: the spinning team computes exactly what goroutines started per product compute (the
// same chunks, so the same bits), for every kind, and several goroutines multiplying at once (one holds the team,
// the others fall back to goroutines) each get their own right answer.
func TestTeamMatchesGoroutines(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	defer func(v bool) { team.Off = v }(team.Off)
	for _, kind := range []Kind{F32, BF16, F16} {
		w, _ := randomMatrix(rng, kind, 515, 300) // 515 rows: a row tail after the last block
		for _, m := range []int{1, 3} {
			x := make([]float32, m*w.Cols)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			product := func(onTeam bool) []float32 {
				team.Off = !onTeam
				dst := make([]float32, m*w.Rows)
				w.MulT(dst, w.Rows, x, m)
				return dst
			}
			want, got := product(false), product(true)
			if !slices.Equal(want, got) {
				t.Fatalf("%s, %d rows of x: the team's product differs from the goroutines'", kind, m)
			}
			if math.IsNaN(float64(want[0])) || want[len(want)-1] == 0 {
				t.Fatalf("%s: implausible product", kind)
			}
			team.Off = false
			var wg sync.WaitGroup
			results := make([][]float32, 6)
			for g := range results {
				wg.Go(func() {
					for range 20 {
						dst := make([]float32, m*w.Rows)
						w.MulT(dst, w.Rows, x, m)
						results[g] = dst
						if !slices.Equal(dst, want) {
							return
						}
					}
				})
			}
			wg.Wait()
			for g, r := range results {
				if !slices.Equal(r, want) {
					t.Fatalf("%s, %d rows of x: concurrent caller %d got another product", kind, m, g)
				}
			}
		}
	}
}
