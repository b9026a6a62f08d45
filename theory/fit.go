package theory

import "math"

// lineFit is an ordinary least-squares fit y ≈ intercept + slope·x.
type lineFit struct {
	slope, intercept, r2 float64
	maxResidual          float64
}

// fitLine fits y against x; with fewer than two distinct x it returns NaNs. R² is NaN when y is constant
// (nothing to explain), which the report shows as null.
func fitLine(x, y []float64) lineFit {
	nan := math.NaN()
	if len(x) != len(y) || len(x) < 2 {
		return lineFit{nan, nan, nan, nan}
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
		return lineFit{nan, nan, nan, nan}
	}
	f := lineFit{slope: sxy / sxx}
	f.intercept = my - f.slope*mx
	ssRes := 0.0
	for i := range x {
		r := y[i] - (f.intercept + f.slope*x[i])
		ssRes += r * r
		f.maxResidual = math.Max(f.maxResidual, math.Abs(r))
	}
	// Constant y (up to rounding in the mean) leaves nothing to explain: R² is undefined, not 0.
	f.r2 = nan
	if syy > 1e-24*n*math.Max(1, my*my) {
		f.r2 = 1 - ssRes/syy
	}
	return f
}

func logs(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Log(x)
	}
	return out
}
