package finetune

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// synthetic examples with distinct token values: example e, token i → 100*e+i (+ a mask pattern).
func synthExamples(lens ...int) []Example {
	var exs []Example
	for e, n := range lens {
		ex := Example{Source: fmt.Sprintf("syn:%d", e+1)}
		for i := 0; i < n; i++ {
			ex.Tokens = append(ex.Tokens, int32(100*(e+1)+i))
			ex.Loss = append(ex.Loss, i%3 != 1) // some unweighted tokens
		}
		exs = append(exs, ex)
	}
	return exs
}

func TestPackedWindowsCoverTokens(t *testing.T) {
	exs := synthExamples(5, 9, 1, 13, 4)
	var stream []int32
	var loss []bool
	for _, ex := range exs {
		stream = append(stream, ex.Tokens...)
		loss = append(loss, ex.Loss...)
	}
	for _, T := range []int{1, 3, 4, 7, 31, 32, 100} {
		opts := BatchOptions{SeqLen: T, BatchSize: 2, Pack: true, PadID: 7}
		batches, st, err := EvalBatches(exs, opts)
		if err != nil {
			t.Fatal(err)
		}
		// Walk the rows in order: real targets must be stream[1:] exactly once, in order, with
		// inputs one behind and weights from the mask; padding has weight 0 and PadID.
		var gotT, gotI []int32
		var gotW []float32
		pads := 0
		for _, b := range batches {
			if b.B != 2 || b.T != T || len(b.Inputs) != 2*T || len(b.Targets) != 2*T || len(b.Weights) != 2*T {
				t.Fatalf("T=%d: batch shape B=%d T=%d lens %d/%d/%d", T, b.B, b.T, len(b.Inputs), len(b.Targets), len(b.Weights))
			}
			for i := range b.Targets {
				if len(gotT) < len(stream)-1 {
					gotT, gotI, gotW = append(gotT, b.Targets[i]), append(gotI, b.Inputs[i]), append(gotW, b.Weights[i])
				} else {
					pads++
					if b.Weights[i] != 0 || b.Targets[i] != 7 {
						t.Errorf("T=%d: padding position %d has weight %v target %d", T, i, b.Weights[i], b.Targets[i])
					}
				}
			}
		}
		if !slices.Equal(gotT, stream[1:]) || !slices.Equal(gotI, stream[:len(stream)-1]) {
			t.Errorf("T=%d: targets/inputs do not cover the stream:\n%v\n%v", T, gotT, stream)
		}
		lossTokens := 0
		for i, w := range gotW {
			want := float32(0)
			if loss[i+1] {
				want = 1
				lossTokens++
			}
			if w != want {
				t.Errorf("T=%d: weight of target %d = %v, want %v", T, i+1, w, want)
			}
		}
		wantRows := (len(stream) - 1 + T - 1) / T
		if st.Rows != wantRows || len(batches) != (wantRows+1)/2 || st.Targets != len(stream)-1 || st.LossTokens != lossTokens {
			t.Errorf("T=%d: stats %+v, %d batches; want %d rows", T, st, len(batches), wantRows)
		}
	}
}

