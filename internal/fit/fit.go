// Package fit holds the least-squares line fit shared by the theory report and escape sweeps.
package fit

import "math"

// Result is an ordinary least-squares fit y ≈ Intercept + Slope·x.
type Result struct {
	Slope, Intercept, R2 float64
	MaxResidual          float64
}

// Line fits y against x; with fewer than two distinct x it returns NaNs. R² is NaN when y is constant
// (nothing to explain), which the report shows as null.
func Line(x, y []float64) Result {
	nan := math.NaN()
	if len(x) != len(y) || len(x) < 2 {
		return Result{nan, nan, nan, nan}
	}
	n := float64(len(x))
	mx, my := 0.0, 0.0
	for i := range x {
		mx += x[i]
		my += y[i]
	}
	mx /= n
	my /= n
	sxx, sxy, syy := 0.0, 0.0, 0.0
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxx += dx * dx
		sxy += dx * dy
		syy += dy * dy
	}
	if sxx == 0 {
		return Result{nan, nan, nan, nan}
	}
	f := Result{Slope: sxy / sxx}
	f.Intercept = my - f.Slope*mx
	ssRes := 0.0
	for i := range x {
		r := y[i] - (f.Intercept + f.Slope*x[i])
		ssRes += r * r
		f.MaxResidual = math.Max(f.MaxResidual, math.Abs(r))
	}
	// Constant y (up to rounding in the mean) leaves nothing to explain: R² is undefined, not 0.
	f.R2 = nan
	if syy > 1e-24*n*math.Max(1, my*my) {
		f.R2 = 1 - ssRes/syy
	}
	return f
}
