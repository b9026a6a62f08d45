package backend

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// PJRT plugin discovery. go-xla finds a plugin by name only through file names it recognizes
// (pjrt_c_api_<name>_plugin.so, pjrt-plugin-<name>.so, pjrt_plugin_<name>.so, in pjrt/dynamiclib_base.go) in
// $PJRT_PLUGIN_LIBRARY_PATH or, when that is unset, its own folders and the system library folders. The plugins
// people actually have are named otherwise: JAX's CUDA plugin is site-packages/jax_plugins/xla_cuda12/
// xla_cuda_plugin.so (pip jax-cuda12-pjrt, or -cuda13-), Google's TPU plugin is libtpu.so (pip libtpu). saddle looks
// for those itself, by file name only (nothing is loaded while searching), and hands go-xla the absolute path,
// which go-xla accepts as the plugin name ("xla:/abs/path.so").

// Environment variables the search reads.
const (
	PluginPathEnv = "PJRT_PLUGIN_LIBRARY_PATH" // go-xla's plugin folders (colon-separated)
	TPULibraryEnv = "TPU_LIBRARY_PATH"         // JAX's: the path of libtpu.so
)

// PluginSearch is the outcome of looking for a PJRT plugin by name.
type PluginSearch struct {
	Name     string   // the plugin asked for: "cuda", "tpu", "cpu", ...
	Platform string   // "cuda", "rocm", "tpu", "cpu", or "" for other names
	Path     string   // the absolute path found; "" when none
	Via      string   // where Path was found, in words
	Looked   []string // where the search looked, in order
	Misnamed []string // files in $PJRT_PLUGIN_LIBRARY_PATH that go-xla skips because of their names
	Others   []string // plugins go-xla would find under other names, as "name (path)"
}

// FindPlugin looks for the PJRT plugin name (as in --backend xla:NAME) in $PJRT_PLUGIN_LIBRARY_PATH, go-xla's
// folders, and where pip puts JAX's plugins and libtpu. It reads file names only; it never loads a plugin.
func FindPlugin(name string) PluginSearch {
	home, _ := os.UserHomeDir()
	return searcher{getenv: os.Getenv, root: "/", home: home}.find(name)
}

// searcher holds what the search depends on, so that tests can run it on a fake file tree.
type searcher struct {
	getenv func(string) string
	root   string // prefix of the fixed system folders: "/", or a temporary folder in tests
	home   string
}

// goXLANames are go-xla's plugin file patterns; the first group is the plugin name.
var goXLANames = []*regexp.Regexp{
	regexp.MustCompile(`^pjrt_c_api_(.+)_plugin\.so$`),
	regexp.MustCompile(`^pjrt[-_]plugin[-_](.+)\.so$`),
}

// NamingRule says which file names go-xla finds by plugin name.
const NamingRule = "pjrt_c_api_<name>_plugin.so, pjrt-plugin-<name>.so or pjrt_plugin_<name>.so"

// goXLAName returns the plugin name go-xla gives the file, or "" when go-xla would not recognize it.
func goXLAName(file string) string {
	for _, re := range goXLANames {
		if m := re.FindStringSubmatch(filepath.Base(file)); m != nil {
			return m[1]
		}
	}
	return ""
}

// nameMatches mirrors go-xla: "cpu" also matches a versioned "cpu_v0.83.1".
func nameMatches(fileName, want string) bool {
	return fileName == want || strings.HasPrefix(fileName, want+"_v")
}

func platformOf(name string) string {
	for _, p := range []string{"cuda", "rocm", "tpu", "cpu"} {
		if strings.HasPrefix(strings.ToLower(name), p) {
			return p
		}
	}
	return ""
}

func (s searcher) sys(p string) string { return filepath.Join(s.root, p) }

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// absPaths splits a colon-separated list, keeping absolute entries.
func absPaths(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ":") {
		if p != "" && filepath.IsAbs(p) {
			out = append(out, filepath.Clean(p))
		}
	}
	return out
}

