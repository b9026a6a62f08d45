package gemm_test

import "math"

func math32bits(v float32) uint32 { return math.Float32bits(v) }
