package backend

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The plugin trees below are fakes: files with the real plugins' names and a few bytes of text, which the search
// must find by name without loading them.

type fakeTree struct {
	t    *testing.T
	root string
	env  map[string]string
}

func newFakeTree(t *testing.T) *fakeTree {
	root := t.TempDir()
	return &fakeTree{t: t, root: root, env: map[string]string{"PATH": filepath.Join(root, "empty-bin")}}
}

// file creates root/rel (with its folders) and returns its path.
func (f *fakeTree) file(rel string) string {
	f.t.Helper()
	p := filepath.Join(f.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("not a shared library"), 0o755); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fakeTree) find(name string) PluginSearch {
	s := searcher{getenv: func(k string) string { return f.env[k] }, root: filepath.Join(f.root, "sys"), home: filepath.Join(f.root, "home")}
	return s.find(name)
}

func wantFound(t *testing.T, r PluginSearch, path string) {
	t.Helper()
	if r.Path != path {
		t.Fatalf("found %q (via %q), want %q\nadvice: %s", r.Path, r.Via, path, r.Advice())
	}
}

func TestFindPluginInSitePackagesOfPythonOnPath(t *testing.T) {
	f := newFakeTree(t)
	f.file("venv/bin/python3")
	f.file("venv/lib/python3.12/site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so")
	want := f.file("venv/lib/python3.12/site-packages/jax_plugins/xla_cuda13/xla_cuda_plugin.so")
	f.env["PATH"] = filepath.Join(f.root, "venv", "bin") + ":" + f.env["PATH"]
	r := f.find("cuda")
	wantFound(t, r, want) // the newer CUDA plugin first
	if !strings.Contains(r.Via, "site-packages") {
		t.Errorf("via %q, want it to say site-packages", r.Via)
	}
}

func TestFindPluginInVirtualEnvLocalAndSystemSitePackages(t *testing.T) {
	for _, tc := range []struct{ name, env, rel string }{
		{"VIRTUAL_ENV", "VIRTUAL_ENV", "myenv/lib/python3.11/site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so"},
		{"CONDA_PREFIX", "CONDA_PREFIX", "conda/lib/python3.10/site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so"},
		{"~/.local", "", "home/.local/lib/python3.13/site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so"},
		{"/usr/local dist-packages", "", "sys/usr/local/lib/python3.11/dist-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so"},
		{"PYENV_ROOT", "PYENV_ROOT", "pyenv/versions/3.11.7/lib/python3.11/site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeTree(t)
			want := f.file(tc.rel)
			if tc.env != "" {
				f.env[tc.env] = filepath.Join(f.root, strings.SplitN(tc.rel, "/", 2)[0])
			}
			wantFound(t, f.find("cuda"), want)
		})
	}
}

func TestFindPluginBehindPyenvShims(t *testing.T) {
	f := newFakeTree(t)
	f.file("pyenv/shims/python3") // a shell script, not a link to the interpreter
	want := f.file("pyenv/versions/3.12.1/lib/python3.12/site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so")
	f.env["PATH"] = filepath.Join(f.root, "pyenv", "shims")
	wantFound(t, f.find("cuda"), want)
}

func TestFindPluginInPJRTPathByGoXLAName(t *testing.T) {
	f := newFakeTree(t)
	f.file("venv/bin/python3") // a pip plugin too: the explicit folder wins
	f.file("venv/lib/python3.12/site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so")
	f.env["PATH"] = filepath.Join(f.root, "venv", "bin")
	want := f.file("plugins/pjrt_c_api_cuda_plugin.so")
	f.env[PluginPathEnv] = filepath.Join(f.root, "nothing") + ":" + filepath.Join(f.root, "plugins")
	r := f.find("cuda")
	wantFound(t, r, want)
	if r.Via != PluginPathEnv {
		t.Errorf("via %q, want %s", r.Via, PluginPathEnv)
	}
	// go-xla's other names, and its versioned CPU plugins.
	for name, rel := range map[string]string{"foo": "plugins2/pjrt-plugin-foo.so", "bar": "plugins2/pjrt_plugin_bar.so",
		"cpu": "plugins2/pjrt_c_api_cpu_v0.83.1_plugin.so"} {
		want := f.file(rel)
		f.env[PluginPathEnv] = filepath.Dir(want)
		wantFound(t, f.find(name), want)
	}
}

func TestMisnamedPluginInPJRTPathIsExplained(t *testing.T) {
	f := newFakeTree(t)
	bad := f.file("plugins/xla_cuda_plugin.so")
	f.file("plugins/pjrt_c_api_cpu_plugin.so")
	f.env[PluginPathEnv] = filepath.Join(f.root, "plugins")
	r := f.find("cuda")
	if r.Path != "" {
		t.Fatalf("found %s: go-xla's rule does not match xla_cuda_plugin.so, and there is no pip install", r.Path)
	}
	msg := r.Advice()
	for _, want := range []string{bad, NamingRule, "--pjrt-plugin " + bad, "pjrt_c_api_cuda_plugin.so", "jax-cuda12-pjrt",
		"xla_cuda_plugin.so", "Plugins found for other names: cpu", "Looked in: " + PluginPathEnv + " folder " + f.env[PluginPathEnv]} {
		if !strings.Contains(msg, want) {
			t.Errorf("advice does not mention %q:\n%s", want, msg)
		}
	}
}