func TestPaddedRows(t *testing.T) {
	exs := synthExamples(3, 6, 9)
	T := 5 // rows hold up to 6 tokens
	if _, err := NewBatcher(exs, BatchOptions{SeqLen: T, BatchSize: 1}); err == nil {
		t.Errorf("9-token example accepted with T=5 and no truncation")
	} else if want := "syn:3: example has 9 tokens"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the example (%q)", err, want)
	}
	batches, st, err := EvalBatches(exs, BatchOptions{SeqLen: T, BatchSize: 2, Truncate: true, PadID: 3})
	if err != nil {
		t.Fatal(err)
	}
	if st.Truncated != 1 || st.Rows != 3 || len(batches) != 2 {
		t.Fatalf("stats %+v, %d batches", st, len(batches))
	}
	for r := 0; r < 4; r++ {
		b := batches[r/2]
		row := r % 2
		var toks []int32
		var loss []bool
		if r < 3 {
			n := min(len(exs[r].Tokens), T+1)
			toks, loss = exs[r].Tokens[:n], exs[r].Loss[:n]
		}
		for t0 := 0; t0 < T; t0++ {
			i := row*T + t0
			wantIn, wantTg, wantW := int32(3), int32(3), float32(0)
			if t0 < len(toks) {
				wantIn = toks[t0]
			}
			if t0+1 < len(toks) {
				wantTg = toks[t0+1]
				if loss[t0+1] {
					wantW = 1
				}
			}
			if b.Inputs[i] != wantIn || b.Targets[i] != wantTg || b.Weights[i] != wantW {
				t.Errorf("row %d pos %d: (%d,%d,%v), want (%d,%d,%v)", r, t0, b.Inputs[i], b.Targets[i], b.Weights[i], wantIn, wantTg, wantW)
			}
		}
	}
	// A row that keeps only unweighted tokens after truncation is counted.
	pc := []Example{{Source: "pc", Tokens: []int32{1, 2, 3, 4, 5}, Loss: []bool{false, false, false, true, true}},
		{Source: "ok", Tokens: []int32{1, 2}, Loss: []bool{true, true}}}
	b, err := NewBatcher(pc, BatchOptions{SeqLen: 2, BatchSize: 1, Truncate: true})
	if err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.NoLossRows != 1 || st.Truncated != 1 {
		t.Errorf("stats %+v, want 1 row without loss tokens", st)
	}
	if _, err := NewBatcher(pc[:1], BatchOptions{SeqLen: 2, BatchSize: 1, Truncate: true}); err == nil {
		t.Errorf("data without any loss token accepted")
	}
}

func rowKey(b Batch, r int) string { return fmt.Sprint(b.Inputs[r*b.T : (r+1)*b.T]) }

func TestBatchAtDeterminism(t *testing.T) {
	exs := synthExamples(4, 7, 2, 9, 5, 6, 3, 8, 4, 5, 6, 7)
	for _, pack := range []bool{false, true} {
		opts := BatchOptions{SeqLen: 4, BatchSize: 3, Pack: pack, Truncate: true, Seed: 42}
		b1, err := NewBatcher(exs, opts)
		if err != nil {
			t.Fatal(err)
		}
		b2, _ := NewBatcher(exs, opts)
		opts.Seed = 43
		b3, _ := NewBatcher(exs, opts)
		R := b1.Stats().Rows
		differs := false
		// Out of order and repeated calls give the same batches.
		for _, s := range []int{17, 0, 5, 3, 17, 100, 1} {
			x, y := b1.BatchAt(s), b2.BatchAt(s)
			if !slices.Equal(x.Inputs, y.Inputs) || !slices.Equal(x.Targets, y.Targets) || !slices.Equal(x.Weights, y.Weights) {
				t.Errorf("pack=%v step %d: batches differ for the same seed", pack, s)
			}
			if !slices.Equal(x.Inputs, b3.BatchAt(s).Inputs) {
				differs = true
			}
		}
		if !differs {
			t.Errorf("pack=%v: seeds 42 and 43 give identical batches", pack)
		}
		// Each epoch visits every row exactly once: the first R rows of the stream, and the next R.
		all := map[string]int{}
		evals, _, _ := EvalBatches(exs, BatchOptions{SeqLen: 4, BatchSize: 1, Pack: pack, Truncate: true})
		for _, e := range evals {
			all[rowKey(e, 0)]++
		}
		for epoch := 0; epoch < 2; epoch++ {
			seen := map[string]int{}
			for g := epoch * R; g < (epoch+1)*R; g++ {
				b := b1.BatchAt(g / 3)
				seen[rowKey(b, g%3)]++
			}
			for k, n := range all {
				if seen[k] != n {
					t.Errorf("pack=%v epoch %d: row %s seen %d times, want %d", pack, epoch, k, seen[k], n)
				}
			}
		}
		// Epochs are shuffled differently.
		e0, e1 := b1.perm(0), b1.perm(1)
		if slices.Equal(e0, e1) {
			t.Errorf("pack=%v: epochs 0 and 1 have the same order", pack)
		}
		if got := b1.StepsPerEpoch(); got != (R+2)/3 {
			t.Errorf("StepsPerEpoch %d, want %d", got, (R+2)/3)
		}
	}
}

