package lora

import (
	"testing"

	"github.com/saddle-ml/saddle/internal/testbackend"
)

// TestMain runs the tests on $SADDLE_TEST_BACKEND (default: the Go backend); see internal/testbackend.
func TestMain(m *testing.M) { testbackend.Main(m) }
