package lora

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/saddle-ml/saddle/internal/fileio"
	"github.com/saddle-ml/saddle/internal/safetensors"
	"github.com/saddle-ml/saddle/model"
)

// ResolveDir finds the adapter under dir: dir itself when it holds adapter.json (saddle) or adapter_config.json
// (PEFT), else the checkpoint that dir/checkpoints/latest names (a run folder whose training has not finished).
func ResolveDir(dir string) (string, error) {
	if exists(filepath.Join(dir, nativeConfig)) || exists(filepath.Join(dir, PEFTConfigFile)) {
		return dir, nil
	}
	latest := filepath.Join(dir, "checkpoints", "latest")
	data, err := fileio.ReadFile(latest)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(dir); err != nil {
			return "", err
		}
		return "", fmt.Errorf("%s: no adapter here: want %s (saddle), %s (PEFT) or checkpoints/latest", dir, nativeConfig, PEFTConfigFile)
	} else if err != nil {
		return "", err
	}
	name := strings.TrimSpace(string(data))
	if name == "" || filepath.IsAbs(name) || slices.Contains(strings.Split(filepath.ToSlash(name), "/"), "..") {
		return "", fmt.Errorf("%s: %q is not a checkpoint folder name", latest, name)
	}
	for _, cand := range []string{filepath.Join(dir, "checkpoints", name), filepath.Join(dir, name)} {
		if exists(filepath.Join(cand, nativeConfig)) {
			return cand, nil
		}
	}
	return "", fmt.Errorf("%s: names checkpoint %q, but %s has no %s", latest, name, filepath.Join(dir, "checkpoints", name), nativeConfig)
}

// BaseModelOf returns the base model an adapter folder was made for, or "" when it does not say: adapter.json's
// base_model, adapter_config.json's base_model_name_or_path, or the run's config.json "model" (in dir, or two
// levels up for a checkpoint folder DIR/checkpoints/step-N).
func BaseModelOf(dir string) string {
	read := func(path, key string) string {
		data, err := fileio.ReadFile(path)
		if err != nil {
			return ""
		}
		var m map[string]any
		if json.Unmarshal(data, &m) != nil {
			return ""
		}
		s, _ := m[key].(string)
		return s
	}
	for _, c := range []struct{ path, key string }{
		{filepath.Join(dir, nativeConfig), "base_model"},
		{filepath.Join(dir, PEFTConfigFile), "base_model_name_or_path"},
		{filepath.Join(dir, "config.json"), "model"},
		{filepath.Join(dir, "..", "..", "config.json"), "model"},
	} {
		if s := read(c.path, c.key); s != "" {
			return s
		}
	}
	return ""
}