func TestPermutationUniform(t *testing.T) {
	// Every position of a 4-permutation should see every value about equally often.
	var counts [4][4]int
	for s := uint64(0); s < 4000; s++ {
		for pos, v := range permutation(4, s, 0) {
			counts[pos][v]++
		}
	}
	for pos := range counts {
		for v, n := range counts[pos] {
			if n < 850 || n > 1150 {
				t.Errorf("position %d holds %d in %d of 4000 permutations", pos, v, n)
			}
		}
	}
}

func TestSplitEval(t *testing.T) {
	exs := synthExamples(slices.Repeat([]int{3}, 101)...)
	train, eval, err := SplitEval(exs, 0.1, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(eval) != 10 || len(train) != 91 {
		t.Fatalf("split 101 at 0.1: %d train, %d eval", len(train), len(eval))
	}
	seen := map[string]bool{}
	for _, part := range [][]Example{train, eval} {
		last := -1
		for _, ex := range part {
			if seen[ex.Source] {
				t.Errorf("%s in both parts", ex.Source)
			}
			seen[ex.Source] = true
			var n int
			fmt.Sscanf(ex.Source, "syn:%d", &n)
			if n <= last {
				t.Errorf("order not kept: %d after %d", n, last)
			}
			last = n
		}
	}
	if len(seen) != 101 {
		t.Errorf("%d distinct examples, want 101", len(seen))
	}
	_, eval2, _ := SplitEval(exs, 0.1, 7)
	_, eval3, _ := SplitEval(exs, 0.1, 8)
	src := func(x []Example) (s []string) {
		for _, e := range x {
			s = append(s, e.Source)
		}
		return
	}
	if !slices.Equal(src(eval), src(eval2)) {
		t.Errorf("same seed, different eval sets")
	}
	if slices.Equal(src(eval), src(eval3)) {
		t.Errorf("seeds 7 and 8 give the same eval set")
	}
	if tr, ev, _ := SplitEval(exs[:5], 0.01, 1); len(ev) != 1 || len(tr) != 4 {
		t.Errorf("tiny fraction: %d/%d, want at least one eval example", len(tr), len(ev))
	}
	if tr, ev, _ := SplitEval(exs[:5], 0.99, 1); len(ev) != 4 || len(tr) != 1 {
		t.Errorf("huge fraction: %d/%d, want at least one train example", len(tr), len(ev))
	}
	for _, f := range []float64{0, 1, -0.5} {
		if _, _, err := SplitEval(exs, f, 1); err == nil {
			t.Errorf("fraction %v accepted", f)
		}
	}
	if _, _, err := SplitEval(exs[:1], 0.5, 1); err == nil {
		t.Errorf("one example split")
	}
}

func TestEvalBatchesWeightsSum(t *testing.T) {
	exs := synthExamples(5, 9, 2, 13)
	for _, pack := range []bool{false, true} {
		batches, st, err := EvalBatches(exs, BatchOptions{SeqLen: 4, BatchSize: 3, Pack: pack, Truncate: true})
		if err != nil {
			t.Fatal(err)
		}
		var sum float32
		for _, b := range batches {
			for _, w := range b.Weights {
				sum += w
			}
		}
		if int(sum) != st.LossTokens || len(batches) != (st.Rows+2)/3 {
			t.Errorf("pack=%v: weights sum %v, stats %+v, %d batches", pack, sum, st, len(batches))
		}
	}
}

// The demo data set tokenizes with the real stories260K tokenizer and fits its context.
func TestPipStoriesDemoData(t *testing.T) {
	tok := stories260K(t)
	dir := filepath.Join("..", "data", "pip-stories")
	for _, name := range []string{"train.jsonl", "eval.jsonl", "qa.jsonl"} {
		exs, st, err := LoadExamples(filepath.Join(dir, name), tok, TokenizeOptions{NoEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		longest := 0
		for _, ex := range exs {
			longest = max(longest, len(ex.Tokens))
		}
		if longest > 512 {
			t.Errorf("%s: an example has %d tokens, more than the 512 context", name, longest)
		}
		if _, err := NewBatcher(exs, BatchOptions{SeqLen: 256, BatchSize: 8, Pack: true}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		t.Logf("%s: %d examples, %d tokens (%d in the loss), longest %d", name, st.Examples, st.Tokens, st.LossTokens, longest)
	}
}
