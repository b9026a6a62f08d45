//go:build hftokenizers

package tokenizer

import (
	"fmt"

	rust "github.com/daulet/tokenizers"
)

// NativeAvailable reports whether this binary links the Rust HF tokenizers library.
const NativeAvailable = true

// FromFileNative loads tokenizer.json with the pure-Go loader (for the vocabulary, special tokens and chat
// template) and hands Encode/Decode to the Rust HF tokenizers library through github.com/daulet/tokenizers.
func FromFileNative(path string) (*Tokenizer, error) {
	t, err := FromFile(path)
	if err != nil {
		return nil, err
	}
	r, err := rust.FromFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: rust tokenizers: %w", path, err)
	}
	t.native = rustTokenizer{r}
	return t, nil
}

type rustTokenizer struct{ t *rust.Tokenizer }

func (r rustTokenizer) Encode(text string, addSpecial bool) []int {
	ids, _ := r.t.Encode(text, addSpecial)
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

func (r rustTokenizer) Decode(ids []int, skipSpecial bool) string {
	u := make([]uint32, len(ids))
	for i, id := range ids {
		u[i] = uint32(id)
	}
	return r.t.Decode(u, skipSpecial)
}