// named returns the first file in dir that go-xla would load as name; it notes plugins for other names in r.
func (s searcher) named(dir, name string, r *PluginSearch) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	found := ""
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		n := goXLAName(p)
		if n == "" || !isFile(p) {
			continue
		}
		if nameMatches(n, name) {
			if found == "" {
				found = p
			}
		} else if o := n + " (" + p + ")"; !slices.Contains(r.Others, o) {
			r.Others = append(r.Others, o)
		}
	}
	return found
}

// goXLADirs are the folders go-xla searches when $PJRT_PLUGIN_LIBRARY_PATH is unset (pjrt/dynamiclib_posix.go),
// less the folders of /etc/ld.so.conf, which go-xla itself still searches when saddle finds nothing.
func (s searcher) goXLADirs() []string {
	var dirs []string
	if s.home != "" {
		x := filepath.Join(s.home, ".local", "lib", "go-xla")
		dirs = append(dirs, x, filepath.Join(x, "nvidia"), filepath.Join(s.home, ".local", "lib", "gomlx", "pjrt"))
	}
	dirs = append(dirs, s.sys("usr/local/lib/go-xla"), s.sys("usr/local/lib/go-xla/nvidia"), s.sys("usr/local/lib/gomlx/pjrt"))
	return append(dirs, absPaths(s.getenv("LD_LIBRARY_PATH"))...)
}

// sitePackages lists the Python package folders that exist: $VIRTUAL_ENV, $CONDA_PREFIX, $PYTHONPATH, those of
// every python3 on $PATH (and of the interpreter it links to; pyenv's versions behind its shims), ~/.local,
// /usr/local, /usr and /opt/conda.
func (s searcher) sitePackages() []string {
	var prefixes []string
	for _, v := range []string{"VIRTUAL_ENV", "CONDA_PREFIX"} {
		if p := s.getenv(v); p != "" && filepath.IsAbs(p) {
			prefixes = append(prefixes, filepath.Clean(p))
		}
	}
	isPython := regexp.MustCompile(`^python3(\.\d+)?$`)
	pyenvs := absPaths(s.getenv("PYENV_ROOT"))
	for _, dir := range absPaths(s.getenv("PATH")) {
		if filepath.Base(dir) == "shims" { // pyenv's python3 is a script in ROOT/shims; the interpreters are in ROOT/versions
			pyenvs = append(pyenvs, filepath.Dir(dir))
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !isPython.MatchString(e.Name()) {
				continue
			}
			exe := filepath.Join(dir, e.Name())
			prefixes = append(prefixes, filepath.Dir(dir))
			if real, err := filepath.EvalSymlinks(exe); err == nil {
				prefixes = append(prefixes, filepath.Dir(filepath.Dir(real)))
			}
		}
	}
	for _, root := range pyenvs {
		versions, _ := filepath.Glob(filepath.Join(root, "versions", "*"))
		prefixes = append(prefixes, versions...)
	}
	if s.home != "" {
		prefixes = append(prefixes, filepath.Join(s.home, ".local"))
	}
	prefixes = append(prefixes, s.sys("usr/local"), s.sys("usr"), s.sys("opt/conda"))

	var dirs, seen []string
	add := func(d string) {
		real, err := filepath.EvalSymlinks(d) // /lib is often a link to /usr/lib
		if err != nil || !isDir(real) || slices.Contains(seen, real) {
			return
		}
		dirs, seen = append(dirs, d), append(seen, real)
	}
	for _, p := range absPaths(s.getenv("PYTHONPATH")) {
		add(p)
	}
	for _, prefix := range prefixes {
		for _, lib := range []string{"lib", "lib64"} {
			versions, _ := filepath.Glob(filepath.Join(prefix, lib, "python3*"))
			slices.SortFunc(versions, func(a, b string) int { return strings.Compare(b, a) }) // newest first
			for _, v := range versions {
				add(filepath.Join(v, "site-packages"))
				add(filepath.Join(v, "dist-packages"))
			}
		}
	}
	return dirs
}

