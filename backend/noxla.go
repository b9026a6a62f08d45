//go:build noxla || !cgo || !((linux && (amd64 || arm64)) || (darwin && arm64))

package backend

const xlaCompiled = false
