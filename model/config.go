// Package model holds the Llama-family decoder: its configuration, weight loading (HF safetensors, GGUF) and the
// forward pass with KV-cached decoding.
package model

// Config describes a Llama-family decoder. It is read from an HF config.json or from GGUF metadata.
type Config struct {
	Architecture     string  `json:"architecture"` // llama, mistral, qwen2, qwen3
	HiddenSize       int     `json:"hidden_size"`
	IntermediateSize int     `json:"intermediate_size"`
	NumLayers        int     `json:"num_layers"`
	NumHeads         int     `json:"num_heads"`
	NumKVHeads       int     `json:"num_kv_heads"`
	HeadDim          int     `json:"head_dim"`
	VocabSize        int     `json:"vocab_size"`
	MaxPositions     int     `json:"max_positions"`
	RMSNormEps       float64 `json:"rms_norm_eps"`
	RopeTheta        float64 `json:"rope_theta"`
	TieEmbeddings    bool    `json:"tie_embeddings"`
	AttentionBias    bool    `json:"attention_bias"` // q/k/v biases (qwen2)
	QKNorm           bool    `json:"qk_norm"`        // RMSNorm on q and k per head (qwen3)
	BOSTokenID       int     `json:"bos_token_id"`   // -1 when none
	EOSTokenIDs      []int   `json:"eos_token_ids"`

	// RopeScaling is nil for plain RoPE; otherwise see RopeScaling and Config.RopeInverseFrequencies (load.go).
	RopeScaling *RopeScaling `json:"rope_scaling,omitempty"`
	// SlidingWindow > 0 limits attention to the last SlidingWindow positions (Mistral v0.1 sets 4096); 0 = full.
	SlidingWindow int `json:"sliding_window,omitempty"`
}

// Tensor is a host-side float32 tensor in row-major order, with HF layout (Linear weights are [out, in]).
type Tensor struct {
	Shape []int
	Data  []float32
}

// Pretrained is an opened checkpoint: its configuration and where each weight is, keyed by HF parameter names
// such as "model.layers.0.self_attn.q_proj.weight", whatever the file format was. Load reads headers only; the
// weights are read when a Model is built (straight into backend memory, in their storage dtype) or one at a time
// through Tensor. Weights holds weights given in memory instead (tests, synthetic models); they take precedence.
type Pretrained struct {
	Config  Config
	Weights map[string]*Tensor
	Path    string            // the file or folder it came from
	Format  string            // "gguf" or "hf"
	DType   string            // storage dtype of most weights on disk (by element count): "F32", "F16", "BF16", "Q8_0", "Q4_K", ...
	DTypes  map[string]string // storage dtype of each weight on disk, by HF name

	sources map[string]*tensorSource // weights still in their files
	// permute lists GGUF Q/K projections whose rows are in llama.cpp's interleaved layout, with their head count.
	permute map[string]int
}
