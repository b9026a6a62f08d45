package dtype

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Range is where one tensor's data lie in a file: Size bytes from the absolute offset Offset.
type Range struct {
	Name         string
	Offset, Size int64
}

// CheckOverlap refuses tensors of one file whose data overlap: a well-formed GGUF or safetensors file stores each
// tensor once, and overlapping ranges are a sign of a corrupt or crafted header. Errors name file and both
// tensors.
func CheckOverlap(file string, ranges []Range) error {
	sorted := slices.Clone(ranges)
	slices.SortFunc(sorted, func(a, b Range) int {
		if a.Offset != b.Offset {
			return cmp.Compare(a.Offset, b.Offset)
		}
		return strings.Compare(a.Name, b.Name)
	})
	var prev *Range
	for i := range sorted {
		s := &sorted[i]
		if s.Size == 0 {
			continue
		}
		if prev != nil && s.Offset < prev.Offset+prev.Size {
			return fmt.Errorf("%s: tensor %q: data [%d, %d) overlaps tensor %q [%d, %d)", file, s.Name,
				s.Offset, s.Offset+s.Size, prev.Name, prev.Offset, prev.Offset+prev.Size)
		}
		if prev == nil || s.Offset+s.Size > prev.Offset+prev.Size {
			prev = s
		}
	}
	return nil
}