// LoadAny loads the adapter under dir (see ResolveDir) for a model with configuration cfg: saddle's native files
// or a PEFT LoRA adapter written by any tool (PEFT naming with or without an adapter-name infix such as
// ".default", rsLoRA, rank_pattern / alpha_pattern, F32/F16/BF16 tensors). It refuses what it cannot apply
// exactly: DoRA, modules_to_save, LoRA biases, fan_in_fan_out, modules other than the linear layers, and
// init_lora_weights values for which PEFT rewrites the base weights on load (PiSSA, CorDA, OLoRA, LoftQ).
func LoadAny(dir string, cfg model.Config) (*Set, error) {
	dir, err := ResolveDir(dir)
	if err != nil {
		return nil, err
	}
	var set *Set
	if exists(filepath.Join(dir, nativeConfig)) {
		set, _, err = Load(dir)
	} else {
		set, err = ReadPEFT(dir, cfg)
	}
	if err != nil {
		return nil, err
	}
	if err := set.CheckFits(cfg); err != nil {
		return nil, fmt.Errorf("adapter %s: %w", dir, err)
	}
	return set, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// peftModule is one module's factors as read from a PEFT file.
type peftModule struct {
	a, b       *safetensors.Tensor
	keyA, keyB string
}

// ReadPEFT reads a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) as a depth-2 Set.
//
// A Set has one rank and one scale. When rank_pattern / alpha_pattern give modules different ranks or alphas, the
// Set takes the largest rank and the config's lora_alpha (or the alpha all modules share); smaller factors are
// padded with zero rows of A and zero columns of B, and B is multiplied by s_module / s_set. ΔW of every module is unchanged (up to one float32
// rounding of B), so inference is exact; training such a set further would not follow PEFT's dynamics.
func ReadPEFT(dir string, cfg model.Config) (*Set, error) {
	cfgPath := filepath.Join(dir, PEFTConfigFile)
	data, err := fileio.ReadFile(cfgPath)
	if err != nil {
		return nil, err
	}
	pc, err := parsePEFTConfig(cfgPath, data)
	if err != nil {
		return nil, err
	}
	weightsPath := filepath.Join(dir, PEFTWeightsFile)
	if !exists(weightsPath) {
		if exists(filepath.Join(dir, "adapter_model.bin")) {
			return nil, fmt.Errorf("%s: only adapter_model.bin (a PyTorch pickle) is here; saddle reads safetensors (save with safe_serialization=True)", dir)
		}
		return nil, fmt.Errorf("%s: %s is missing", dir, PEFTWeightsFile)
	}
	tensors, _, err := safetensors.Read(weightsPath)
	if err != nil {
		return nil, err
	}
	modules, err := peftModules(weightsPath, tensors, cfg)
	if err != nil {
		return nil, err
	}
	if len(modules) == 0 {
		return nil, fmt.Errorf("%s: no lora_A / lora_B tensors", weightsPath)
	}
	names := make([]string, 0, len(modules))
	for m := range modules {
		names = append(names, m)
	}
	slices.Sort(names)

	// Per-module rank (from the tensors, checked against r / rank_pattern) and scale.
	shapes := cfg.ExpectedShapes()
	ranks := map[string]int{}
	scales, alphas := map[string]float64{}, map[string]float64{}
	maxRank := 0
	for _, m := range names {
		pm := modules[m]
		shape := shapes[m+".weight"]
		out, in := shape[0], shape[1]
		if len(pm.a.Shape) != 2 || len(pm.b.Shape) != 2 || pm.a.Shape[0] < 1 || pm.a.Shape[1] != in || pm.b.Shape[0] != out || pm.b.Shape[1] != pm.a.Shape[0] {
			return nil, fmt.Errorf("%s: module %s: lora_A %v and lora_B %v do not fit the model's [%d, %d] weight as [r, %d] and [%d, r]",
				weightsPath, m, pm.a.Shape, pm.b.Shape, out, in, in, out)
		}
		r := pm.a.Shape[0]
		wantR, err := pc.rankFor(m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfgPath, err)
		}
		if r != wantR {
			return nil, fmt.Errorf("%s: tensor %q has rank %d, but %s gives module %s rank %d", weightsPath, pm.keyA, r, cfgPath, m, wantR)
		}
		alpha, err := pc.alphaFor(m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfgPath, err)
		}
		ranks[m], scales[m], alphas[m] = r, scaling(alpha, r, pc.useRSLoRA), alpha
		maxRank = max(maxRank, r)
	}
	// One alpha for every module (also when alpha_pattern gives them all the same): the Set uses it as is.
	setAlpha := alphas[names[0]]
	for _, m := range names {
		if alphas[m] != setAlpha {
			setAlpha = pc.alpha
			break
		}
	}
	spec := Spec{Rank: maxRank, Alpha: setAlpha, RSLoRA: pc.useRSLoRA, Depth: 2, Dropout: pc.dropout, Init: "lora"}
	set := &Set{Spec: spec}
	global := spec.Scaling()
	for _, m := range names {
		pm := modules[m]
		shape := shapes[m+".weight"]
		a := &Adapter{Module: m, Out: shape[0], In: shape[1]}
		r := ranks[m]
		A := make([]float32, maxRank*a.In)
		copy(A, pm.a.Data) // rows r..maxRank−1 stay zero
		B := make([]float32, a.Out*maxRank)
		ratio := scales[m] / global
		for o := range a.Out {
			for k := range r {
				v := pm.b.Data[o*r+k]
				if ratio != 1 {
					v = float32(float64(v) * ratio)
				}
				B[o*maxRank+k] = v
			}
		}
		a.Factors = [][]float32{A, B}
		set.Adapters = append(set.Adapters, a)
	}
	set.Spec.Targets, set.Spec.Layers = specTargets(set)
	if err := set.Spec.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	return set, nil
}

func scaling(alpha float64, rank int, rslora bool) float64 {
	if rslora {
		return alpha / math.Sqrt(float64(rank))
	}
	return alpha / float64(rank)
}

