package optimizers

import (
	"math"

	"github.com/saddle-ml/saddle/internal/setting"
)

// Schedule gives the learning rate for a 1-based step; it runs on the host and its value is fed to the graph.
type Schedule func(step int) float64

// NewSchedule returns a learning-rate schedule: a linear warmup from 0 to baseLR over warmupSteps (reaching
// baseLR at step warmupSteps), then kind: "constant" stays at baseLR; "linear" and "cosine" decay to
// minLRRatio·baseLR at totalSteps and stay there. totalSteps may be 0 (unknown) for "constant"; when it is given,
// the warmup must fit in it. Steps below 1 count as step 1. Errors are *setting.Error naming the run setting at
// fault (lr, warmup, steps, min_lr_ratio, schedule).
func NewSchedule(kind string, baseLR float64, warmupSteps, totalSteps int, minLRRatio float64) (Schedule, error) {
	switch {
	case math.IsNaN(baseLR) || math.IsInf(baseLR, 0) || baseLR < 0:
		return nil, setting.Errorf("lr", "%g: the learning rate must be finite and not negative", baseLR)
	case warmupSteps < 0:
		return nil, setting.Errorf("warmup", "%d: warmup steps must not be negative", warmupSteps)
	case totalSteps < 0:
		return nil, setting.Errorf("steps", "%d: total steps must not be negative", totalSteps)
	case !(minLRRatio >= 0 && minLRRatio <= 1):
		return nil, setting.Errorf("min_lr_ratio", "%g: the minimum learning-rate ratio must be in [0, 1]", minLRRatio)
	case totalSteps > 0 && warmupSteps > totalSteps:
		return nil, setting.Errorf("warmup", "%d: warmup (%d steps) is longer than training (%d steps)", warmupSteps, warmupSteps, totalSteps)
	}
	warmup := func(step int) float64 { return baseLR * float64(step) / float64(warmupSteps) }
	var decay func(progress float64) float64 // progress in [0, 1] → multiplier in [minLRRatio, 1]
	switch kind {
	case "constant":
		return func(step int) float64 {
			step = max(step, 1)
			if step < warmupSteps {
				return warmup(step)
			}
			return baseLR
		}, nil
	case "linear":
		decay = func(p float64) float64 { return minLRRatio + (1-minLRRatio)*(1-p) }
	case "cosine":
		decay = func(p float64) float64 { return minLRRatio + (1-minLRRatio)*0.5*(1+math.Cos(math.Pi*p)) }
	default:
		return nil, setting.Errorf("schedule", "%q: unknown kind %q (use constant, linear or cosine)", kind, kind)
	}
	if totalSteps == 0 {
		return nil, setting.Errorf("steps", "%d: %s decay needs the total number of steps", totalSteps, kind)
	}
	return func(step int) float64 {
		step = max(step, 1)
		if step < warmupSteps {
			return warmup(step)
		}
		if step >= totalSteps {
			return baseLR * minLRRatio
		}
		return baseLR * decay(float64(step-warmupSteps)/float64(totalSteps-warmupSteps))
	}, nil
}
