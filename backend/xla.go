//go:build !noxla && cgo && ((linux && (amd64 || arm64)) || (darwin && arm64))

package backend

// The plain xla package, not its autoinstall subpackage: saddle never downloads plugins behind a user's back.
import _ "github.com/gomlx/go-xla/compute/xla"

const xlaCompiled = true