// specTargets describes the set's modules as Spec targets: module names and layers when they form a full grid,
// else the exact module paths.
func specTargets(set *Set) ([]string, []int) {
	targets, layers := peftTargets(set, 0)
	if names, ok := targets.([]string); ok {
		return names, layers
	}
	paths := make([]string, len(set.Adapters))
	for i, a := range set.Adapters {
		paths[i] = a.Module
	}
	return paths, nil
}

// peftModules groups the tensors of a PEFT file by module, refusing anything but plain LoRA factors of the
// model's linear layers.
func peftModules(path string, tensors map[string]safetensors.Tensor, cfg model.Config) (map[string]*peftModule, error) {
	keys := make([]string, 0, len(tensors))
	for k := range tensors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	shapes := cfg.ExpectedShapes()
	modules := map[string]*peftModule{}
	adapterName := ""
	for _, key := range keys {
		name := strings.TrimPrefix(key, peftPrefix)
		switch {
		case strings.Contains(name, "lora_magnitude_vector"):
			return nil, fmt.Errorf("%s: tensor %q: this is a DoRA adapter (magnitude vectors); saddle applies plain LoRA only", path, key)
		case strings.Contains(name, "modules_to_save"):
			return nil, fmt.Errorf("%s: tensor %q: the adapter carries fully trained modules (modules_to_save), which saddle does not apply", path, key)
		case strings.Contains(name, "lora_embedding_"):
			return nil, fmt.Errorf("%s: tensor %q: embedding adapters are not supported (saddle adapts the linear layers %s)", path, key, strings.Join(AllLinear, ", "))
		}
		parts := strings.Split(name, ".")
		i := slices.IndexFunc(parts, func(p string) bool { return p == "lora_A" || p == "lora_B" })
		if i <= 0 {
			return nil, fmt.Errorf("%s: tensor %q is not a LoRA factor (want <module>.lora_A.weight / .lora_B.weight)", path, key)
		}
		rest := parts[i+1:]
		switch {
		case len(rest) >= 1 && rest[len(rest)-1] == "bias":
			return nil, fmt.Errorf("%s: tensor %q: LoRA biases (lora_bias) are not supported", path, key)
		case len(rest) == 2 && rest[1] == "weight":
			if adapterName != "" && adapterName != rest[0] {
				return nil, fmt.Errorf("%s: tensor %q: the file holds several adapters (%q and %q); keep one", path, key, adapterName, rest[0])
			}
			adapterName = rest[0]
		case len(rest) == 1 && rest[0] == "weight":
		default:
			return nil, fmt.Errorf("%s: tensor %q is not a LoRA factor (want <module>.lora_A.weight / .lora_B.weight)", path, key)
		}
		module := strings.Join(parts[:i], ".")
		_, short, ok := splitModule(module)
		if _, known := shapes[module+".weight"]; !ok || !known || !slices.Contains(AllLinear, short) {
			return nil, fmt.Errorf("%s: tensor %q: %s is not a linear layer of this %s model (saddle adapts %s in model.layers.N)",
				path, key, module, cfg.Architecture, strings.Join(AllLinear, ", "))
		}
		pm := modules[module]
		if pm == nil {
			pm = &peftModule{}
			modules[module] = pm
		}
		t := tensors[key]
		if parts[i] == "lora_A" {
			if pm.a != nil {
				return nil, fmt.Errorf("%s: tensor %q: module %s has lora_A twice (%q)", path, key, module, pm.keyA)
			}
			pm.a, pm.keyA = &t, key
		} else {
			if pm.b != nil {
				return nil, fmt.Errorf("%s: tensor %q: module %s has lora_B twice (%q)", path, key, module, pm.keyB)
			}
			pm.b, pm.keyB = &t, key
		}
	}
	for m, pm := range modules {
		if pm.a == nil || pm.b == nil {
			return nil, fmt.Errorf("%s: module %s has only one of lora_A and lora_B", path, m)
		}
	}
	return modules, nil
}

// peftConfig is what ReadPEFT takes from adapter_config.json.
type peftConfig struct {
	path                string
	r                   int
	alpha               float64
	dropout             float64
	useRSLoRA           bool
	rankKeys, alphaKeys []pattern // in file order: PEFT takes the first that matches
	ranks               map[string]int
	alphas              map[string]float64
}

