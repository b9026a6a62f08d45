package optimizers_test

import (
	"math"
	"strings"
	"testing"

	"github.com/saddle-ml/saddle/optimizers"
)

func TestSchedules(t *testing.T) {
	const base = 1e-3
	type point struct {
		step int
		lr   float64
	}
	for _, c := range []struct {
		kind          string
		warmup, total int
		ratio         float64
		points        []point
	}{
		{"constant", 10, 0, 0, []point{{0, base / 10}, {1, base / 10}, {5, base / 2}, {10, base}, {11, base}, {1000, base}}},
		{"constant", 0, 0, 0, []point{{1, base}, {7, base}}},
		{"linear", 10, 110, 0.1, []point{{1, base / 10}, {10, base}, {35, base * (0.1 + 0.9*0.75)}, {60, base * 0.55}, {110, base * 0.1}, {500, base * 0.1}}},
		{"linear", 0, 4, 0, []point{{1, base * 0.75}, {2, base * 0.5}, {4, 0}}},
		{"cosine", 10, 110, 0.1, []point{{5, base / 2}, {10, base}, {35, base * (0.1 + 0.9*0.5*(1+math.Sqrt2/2))}, {60, base * 0.55}, {110, base * 0.1}, {111, base * 0.1}}},
		{"cosine", 0, 100, 0, []point{{50, base / 2}, {100, 0}}},
	} {
		s, err := optimizers.NewSchedule(c.kind, base, c.warmup, c.total, c.ratio)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range c.points {
			if got := s(p.step); math.Abs(got-p.lr) > 1e-12 {
				t.Errorf("%s warmup %d total %d ratio %g: step %d lr %g, want %g", c.kind, c.warmup, c.total, c.ratio, p.step, got, p.lr)
			}
		}
		if c.total > 0 { // after warmup, decaying schedules never increase
			for step := max(c.warmup, 1); step < c.total+5; step++ {
				if s(step+1) > s(step)+1e-15 {
					t.Errorf("%s: lr rises from step %d (%g) to %d (%g)", c.kind, step, s(step), step+1, s(step+1))
				}
			}
		}
	}
}

func TestScheduleErrors(t *testing.T) {
	for _, c := range []struct {
		kind          string
		lr            float64
		warmup, total int
		ratio         float64
		want          string
	}{
		{"step", 1e-3, 0, 10, 0, "unknown kind \"step\""},
		{"cosine", -1, 0, 10, 0, "learning rate must be finite and not negative"},
		{"cosine", 1e-3, -1, 10, 0, "warmup steps must not be negative"},
		{"cosine", 1e-3, 0, 10, 1.5, "ratio must be in [0, 1]"},
		{"linear", 1e-3, 20, 10, 0, "warmup (20 steps) is longer than training (10 steps)"},
		{"cosine", 1e-3, 0, 0, 0, "needs the total number of steps"},
	} {
		_, err := optimizers.NewSchedule(c.kind, c.lr, c.warmup, c.total, c.ratio)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewSchedule(%q, %g, %d, %d, %g) error = %v, want %q", c.kind, c.lr, c.warmup, c.total, c.ratio, err, c.want)
		}
	}
}
