// Package backend chooses the compute backend once, in one place: the pure-Go CPU backend ("go", the default) or
// XLA/PJRT ("xla:cuda", "xla:cpu", "xla:/path/to/plugin.so") when a PJRT plugin is installed.
package backend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/gomlx/compute"
	_ "github.com/gomlx/compute/gobackend" // registers "go"
)

// ErrUnknown marks a backend name saddle does not know (a usage error, unlike a known backend that fails to start).
var ErrUnknown = errors.New("unknown backend")

// EnvVar is GoMLX's own variable for the backend configuration; --backend overrides it.
const EnvVar = "GOMLX_BACKEND"

// GoDefault runs the Go backend's ops sequentially: with 2 cores the SIMD matmul kernels already use every core,
// and op-level parallelism on top of that halves throughput (measured 7.8 ms vs 15 ms per LoRA step).
const GoDefault = "go:ops_sequential"

// GoGCPercent is the GOGC saddle uses with the Go backend unless GOGC is set.
const GoGCPercent = 10

// SIMDBuilt reports whether this binary was built with GOEXPERIMENT=simd (set by simd_on.go).
var SIMDBuilt = false

var warnOnce sync.Once

// Resolve returns the backend configuration string that New would use for the flag value (empty = env or default).
func Resolve(flagValue string) string {
	cfg := strings.TrimSpace(flagValue)
	if cfg == "" {
		cfg = strings.TrimSpace(os.Getenv(EnvVar))
	}
	if cfg == "" || cfg == "go" || cfg == "cpu" {
		return GoDefault
	}
	return cfg
}

// New creates the backend named by flagValue (or $GOMLX_BACKEND, or the Go backend). It never downloads anything.
// For xla:NAME it finds the PJRT plugin itself (FindPlugin: go-xla's naming rule in $PJRT_PLUGIN_LIBRARY_PATH and
// go-xla's folders, then pip's JAX plugins and libtpu) and gives go-xla its absolute path; a missing plugin is an
// error that says what to install for that platform and where the search looked. The returned name is the
// configuration asked for (e.g. "xla:cuda"), not the plugin's path.
func New(flagValue string) (compute.Backend, string, error) {
	cfg := Resolve(flagValue)
	name, opts, _ := strings.Cut(cfg, ":")
	load := cfg
	var search *PluginSearch
	switch name {
	case "go":
		WarnIfSlow()
		if os.Getenv("GOGC") == "" {
			// The Go backend's tensors are Go memory: with the default GOGC=100 the heap may grow to twice what is
			// live before a collection, and at real sizes the live part is gigabytes. Collecting at +10 % keeps the
			// peak near what a step needs; the buffers hold no pointers, so collections are cheap. GOGC overrides.
			debug.SetGCPercent(GoGCPercent)
		}
	case "xla", "stablehlo", "shlo", "hlo":
		if !xlaCompiled {
			return nil, cfg, fmt.Errorf("backend %q: this saddle binary was built with -tags noxla; rebuild without it or use --backend go", cfg)
		}
		// The XLA package would otherwise try to download plugins when asked for none by name.
		os.Setenv("GOMLX_NO_AUTO_INSTALL", "1")
		plugin, rest, _ := strings.Cut(opts, ",")
		if plugin == "" {
			return nil, cfg, fmt.Errorf("backend %q: name the PJRT plugin, e.g. --backend xla:cuda, xla:tpu, xla:cpu or xla:/path/to/plugin.so", cfg)
		}
		if rest != "" {
			rest = "," + rest
		}
		path := plugin
		if filepath.IsAbs(plugin) {
			if _, err := os.Stat(plugin); err != nil {
				return nil, cfg, fmt.Errorf("backend %q: PJRT plugin %w", cfg, err)
			}
		} else {
			s := FindPlugin(plugin)
			search, path = &s, s.Path
		}
		if path != "" {
			if strings.Contains(path, ",") {
				return nil, cfg, fmt.Errorf("backend %q: the PJRT plugin's path %s has a comma, which the xla backend cannot take; link the file from another folder and pass --pjrt-plugin", cfg, path)
			}
			if platformOf(plugin) == "cuda" || strings.Contains(strings.ToLower(filepath.Base(path)), "cuda") {
				for k, v := range cudaEnv(path, os.Getenv) {
					os.Setenv(k, v)
				}
			}
			load = "xla:" + path + rest
		}
	default:
		return nil, cfg, fmt.Errorf("%w %q: use go, xla:cuda, xla:tpu, xla:cpu or xla:/path/to/plugin.so", ErrUnknown, cfg)
	}
	b, err := newBackend(load)
	if err != nil {
		if name == "go" {
			return nil, cfg, fmt.Errorf("backend %q: %v", cfg, err)
		}
		msg := firstLine(err)
		if search != nil && search.Path == "" && (strings.Contains(msg, "no plugins found") || strings.Contains(msg, "not found")) {
			// Nothing saddle knows of, and go-xla's own search (which adds the folders of /etc/ld.so.conf) failed too.
			search.Looked = append(search.Looked, "go-xla's search by name (adds the folders of /etc/ld.so.conf)")
			return nil, cfg, fmt.Errorf("backend %q: %s", cfg, search.Advice())
		}
		where := ""
		if search != nil && search.Path != "" {
			where = fmt.Sprintf(" with the plugin %s (found in %s)", search.Path, search.Via)
		} else if load != cfg {
			where = " with the plugin " + strings.TrimPrefix(load, "xla:")
		}
		return nil, cfg, fmt.Errorf("backend %q could not start%s: %s (or use --backend go)", cfg, where, msg)
	}
	return b, cfg, nil
}

func newBackend(cfg string) (b compute.Backend, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return compute.NewWithConfig(cfg)
}

// WarnIfSlow prints, once per process, that the Go backend lacks its SIMD kernels in this build.
func WarnIfSlow() {
	if SIMDBuilt {
		return
	}
	warnOnce.Do(func() {
		fmt.Fprintln(os.Stderr, "WARNING: saddle was built without GOEXPERIMENT=simd: the CPU backend will be ~10-30x slower. "+
			"Rebuild with: GOTOOLCHAIN=go1.27.3 GOEXPERIMENT=simd go build ./cmd/saddle")
	})
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
