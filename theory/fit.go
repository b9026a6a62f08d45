package theory

import (
	"math"

	"github.com/saddle-ml/saddle/internal/fit"
)

var fitLine = fit.Line

func logs(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Log(x)
	}
	return out
}
