package fit

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestT975(t *testing.T) {
	// Table ends and the expansion beyond it, against standard values: t(0.975, 40) = 2.0211, t(0.975, 120) = 1.9799.
	for _, c := range []struct {
		df   int
		want float64
	}{{1, 12.7062}, {3, 3.1824}, {30, 2.0423}, {40, 2.0211}, {120, 1.9799}} {
		if got := T975(c.df); math.Abs(got-c.want) > 2e-4 {
			t.Errorf("T975(%d) = %.4f, want %.4f", c.df, got, c.want)
		}
	}
	if !math.IsNaN(T975(0)) {
		t.Errorf("T975(0) should be NaN")
	}
}

func TestLineCIByHand(t *testing.T) {
	// x = 0,1,2,3; y = 0,2,1,3: slope 0.8, intercept 0.3, residuals -0.3,0.9,-0.9,0.3 (SSR 1.8), Sxx 5,
	// se = √(1.8/2/5) = √0.18, half-width 4.3027·√0.18.
	f, lo, hi := LineCI([]float64{0, 1, 2, 3}, []float64{0, 2, 1, 3})
	half := 4.3027 * math.Sqrt(0.18)
	if math.Abs(f.Slope-0.8) > 1e-12 || math.Abs(lo-(0.8-half)) > 1e-9 || math.Abs(hi-(0.8+half)) > 1e-9 {
		t.Errorf("slope %g CI [%g, %g], want 0.8 [%g, %g]", f.Slope, lo, hi, 0.8-half, 0.8+half)
	}
	if _, lo, hi := LineCI([]float64{1, 2}, []float64{1, 2}); !math.IsNaN(lo) || !math.IsNaN(hi) {
		t.Errorf("two points have no residual degrees of freedom; got CI [%g, %g]", lo, hi)
	}
}

func TestLineCICoverage(t *testing.T) {
	// Gaussian noise around a line: the 95 % interval holds the true slope in about 95 % of draws.
	rng := rand.New(rand.NewPCG(1, 2))
	x := []float64{-3, -2, -1, 0, 1}
	hits, n := 0, 4000
	for range n {
		y := make([]float64, len(x))
		for i := range x {
			y[i] = 1.5 - 0.7*x[i] + 0.3*rng.NormFloat64()
		}
		if _, lo, hi := LineCI(x, y); lo <= -0.7 && -0.7 <= hi {
			hits++
		}
	}
	if c := float64(hits) / float64(n); math.Abs(c-0.95) > 0.015 {
		t.Errorf("coverage %.3f, want 0.95 ± 0.015", c)
	}
}