func TestTPUSearchAndAdviceNameLibtpu(t *testing.T) {
	f := newFakeTree(t)
	r := f.find("tpu")
	if r.Path != "" {
		t.Fatalf("found %s in an empty tree", r.Path)
	}
	msg := r.Advice()
	if !strings.Contains(msg, "libtpu") || strings.Contains(strings.ToLower(msg), "cuda") {
		t.Fatalf("the TPU advice must name libtpu and not CUDA:\n%s", msg)
	}
	for _, want := range []string{"pip install -U libtpu", TPULibraryEnv, filepath.Join(f.root, "sys", "lib", "libtpu.so")} {
		if !strings.Contains(msg, want) {
			t.Errorf("TPU advice does not mention %q:\n%s", want, msg)
		}
	}

	sys := f.file("sys/lib/libtpu.so")
	wantFound(t, f.find("tpu"), sys)
	pip := f.file("home/.local/lib/python3.12/site-packages/libtpu/libtpu.so")
	wantFound(t, f.find("tpu"), pip) // pip's before the system's
	f.env[TPULibraryEnv] = f.file("custom/libtpu.so")
	wantFound(t, f.find("tpu"), f.env[TPULibraryEnv]) // JAX's variable first
}

func TestCPUAndOtherAdviceFitTheName(t *testing.T) {
	f := newFakeTree(t)
	f.file("venv/bin/python3")
	f.file("venv/lib/python3.12/site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so")
	f.env["PATH"] = filepath.Join(f.root, "venv", "bin")
	r := f.find("cpu")
	if r.Path != "" {
		t.Fatalf("xla:cpu found %s", r.Path)
	}
	msg := r.Advice()
	if !strings.Contains(msg, "pjrt_c_api_cpu_plugin.so") || !strings.Contains(msg, "go-xla") || strings.Contains(strings.ToLower(msg), "cuda") {
		t.Fatalf("the CPU advice must name go-xla's CPU plugin and not CUDA:\n%s", msg)
	}
	if !strings.Contains(msg, filepath.Join(f.root, "home", ".local", "lib", "go-xla")) {
		t.Errorf("the CPU advice does not list go-xla's folder:\n%s", msg)
	}
	// go-xla's installer folder is searched by go-xla's names.
	want := f.file("home/.local/lib/go-xla/pjrt_c_api_cpu_plugin.so")
	wantFound(t, f.find("cpu"), want)
	if msg := f.find("mine").Advice(); !strings.Contains(msg, "pjrt_c_api_mine_plugin.so") {
		t.Errorf("advice for an unknown plugin name: %s", msg)
	}
}

func TestCUDAEnvForPipLayout(t *testing.T) {
	f := newFakeTree(t)
	site := "venv/lib/python3.12/site-packages"
	plugin := f.file(site + "/jax_plugins/xla_cuda12/xla_cuda_plugin.so")
	none := map[string]string{}
	get := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if env := cudaEnv(plugin, get(none)); env != nil {
		t.Fatalf("without site-packages/nvidia: %v, want nothing", env)
	}
	f.file(site + "/nvidia/cuda_nvcc/bin/ptxas")
	env := cudaEnv(plugin, get(none))
	dataDir := filepath.Join(f.root, site, "nvidia", "cuda_nvcc")
	if env["XLA_FLAGS"] != "--xla_gpu_cuda_data_dir="+dataDir || env["GOPJRT_CUDA_CHECKS"] != "0" {
		t.Fatalf("env %v", env)
	}
	env = cudaEnv(plugin, get(map[string]string{"XLA_FLAGS": "--xla_dump_to=/tmp/x", "GOPJRT_CUDA_CHECKS": "1"}))
	if env["XLA_FLAGS"] != "--xla_dump_to=/tmp/x --xla_gpu_cuda_data_dir="+dataDir || env["GOPJRT_CUDA_CHECKS"] != "" {
		t.Fatalf("env %v: existing flags must be kept and a set variable left alone", env)
	}
	if env := cudaEnv(plugin, get(map[string]string{"XLA_FLAGS": "--xla_gpu_cuda_data_dir=/mine"})); env["XLA_FLAGS"] != "" {
		t.Fatalf("env %v: the user's data dir must stay", env)
	}
	// go-xla's own layout (nvidia/ beside the plugin's folder) is go-xla's business.
	if env := cudaEnv(f.file("lib/go-xla/nvidia/pjrt_c_api_cuda_plugin.so"), get(none)); env != nil {
		t.Fatalf("go-xla layout: %v", env)
	}
}

// New hands what the search found to go-xla as an absolute path, and turns a failed search into the advice.
func TestNewUsesTheFoundPathAndExplainsMisnamedFiles(t *testing.T) {
	if !xlaCompiled {
		t.Skip("built without XLA")
	}
	dir := t.TempDir()
	t.Setenv(PluginPathEnv, dir)
	bad := filepath.Join(dir, "xla_saddletest_plugin.so")
	if err := os.WriteFile(bad, []byte("fake"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := New("xla:saddletest")
	if err == nil || !strings.Contains(err.Error(), NamingRule) || !strings.Contains(err.Error(), "--pjrt-plugin "+bad) {
		t.Fatalf("misnamed plugin: %v", err)
	}
	good := filepath.Join(dir, "pjrt_c_api_saddletest_plugin.so")
	if err := os.WriteFile(good, []byte("fake"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, name, err := New("xla:saddletest,tf32=false")
	if err == nil || !strings.Contains(err.Error(), "could not start with the plugin "+good) || name != "xla:saddletest,tf32=false" {
		t.Fatalf("a found (fake) plugin must be loaded by its path: %q, %v", name, err)
	}
	if _, _, err := New("xla:" + filepath.Join(dir, "missing.so")); err == nil || !strings.Contains(err.Error(), "missing.so") {
		t.Fatalf("absent absolute path: %v", err)
	}
}
