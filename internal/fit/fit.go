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

// LineCI fits y against x like Line and adds the two-sided 95 % confidence interval of the slope from ordinary
// least squares: slope ± t(0.975, n−2)·s/√Sxx, where s² = Σ residual²/(n−2). It assumes independent residuals of
// equal variance around a straight line; with fewer than three points (no residual degrees of freedom) the interval
// is NaN.
func LineCI(x, y []float64) (f Result, low, high float64) {
	f = Line(x, y)
	low, high = math.NaN(), math.NaN()
	n := len(x)
	if n < 3 || math.IsNaN(f.Slope) {
		return f, low, high
	}
	mx := 0.0
	for _, v := range x {
		mx += v
	}
	mx /= float64(n)
	sxx, ssRes := 0.0, 0.0
	for i := range x {
		sxx += (x[i] - mx) * (x[i] - mx)
		r := y[i] - (f.Intercept + f.Slope*x[i])
		ssRes += r * r
	}
	se := math.Sqrt(ssRes / float64(n-2) / sxx)
	half := T975(n-2) * se
	return f, f.Slope - half, f.Slope + half
}

// t975 holds Student's t 0.975 quantiles for 1…30 degrees of freedom (standard table values).
var t975 = [...]float64{12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
	2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
	2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423}

// T975 is Student's t 0.975 quantile for df degrees of freedom (the half-width factor of a 95 % interval): the
// table up to 30, and beyond it the Cornish–Fisher expansion around the normal quantile 1.96 (error < 1e-4).
func T975(df int) float64 {
	switch {
	case df < 1:
		return math.NaN()
	case df <= len(t975):
		return t975[df-1]
	}
	z, v := 1.959963984540054, float64(df)
	z3, z5 := z*z*z, z*z*z*z*z
	return z + (z3+z)/(4*v) + (5*z5+16*z3+3*z)/(96*v*v)
}
