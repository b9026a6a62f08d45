//go:build !hftokenizers

package tokenizer

import "fmt"

// NativeAvailable reports whether this binary links the Rust HF tokenizers library.
const NativeAvailable = false

// FromFileNative would load tokenizer.json with the Rust HF tokenizers library; this build does not include it.
func FromFileNative(path string) (*Tokenizer, error) {
	return nil, fmt.Errorf("%s: this saddle was built without the Rust tokenizers backend; rebuild with -tags hftokenizers "+
		"(needs libtokenizers.a from github.com/daulet/tokenizers) or unset SADDLE_TOKENIZER", path)
}