// parsePEFTConfig reads adapter_config.json and refuses LoRA variants saddle cannot apply exactly.
func parsePEFTConfig(path string, data []byte) (*peftConfig, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	get := func(key string, dst any) error {
		v, ok := raw[key]
		if !ok || string(bytes.TrimSpace(v)) == "null" {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("%s: %s: %w", path, key, err)
		}
		return nil
	}
	var (
		peftType, bias                                     = "", "none"
		useDoRA, fanInFanOut, loraBias                     bool
		modulesToSave, targetParams                        []string
		layerReplication, trainableTokens, aloraInvocation any
		targets                                            json.RawMessage
	)
	pc := &peftConfig{path: path, alpha: 8} // PEFT's default lora_alpha
	for _, f := range []struct {
		key string
		dst any
	}{
		{"peft_type", &peftType}, {"r", &pc.r}, {"lora_alpha", &pc.alpha}, {"lora_dropout", &pc.dropout},
		{"use_rslora", &pc.useRSLoRA}, {"use_dora", &useDoRA}, {"fan_in_fan_out", &fanInFanOut}, {"bias", &bias},
		{"lora_bias", &loraBias}, {"modules_to_save", &modulesToSave}, {"target_parameters", &targetParams},
		{"layer_replication", &layerReplication}, {"trainable_token_indices", &trainableTokens},
		{"alora_invocation_tokens", &aloraInvocation}, {"target_modules", &targets},
	} {
		if err := get(f.key, f.dst); err != nil {
			return nil, err
		}
	}
	switch {
	case peftType != "LORA":
		return nil, fmt.Errorf("%s: peft_type %q is not supported (only LORA)", path, peftType)
	case useDoRA:
		return nil, fmt.Errorf("%s: use_dora is true: DoRA adapters are not supported (saddle applies plain LoRA)", path)
	case fanInFanOut:
		return nil, fmt.Errorf("%s: fan_in_fan_out is true (GPT-2 style Conv1D weights); saddle's Llama-family layers are nn.Linear", path)
	case bias != "none":
		return nil, fmt.Errorf("%s: bias %q: adapters that train biases are not supported (want \"none\")", path, bias)
	case loraBias:
		return nil, fmt.Errorf("%s: lora_bias is true: LoRA biases are not supported", path)
	case len(modulesToSave) > 0:
		return nil, fmt.Errorf("%s: modules_to_save %v: fully trained modules are not supported (saddle applies only LoRA factors)", path, modulesToSave)
	case len(targetParams) > 0:
		return nil, fmt.Errorf("%s: target_parameters %v are not supported", path, targetParams)
	case layerReplication != nil:
		return nil, fmt.Errorf("%s: layer_replication is not supported", path)
	case trainableTokens != nil:
		return nil, fmt.Errorf("%s: trainable_token_indices is not supported (it changes embeddings)", path)
	case aloraInvocation != nil:
		return nil, fmt.Errorf("%s: activated LoRA (alora_invocation_tokens) is not supported", path)
	case pc.r < 1:
		return nil, fmt.Errorf("%s: r %d must be >= 1", path, pc.r)
	case !(pc.alpha > 0) || math.IsInf(pc.alpha, 0):
		return nil, fmt.Errorf("%s: lora_alpha %g must be positive", path, pc.alpha)
	case pc.dropout < 0 || pc.dropout >= 1:
		return nil, fmt.Errorf("%s: lora_dropout %g must be in [0, 1)", path, pc.dropout)
	}
	if err := checkTargetModules(path, targets); err != nil {
		return nil, err
	}
	if err := checkInitLoraWeights(path, raw["init_lora_weights"]); err != nil {
		return nil, err
	}
	var err error
	if pc.rankKeys, pc.ranks, err = orderedPattern[int](path, "rank_pattern", raw["rank_pattern"]); err != nil {
		return nil, err
	}
	if pc.alphaKeys, pc.alphas, err = orderedPattern[float64](path, "alpha_pattern", raw["alpha_pattern"]); err != nil {
		return nil, err
	}
	return pc, nil
}

// checkTargetModules refuses target names other than the Llama-family linear layers. A single string is a regex
// (PEFT matches it against module paths); the tensors then decide, and peftModules checks them.
func checkTargetModules(path string, raw json.RawMessage) error {
	if len(raw) == 0 {
		return nil
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("%s: target_modules: want a list of names or a regex string: %w", path, err)
	}
	for _, t := range list {
		if short := t[strings.LastIndexByte(t, '.')+1:]; !slices.Contains(AllLinear, short) {
			return fmt.Errorf("%s: target_modules: %q is not supported (saddle adapts the linear layers %s)", path, t, strings.Join(AllLinear, ", "))
		}
	}
	return nil
}

