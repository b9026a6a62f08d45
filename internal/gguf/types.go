package gguf

import (
	"math"
	"math/bits"
	"strconv"

	"github.com/saddle-ml/saddle/internal/dtype"
)

// TensorType is a tensor's storage type (ggml_type).
type TensorType uint32

// The tensor types whose data this project reads and writes.
const (
	TypeF32  TensorType = 0
	TypeF16  TensorType = 1
	TypeQ8_0 TensorType = 8
	TypeQ4_K TensorType = 12
	TypeQ6_K TensorType = 14
	TypeBF16 TensorType = 30
)

// typeInfo is a ggml type's name and block: blockSize elements take blockBytes bytes.
type typeInfo struct {
	name                  string
	blockSize, blockBytes int64 // 0 when this package does not know the layout
}

// tensorTypes is the one table of ggml types: the sizes are given for the types internal/dtype decodes (the
// parser checks them against the file) and the integer ones; the other names only make error messages readable.
var tensorTypes = map[TensorType]typeInfo{
	TypeF32: {dtype.F32, 1, 4}, TypeF16: {dtype.F16, 1, 2}, 2: quantInfo(dtype.Q4_0), 3: quantInfo(dtype.Q4_1),
	6: quantInfo(dtype.Q5_0), 7: quantInfo(dtype.Q5_1), TypeQ8_0: quantInfo(dtype.Q8_0), 9: {"Q8_1", 0, 0},
	10: quantInfo(dtype.Q2_K), 11: quantInfo(dtype.Q3_K), TypeQ4_K: quantInfo(dtype.Q4_K), 13: quantInfo(dtype.Q5_K),
	TypeQ6_K: quantInfo(dtype.Q6_K), 15: {"Q8_K", 0, 0}, 16: {"IQ2_XXS", 0, 0}, 17: {"IQ2_XS", 0, 0}, 18: {"IQ3_XXS", 0, 0}, 19: {"IQ1_S", 0, 0},
	20: {"IQ4_NL", 0, 0}, 21: {"IQ3_S", 0, 0}, 22: {"IQ2_S", 0, 0}, 23: {"IQ4_XS", 0, 0}, 24: {"I8", 1, 1},
	25: {"I16", 1, 2}, 26: {"I32", 1, 4}, 27: {"I64", 1, 8}, 28: {"F64", 1, 8}, 29: {"IQ1_M", 0, 0},
	TypeBF16: {dtype.BF16, 1, 2}, 34: {"TQ1_0", 0, 0}, 35: {"TQ2_0", 0, 0}, 39: {"MXFP4", 0, 0},
}

// quantInfo takes a block quantization's layout from internal/dtype.
func quantInfo(name string) typeInfo {
	return typeInfo{name, int64(dtype.BlockSize(name)), int64(dtype.BlockBytes(name))}
}

// String names a ggml type ("Q8_0"), or "type N" for one this package does not know.
func (t TensorType) String() string {
	if l, ok := tensorTypes[t]; ok {
		return l.name
	}
	return "type " + strconv.FormatUint(uint64(t), 10)
}

// TensorTypeByName returns the ggml type with the given name ("F16").
func TensorTypeByName(name string) (TensorType, bool) {
	for t, l := range tensorTypes {
		if l.name == name {
			return t, true
		}
	}
	return 0, false
}

// Size is the byte size of elems elements of type t; ok is false when the layout is not known here, when elems
// is not a whole number of blocks, or when the size would overflow an int64.
func (t TensorType) Size(elems uint64) (int64, bool) {
	l, ok := tensorTypes[t]
	if !ok || l.blockSize == 0 || elems%uint64(l.blockSize) != 0 {
		return 0, false
	}
	hi, lo := bits.Mul64(elems/uint64(l.blockSize), uint64(l.blockBytes))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, false
	}
	return int64(lo), true
}