// pipFiles are the file patterns, relative to site-packages, of the pip-installed plugin for a platform.
func pipFiles(platform string) []string {
	switch platform {
	case "cuda":
		return []string{"jax_plugins/xla_cuda*/xla_cuda_plugin.so"}
	case "rocm":
		return []string{"jax_plugins/xla_rocm*/xla_rocm_plugin.so"}
	case "tpu":
		return []string{"libtpu/libtpu.so", "jax_plugins/*/libtpu.so"}
	}
	return nil
}

func (r *PluginSearch) found(p, via string) {
	r.Path, r.Via = p, via
}

func (s searcher) find(name string) PluginSearch {
	r := PluginSearch{Name: name, Platform: platformOf(name)}
	// 1. $PJRT_PLUGIN_LIBRARY_PATH, by go-xla's naming rule; other .so files there are noted as misnamed.
	if dirs := absPaths(s.getenv(PluginPathEnv)); len(dirs) > 0 {
		for _, d := range dirs {
			r.Looked = append(r.Looked, PluginPathEnv+" folder "+d)
			if p := s.named(d, name, &r); p != "" {
				r.found(p, PluginPathEnv)
				return r
			}
			so, _ := filepath.Glob(filepath.Join(d, "*.so"))
			for _, f := range so {
				if goXLAName(f) == "" && isFile(f) {
					r.Misnamed = append(r.Misnamed, f)
				}
			}
		}
	} else {
		r.Looked = append(r.Looked, "$"+PluginPathEnv+" (unset)")
	}
	// 2. For the TPU, JAX's own variable naming libtpu.so.
	if r.Platform == "tpu" {
		if p := s.getenv(TPULibraryEnv); p != "" {
			r.Looked = append(r.Looked, "$"+TPULibraryEnv+" = "+p)
			if filepath.IsAbs(p) && isFile(p) {
				r.found(filepath.Clean(p), TPULibraryEnv)
				return r
			}
		}
	}
	// 3. go-xla's folders, where its installer puts plugins, and $LD_LIBRARY_PATH.
	for _, d := range s.goXLADirs() {
		r.Looked = append(r.Looked, d)
		if p := s.named(d, name, &r); p != "" {
			r.found(p, "go-xla's plugin folder "+d)
			return r
		}
	}
	// 4. Where pip puts the platform's plugin, then the system copies of libtpu.
	if pats := pipFiles(r.Platform); len(pats) > 0 {
		sites := s.sitePackages()
		if len(sites) == 0 {
			r.Looked = append(r.Looked, "Python site-packages: none found (python3 on $PATH, $VIRTUAL_ENV, $CONDA_PREFIX, $PYTHONPATH, ~/.local, /usr/local, /usr, /opt/conda)")
		} else {
			r.Looked = append(r.Looked, strings.Join(pats, " and ")+" in the site-packages "+strings.Join(sites, ", "))
		}
		for _, site := range sites {
			for _, pat := range pats {
				m, _ := filepath.Glob(filepath.Join(site, pat))
				slices.SortFunc(m, func(a, b string) int { return strings.Compare(b, a) }) // xla_cuda13 before xla_cuda12
				for _, p := range m {
					if isFile(p) {
						r.found(p, "site-packages "+site)
						return r
					}
				}
			}
		}
	}
	if r.Platform == "tpu" {
		for _, p := range []string{"lib/libtpu.so", "usr/lib/libtpu.so", "usr/local/lib/libtpu.so"} {
			p = s.sys(p)
			r.Looked = append(r.Looked, p)
			if isFile(p) {
				r.found(p, "the system library "+p)
				return r
			}
		}
	}
	return r
}

