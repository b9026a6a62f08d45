package finetune

import (
	"encoding/csv"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// synthRun is a finished run of a series whose loss escape is at `at` (never when at < 0) and whose norm escape
// is twice as late.
func synthRun(opt string, q float64, depth int, lambda float64, seed uint64, at float64, budget int) SweepRun {
	r := SweepRun{Optimizer: opt, Q: q, LR: 0.1, Depth: depth, Init: "saddle", InitScale: lambda, Seed: seed,
		Steps: budget, Budget: budget, NormCriterion: "mean ‖ΔW‖/‖W‖ after every step > 0.01"}
	if at >= 0 {
		s, n := int(math.Ceil(at)), 2*at
		r.EscapeAt, r.EscapeStep, r.EscapeNormAt = &at, &s, &n
	}
	return r
}

func TestFitEscapesPowerLawWithSeedsAndLowerBounds(t *testing.T) {
	lambdas := []float64{0.01, 0.03, 0.1, 0.3, 1}
	var runs []SweepRun
	for _, l := range lambdas {
		for seed, jitter := range []float64{0.9, 1, 1.1} {
			// GD at depth 3: steps = 20/λ, around a median of exactly 20/λ; λ = 0.01 needs 2000 > the budget 1000.
			at := 20 / l * jitter
			if at > 1000 {
				at = -1
			}
			runs = append(runs, synthRun("sgd", 2, 3, l, uint64(seed), at, 1000))
		}
	}
	// λ = 0.03 (median 667): one of three seeds never escapes; the median is still exact.
	runs[3].EscapeAt, runs[3].EscapeStep, runs[3].EscapeNormAt = nil, nil, nil
	fits := FitEscapes(runs)
	var loss *EscapeFit
	for i := range fits {
		if fits[i].Criterion == CriterionLoss && fits[i].Kind == "power" {
			loss = &fits[i]
		}
	}
	if loss == nil || len(fits) != 2 {
		t.Fatalf("fits %+v: want one power fit per criterion (GD at depth 3 is not in the log regime)", fits)
	}
	if loss.Points != 4 || loss.LowerBounds != 1 || !loss.Lambdas[0].LowerBound || loss.Lambdas[0].Median != 1000 {
		t.Errorf("points %d, lower bounds %d, λ=0.01 point %+v: want 4 fitted and λ=0.01 kept as a lower bound at the budget",
			loss.Points, loss.LowerBounds, loss.Lambdas[0])
	}
	if p := loss.Lambdas[1]; p.LowerBound || p.Escaped != 2 || math.Abs(p.Median-20/0.03*1.1) > 1e-9 || p.Max != 1000 {
		t.Errorf("λ=0.03 point %+v: one seed censored of three leaves the median exact (the larger escaped one)", p)
	}
	if math.Abs(loss.Slope+1) > 0.05 || loss.CILow == nil || !(*loss.CILow <= loss.Slope && loss.Slope <= *loss.CIHigh) {
		t.Errorf("slope %g CI [%v, %v], want ≈ −1 inside its interval", loss.Slope, loss.CILow, loss.CIHigh)
	}
	if loss.PredictedRegime != "power" || loss.PredictedExponent == nil || *loss.PredictedExponent != -1 || loss.Agrees == nil || !*loss.Agrees {
		t.Errorf("prediction %s %v, agrees %v: want power, −1, true", loss.PredictedRegime, loss.PredictedExponent, loss.Agrees)
	}

	// GD at depth 2 is the log regime: a log fit is made beside the power fit, and a flat series disagrees.
	runs = nil
	for _, l := range lambdas {
		runs = append(runs, synthRun("sgd", 2, 2, l, 0, 30+10*math.Log(1/l), 1000))
		runs = append(runs, synthRun("sign", 1, 2, l, 0, 40*math.Pow(l, -0.5), 1000))
	}
	fits = FitEscapes(runs)
	got := map[string]EscapeFit{}
	for _, f := range fits {
		if f.Criterion == CriterionLoss {
			got[f.Optimizer+" "+f.Kind] = f
		}
	}
	lf, ok := got["sgd log"]
	if !ok || math.Abs(lf.Slope-10) > 1e-9 || lf.Agrees == nil || !*lf.Agrees || lf.PredictedExponent != nil {
		t.Errorf("GD depth 2 log fit %+v: want slope 10 (steps per unit ln(1/λ)), agreeing, no exponent", lf)
	}
	if pf := got["sgd power"]; pf.Agrees != nil || pf.PredictedRegime != "log" {
		t.Errorf("GD depth 2 power fit in the log regime is not judged: %+v", pf)
	}
	if sf := got["sign power"]; math.Abs(sf.Slope+0.5) > 1e-9 || sf.Agrees == nil || *sf.Agrees || *sf.PredictedExponent != 0 {
		t.Errorf("sign descent with slope −0.5 against a bounded prediction must disagree: %+v", sf)
	}
	if _, ok := got["sign log"]; ok {
		t.Errorf("a log fit outside the log regime")
	}

	// The files: fits.csv with the agreed columns, fits.json parseable with null intervals where undefined.
	dir := t.TempDir()
	two := FitEscapes([]SweepRun{synthRun("adam", 1, 2, 0.1, 0, 5, 50), synthRun("adam", 1, 2, 0.3, 0, 4, 50)})
	if err := writeFits(dir, append(fits, two...)); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "fits.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if want := "optimizer,q,depth,lr,init,criterion,kind,points,lower_bounds,slope,ci_low,ci_high,r2,predicted_regime,predicted_exponent,agrees"; !strings.HasPrefix(strings.Join(rows[0], ","), want) {
		t.Errorf("fits.csv header %v", rows[0])
	}
	if len(rows) != 1+len(fits)+len(two) {
		t.Errorf("fits.csv has %d rows for %d fits", len(rows)-1, len(fits)+len(two))
	}
	data, err := os.ReadFile(filepath.Join(dir, "fits.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back struct{ Fits []EscapeFit }
	if err := json.Unmarshal(data, &back); err != nil || len(back.Fits) != len(rows)-1 || back.Fits[len(back.Fits)-1].CILow != nil {
		t.Errorf("fits.json: %v, %d fits; a two-point fit must have a null interval", err, len(back.Fits))
	}
}