// orderedPattern reads a rank_pattern / alpha_pattern object keeping its key order.
func orderedPattern[T int | float64](path, key string, raw json.RawMessage) ([]pattern, map[string]T, error) {
	vals := map[string]T{}
	if len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil, vals, nil
	}
	if err := json.Unmarshal(raw, &vals); err != nil {
		return nil, nil, fmt.Errorf("%s: %s: %w", path, key, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	var keys []pattern
	if _, err := dec.Token(); err != nil { // '{'
		return nil, nil, fmt.Errorf("%s: %s: %w", path, key, err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s: %w", path, key, err)
		}
		k, _ := tok.(string)
		re, err := regexp.Compile(`^(?:.*\.)?(?:` + k + `)$`) // PEFT's get_pattern_key: re.match(rf"(.*\.)?({key})$", module)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s: pattern %q is not a regex saddle can read: %v", path, key, k, err)
		}
		keys = append(keys, pattern{k, re})
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, nil, fmt.Errorf("%s: %s: %w", path, key, err)
		}
	}
	return keys, vals, nil
}

// pattern is one rank_pattern / alpha_pattern key with its compiled test.
type pattern struct {
	key string
	re  *regexp.Regexp
}

func firstPattern(patterns []pattern, module string) (string, bool) {
	for _, p := range patterns {
		if p.re.MatchString(module) {
			return p.key, true
		}
	}
	return "", false
}

func (pc *peftConfig) rankFor(module string) (int, error) {
	if k, ok := firstPattern(pc.rankKeys, module); ok {
		if r := pc.ranks[k]; r < 1 {
			return 0, fmt.Errorf("rank_pattern %q: rank %d must be >= 1", k, r)
		}
		return pc.ranks[k], nil
	}
	return pc.r, nil
}

func (pc *peftConfig) alphaFor(module string) (float64, error) {
	if k, ok := firstPattern(pc.alphaKeys, module); ok {
		if a := pc.alphas[k]; !(a > 0) || math.IsInf(a, 0) {
			return 0, fmt.Errorf("alpha_pattern %q: alpha %g must be positive", k, a)
		}
		return pc.alphas[k], nil
	}
	return pc.alpha, nil
}

// checkInitLoraWeights accepts the init_lora_weights values after which PEFT loads the adapter onto the base
// weights as they are (true, false, "gaussian", "eva", "orthogonal": they only choose the starting factors) and
// refuses those for which PEFT rewrites the base weights when it loads the adapter (PiSSA, CorDA and OLoRA
// subtract the initial adapter from W; LoftQ replaces W by a quantized residual) and any value PEFT does not know.
// Applied to the unchanged base, such an adapter would give other outputs than in PEFT.
func checkInitLoraWeights(path string, raw json.RawMessage) error {
	if len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("%s: init_lora_weights %s: want true, false or a string such as \"gaussian\"", path, bytes.TrimSpace(raw))
	}
	const convert = "; saddle applies adapters to the unchanged base. Convert it to a plain LoRA adapter in PEFT first " +
		"(save_pretrained with path_initial_model_for_weight_conversion)"
	switch {
	case strings.EqualFold(v, "gaussian"), v == "eva", v == "orthogonal":
		return nil
	case strings.HasPrefix(v, "pissa"):
		return fmt.Errorf("%s: init_lora_weights %q: PEFT subtracts a PiSSA adapter's initial factors from the base weights when it loads it"+convert, path, v)
	case strings.HasPrefix(v, "corda"):
		return fmt.Errorf("%s: init_lora_weights %q: PEFT subtracts a CorDA adapter's initial factors from the base weights when it loads it"+convert, path, v)
	case strings.EqualFold(v, "olora"):
		return fmt.Errorf("%s: init_lora_weights %q: PEFT subtracts an OLoRA adapter's initial factors from the base weights when it loads it"+convert, path, v)
	case v == "loftq":
		return fmt.Errorf("%s: init_lora_weights %q: PEFT replaces the base weights by LoftQ's quantized residual when it loads this adapter; "+
			"saddle applies adapters to the unchanged base", path, v)
	}
	return fmt.Errorf("%s: init_lora_weights %q is not a LoRA initialization saddle knows: it reads adapters made with true, false, "+
		"\"gaussian\", \"eva\" or \"orthogonal\" (those that leave the base weights as they are)", path, v)
}
