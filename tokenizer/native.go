package tokenizer

// nativeTokenizer is an external implementation of Encode/Decode (the Rust HF tokenizers library, behind the
// hftokenizers build tag); the pure-Go pipeline stays the default and still serves everything else.
type nativeTokenizer interface {
	Encode(text string, addSpecial bool) []int
	Decode(ids []int, skipSpecial bool) string
}
