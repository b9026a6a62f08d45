package lora

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// The PEFT export must mean the same scale to every reader: PEFT and vLLM (which honour use_rslora) and llama.cpp's
// convert_lora_to_gguf.py (which reads lora_alpha only). So it writes use_rslora false and lora_alpha with
// lora_alpha/r equal to the adapter's scale, and reading it back gives the same ΔW.
func TestPEFTExportScaleIsTheSameForEveryReader(t *testing.T) {
	cfg := tinyConfig()
	for _, c := range []struct {
		name   string
		rank   int
		rslora bool
		depth  int
	}{
		{"plain-r4", 4, false, 2},
		{"rslora-r4", 4, true, 2},
		{"rslora-r8-depth3", 8, true, 3}, // √8 is irrational: α·√8 is rounded once
		{"plain-r6-depth3", 6, false, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := spec("small", c.depth)
			s.Rank, s.RSLoRA, s.Alpha = c.rank, c.rslora, 12
			set, err := Attach(cfg, s)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := WritePEFT(dir, set, PEFTOptions{NumLayers: cfg.NumLayers}); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(filepath.Join(dir, PEFTConfigFile))
			if err != nil {
				t.Fatal(err)
			}
			var pc PEFTConfig
			if err := json.Unmarshal(data, &pc); err != nil {
				t.Fatal(err)
			}
			want := set.Spec.Scaling()
			if pc.UseRSLoRA {
				t.Fatalf("use_rslora true: llama.cpp's converter ignores it and would apply the adapter with lora_alpha/r")
			}
			if pc.R != c.rank {
				t.Fatalf("r %d, want %d", pc.R, c.rank)
			}
			if got := pc.LoraAlpha / float64(pc.R); math.Abs(got-want) > 1e-15*want {
				t.Fatalf("lora_alpha/r = %v, the adapter's scale is %v", got, want)
			}
			back, err := LoadAny(dir, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := back.Spec.Scaling(); math.Abs(got-want) > 1e-15*want {
				t.Fatalf("imported scale %v, exported %v", got, want)
			}
			if len(back.Adapters) != len(set.Adapters) {
				t.Fatalf("imported %d adapters, exported %d", len(back.Adapters), len(set.Adapters))
			}
			for i, a := range set.Adapters {
				dw, gw := set.DeltaW(a), back.DeltaW(back.Adapters[i])
				norm := 0.0
				for _, v := range dw {
					norm = max(norm, math.Abs(v))
				}
				if norm == 0 {
					t.Fatalf("%s: ΔW is zero: the comparison would see nothing", a.Module)
				}
				for j := range dw {
					// float32 storage of the folded B: one rounding.
					if math.Abs(dw[j]-gw[j]) > 1e-6*norm {
						t.Fatalf("%s: merged ΔW[%d] %v after export→import, %v before", a.Module, j, gw[j], dw[j])
					}
				}
			}
		})
	}
}