// install says how to get a plugin for the platform.
func install(platform, name string) string {
	switch platform {
	case "cuda":
		return `install JAX's CUDA PJRT plugin with pip: pip install -U "jax[cuda12]" (or "jax[cuda13]"; it brings the ` +
			`jax-cuda12-pjrt package, whose file is site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so, and the ` +
			`CUDA libraries it needs in site-packages/nvidia), or pass that file as --pjrt-plugin PATH`
	case "rocm":
		return "install JAX's ROCm PJRT plugin with pip (a jax-rocm*-pjrt package: site-packages/jax_plugins/xla_rocm*/" +
			"xla_rocm_plugin.so), or pass that file as --pjrt-plugin PATH"
	case "tpu":
		return "install libtpu, Google's TPU PJRT plugin: pip install -U libtpu (site-packages/libtpu/libtpu.so; " +
			"Cloud TPU VM images may have /lib/libtpu.so), or set $" + TPULibraryEnv + " or --pjrt-plugin to the path of libtpu.so"
	case "cpu":
		return "install go-xla's CPU PJRT plugin (pjrt_c_api_cpu_plugin.so into ~/.local/lib/go-xla): " +
			"go run github.com/gomlx/go-xla/cmd/pjrt_installer@latest, or pass a PJRT CPU plugin file as --pjrt-plugin PATH"
	}
	return fmt.Sprintf("put a plugin named pjrt_c_api_%s_plugin.so in a folder of $%s, or pass its file as --pjrt-plugin PATH", name, PluginPathEnv)
}

// Advice is the error text for a search that found nothing: what to install for the platform, why misnamed
// files were skipped, what else is there, and where the search looked.
func (r PluginSearch) Advice() string {
	what := "PJRT plugin named " + r.Name
	if r.Platform != "" {
		what = "PJRT plugin for " + strings.ToUpper(r.Platform)
		if r.Platform != r.Name {
			what += " named " + r.Name
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "no %s found: %s; or use --backend go.", what, install(r.Platform, r.Name))
	if len(r.Misnamed) > 0 {
		fmt.Fprintf(&b, "\n$%s holds %s, but go-xla finds plugins there only by their file names (%s): pass the file as "+
			"--pjrt-plugin %s, or link it under such a name (pjrt_c_api_%s_plugin.so, if it is the %s plugin).",
			PluginPathEnv, strings.Join(r.Misnamed, ", "), NamingRule, r.Misnamed[0], r.Name, r.Name)
	}
	if len(r.Others) > 0 {
		fmt.Fprintf(&b, "\nPlugins found for other names: %s.", strings.Join(r.Others, ", "))
	}
	fmt.Fprintf(&b, "\nLooked in: %s", strings.Join(r.Looked, "; "))
	return b.String()
}

// cudaEnv returns the environment a CUDA plugin installed by pip needs and does not get from go-xla: go-xla
// looks for the CUDA libraries in ../nvidia beside the plugin (its installer's layout) and otherwise only warns,
// while pip puts them in site-packages/nvidia, two levels up from jax_plugins/xla_cuda12/xla_cuda_plugin.so,
// which is where the plugin's own RPATH looks. As JAX does, point XLA at the folder with ptxas and libdevice
// (nvidia/cuda_nvcc for CUDA 12, nvidia/cu13 for CUDA 13) and turn off go-xla's misleading warning. Variables
// already set are left alone; nil when the plugin is not in pip's layout.
func cudaEnv(plugin string, getenv func(string) string) map[string]string {
	site := filepath.Dir(filepath.Dir(filepath.Dir(plugin)))
	if filepath.Base(filepath.Dir(filepath.Dir(plugin))) != "jax_plugins" || !isDir(filepath.Join(site, "nvidia")) {
		return nil
	}
	env := map[string]string{}
	if getenv("GOPJRT_CUDA_CHECKS") == "" {
		env["GOPJRT_CUDA_CHECKS"] = "0"
	}
	flags := getenv("XLA_FLAGS")
	if !strings.Contains(flags, "xla_gpu_cuda_data_dir") {
		for _, d := range []string{"cu13", "cuda_nvcc"} {
			dir := filepath.Join(site, "nvidia", d)
			if isFile(filepath.Join(dir, "bin", "ptxas")) || isDir(filepath.Join(dir, "nvvm", "libdevice")) {
				env["XLA_FLAGS"] = strings.TrimSpace(flags + " --xla_gpu_cuda_data_dir=" + dir)
				break
			}
		}
	}
	return env
}
