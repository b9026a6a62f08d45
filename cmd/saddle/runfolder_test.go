package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/saddle-ml/saddle/checkpoints"
	"github.com/saddle-ml/saddle/internal/testenv"
)

// cliEnv makes this test binary run as the saddle command (with the arguments in it, NUL-separated) instead of
// the tests (a JSON list): the tests start real saddle processes to signal them and to run two at once.
const cliEnv = "SADDLE_TEST_RUN_CLI"

func init() {
	if env, ok := os.LookupEnv(cliEnv); ok {
		var args []string
		if err := json.Unmarshal([]byte(env), &args); err != nil {
			panic(err)
		}
		os.Exit(run(args, os.Stdout, os.Stderr))
	}
}

// lockedBuffer collects a process's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// saddleProc is a saddle process started by startSaddle.
type saddleProc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{} // closed when it exited
	err    error         // cmd.Wait's
}

func startSaddle(t *testing.T, args ...string) *saddleProc {
	t.Helper()
	env, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), cliEnv+"="+string(env))
	p := &saddleProc{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *saddleProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait returns the exit code.
func (p *saddleProc) wait(t *testing.T) int {
	t.Helper()
	<-p.done
	if _, ok := p.err.(*exec.ExitError); p.err != nil && !ok {
		t.Fatal(p.err)
	}
	if strings.Contains(p.stderr.String(), "goroutine ") {
		t.Fatalf("saddle printed a panic:\n%s", p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

// metricSteps reads the step of every row of dir/metrics.jsonl.
func metricSteps(t *testing.T, dir string) []int {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var steps []int
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var row struct {
			Step int `json:"step"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			break // a row being written
		}
		steps = append(steps, row.Step)
	}
	return steps
}

// waitForStep waits until dir/metrics.jsonl has a row of step ≥ step, or the process ends.
func waitForStep(t *testing.T, p *saddleProc, dir string, step int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if s := metricSteps(t, dir); len(s) > 0 && s[len(s)-1] >= step {
			return
		}
		if p.exited() {
			break
		}
	}
	t.Fatalf("no metrics row of step %d in %s\n%s", step, dir, p.stderr)
}

// consecutive checks that steps are 0, 1, …, last, each once.
func consecutive(t *testing.T, what string, steps []int, last int) {
	t.Helper()
	if len(steps) != last+1 {
		t.Fatalf("%s: metrics.jsonl has steps %v, want 0..%d once each", what, steps, last)
	}
	for i, s := range steps {
		if s != i {
			t.Fatalf("%s: metrics.jsonl has steps %v, want 0..%d once each", what, steps, last)
		}
	}
}

// runSnapshot reads every file under dir (but the lock file), for comparing a folder before and after.
func runSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ".lock" {
			return err
		}
		data, err := os.ReadFile(path)
		files[strings.TrimPrefix(path, dir)] = string(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func sameFiles(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for name, data := range before {
		if after[name] != data {
			t.Errorf("%s changed or removed %s", what, name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			t.Errorf("%s added %s", what, name)
		}
	}
}

func runConfig(t *testing.T, dir string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func checkpointSteps(t *testing.T, dir string) []string {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(dir, checkpoints.Dir))
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "step-") {
			names = append(names, e.Name())
		}
	}
	return names
}

func smallTrain(gguf string, more ...string) []string {
	return append([]string{"train", "--model", gguf, "--batch-size", "2", "--seq-len", "32", "--eval-every", "0"}, more...)
}

// TestTwoTrainingsOnOneFolder: while one training writes a folder, a second one (new, --overwrite or --resume) is
// refused at once with exit 1, naming the folder and the holder's pid; the first finishes, and everything in the
// folder is its own.
func TestTwoTrainingsOnOneFolder(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	out := filepath.Join(t.TempDir(), "run")
	first := startSaddle(t, smallTrain(gguf, "--steps", "60", "--save-every", "1", "--keep", "0", "--lr", "0.002", "--seed", "7", "--out", out)...)
	waitForStep(t, first, out, 1)
	pid := "pid " + strconv.Itoa(first.cmd.Process.Pid)
	for _, second := range [][]string{
		smallTrain(gguf, "--steps", "3", "--lr", "0.01", "--seed", "8", "--out", out),
		smallTrain(gguf, "--steps", "3", "--lr", "0.01", "--seed", "8", "--out", out, "--overwrite"),
		{"train", "--resume", out, "--steps", "70"},
	} {
		code, _, errs := saddle(t, second...)
		if code != 1 || !strings.Contains(errs, out+" is in use by "+pid+": saddle train --out ") {
			t.Fatalf("second writer %v: exit %d, want 1 naming %s and %s:\n%s", second[len(second)-3:], code, out, pid, errs)
		}
	}
	if code := first.wait(t); code != 0 {
		t.Fatalf("the first training: exit %d\n%s", code, first.stderr)
	}
	consecutive(t, "the first training", metricSteps(t, out), 60)
	if cfg := runConfig(t, out); cfg["lr"] != 0.002 || cfg["seed"] != 7.0 || cfg["steps"] != 60.0 {
		t.Fatalf("config.json is not the first training's: lr %v seed %v steps %v", cfg["lr"], cfg["seed"], cfg["steps"])
	}
	if steps := checkpointSteps(t, out); len(steps) != 60 || steps[59] != "step-000060" {
		t.Fatalf("checkpoints %v, want the first training's 60", steps)
	}
	st, err := checkpoints.Load(out)
	if err != nil || st.Step != 60 {
		t.Fatalf("latest checkpoint: %v (step %v)", err, st)
	}
	for _, f := range []string{"summary.json", "adapter.safetensors", "adapter.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatalf("the first training's %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, ".lock")); !os.IsNotExist(err) {
		t.Fatalf("the lock file stayed after the run: %v", err)
	}
}

// TestAnExistingRunIsNeverMixed: a folder holding a run is refused (exit 2, with what to do) unless --resume or
// --overwrite, also when --out comes from a config file; a config file's resume: resumes; --overwrite starts from
// nothing (and a refused --overwrite deletes nothing); a folder with other files is refused even with --overwrite.
func TestAnExistingRunIsNeverMixed(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "run")
	train := func(more ...string) []string {
		return smallTrain(gguf, append([]string{"--save-every", "1", "--keep", "0"}, more...)...)
	}
	if code, _, errs := saddle(t, train("--steps", "3", "--seed", "1", "--out", out)...); code != 0 {
		t.Fatalf("first run: exit %d\n%s", code, errs)
	}
	before := runSnapshot(t, out)
	config := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	outCfg := config("out.yaml", "out: "+out+"\nsteps: 2\n")
	for _, args := range [][]string{
		train("--steps", "2", "--seed", "2", "--out", out),
		append(smallTrain(gguf), "--config", outCfg),
	} {
		code, _, errs := saddle(t, args...)
		for _, want := range []string{out + " already holds a run", "metrics.jsonl", "--resume " + out, "--overwrite"} {
			if code != 2 || !strings.Contains(errs, want) {
				t.Fatalf("%v: exit %d, want 2 and %q:\n%s", args[len(args)-2:], code, want, errs)
			}
		}
		sameFiles(t, "a refused run", before, runSnapshot(t, out))
	}
	// --overwrite with a setting that is refused later (--rank 0) deletes nothing.
	code, _, errs := saddle(t, train("--steps", "2", "--rank", "0", "--overwrite", "--out", out)...)
	if code != 2 || !strings.Contains(errs, "rank 0") {
		t.Fatalf("--overwrite --rank 0: exit %d\n%s", code, errs)
	}
	sameFiles(t, "a refused --overwrite", before, runSnapshot(t, out))
	if code, _, errs := saddle(t, "train", "--resume", out, "--overwrite"); code != 2 || !strings.Contains(errs, "--overwrite") {
		t.Fatalf("--resume with --overwrite: exit %d\n%s", code, errs)
	}

	// A config file's resume: resumes (to its steps: 5), and may not change other settings.
	if code, _, errs := saddle(t, "train", "--config", config("resume.yaml", "resume: "+out+"\nsteps: 5\n")); code != 0 {
		t.Fatalf("resume: from a config file: exit %d\n%s", code, errs)
	}
	consecutive(t, "resumed from a config file", metricSteps(t, out), 5)
	if steps := checkpointSteps(t, out); len(steps) != 5 {
		t.Fatalf("after resuming to step 5 the checkpoints are %v", steps)
	}
	code, _, errs = saddle(t, "train", "--config", config("resume-lr.yaml", "resume: "+out+"\nsteps: 6\nlr: 0.5\n"))
	if code != 2 || !strings.Contains(errs, "--lr cannot change when resuming") {
		t.Fatalf("resume: with lr: in a config file: exit %d\n%s", code, errs)
	}
	consecutive(t, "a refused resume", metricSteps(t, out), 5)

	// --overwrite: the new run's files only (no step 3..5 rows or checkpoints of the old run).
	if code, _, errs := saddle(t, train("--steps", "2", "--seed", "2", "--overwrite", "--out", out)...); code != 0 {
		t.Fatalf("--overwrite: exit %d\n%s", code, errs)
	}
	consecutive(t, "--overwrite", metricSteps(t, out), 2)
	if steps := checkpointSteps(t, out); strings.Join(steps, ",") != "step-000001,step-000002" {
		t.Fatalf("after --overwrite the checkpoints are %v, want the new run's 1 and 2", steps)
	}
	if cfg := runConfig(t, out); cfg["seed"] != 2.0 {
		t.Fatalf("config.json after --overwrite has seed %v, want 2", cfg["seed"])
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("--overwrite left %s behind", e.Name())
		}
	}

	// A folder with files of its own is refused, with or without --overwrite, and gets no lock file.
	other := filepath.Join(dir, "other")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, extra := range [][]string{nil, {"--overwrite"}} {
		code, _, errs := saddle(t, train(append([]string{"--steps", "1", "--out", other}, extra...)...)...)
		if code != 2 || !strings.Contains(errs, other+" is not empty") || !strings.Contains(errs, "notes.txt") {
			t.Fatalf("foreign folder %v: exit %d\n%s", extra, code, errs)
		}
		if entries, _ := os.ReadDir(other); len(entries) != 1 {
			t.Fatalf("a refused run changed a foreign folder: %d entries", len(entries))
		}
	}
}

// TestSignalsStopWithACheckpointAndTheirExitCode: SIGINT (130) and SIGTERM (143) stop a training after its step,
// with a checkpoint and the resume command, and --resume continues it; a second SIGINT exits at once, leaving
// the last complete checkpoint loadable.
func TestSignalsStopWithACheckpointAndTheirExitCode(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		out := filepath.Join(t.TempDir(), "run")
		p := startSaddle(t, smallTrain(gguf, "--steps", "100000", "--out", out)...)
		waitForStep(t, p, out, 1)
		if err := p.cmd.Process.Signal(tc.sig); err != nil {
			t.Fatal(err)
		}
		code := p.wait(t)
		errs := p.stderr.String()
		if code != tc.code || !strings.Contains(errs, "to continue: saddle train --resume "+out) {
			t.Fatalf("%v: exit %d, want %d and the resume command:\n%s", tc.sig, code, tc.code, errs)
		}
		st, err := checkpoints.Load(out)
		if err != nil || st.Step < 1 {
			t.Fatalf("%v: checkpoint: %v", tc.sig, err)
		}
		if _, err := os.Stat(filepath.Join(out, "summary.json")); !os.IsNotExist(err) {
			t.Fatalf("%v: an interrupted run wrote summary.json", tc.sig)
		}
		steps := strconv.Itoa(st.Step + 2)
		if code, _, errs := saddle(t, "train", "--resume", out, "--steps", steps); code != 0 {
			t.Fatalf("%v: --resume: exit %d\n%s", tc.sig, code, errs)
		}
		consecutive(t, tc.sig.String()+" then --resume", metricSteps(t, out), st.Step+2)
	}

	out := filepath.Join(t.TempDir(), "run")
	p := startSaddle(t, smallTrain(gguf, "--steps", "100000", "--save-every", "1", "--keep", "2", "--out", out)...)
	waitForStep(t, p, out, 3)
	p.cmd.Process.Signal(syscall.SIGINT)
	for !strings.Contains(p.stderr.String(), "press Ctrl-C again") && !p.exited() { // the first one was seen
		time.Sleep(5 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t); code != 130 || !strings.Contains(p.stderr.String(), "again: stopping at once") {
		t.Fatalf("second SIGINT: exit %d, want 130 at once:\n%s", code, p.stderr)
	}
	if st, err := checkpoints.Load(out); err != nil || st.Step < 1 {
		t.Fatalf("after a second SIGINT the latest checkpoint does not load: %v", err)
	}
}

// TestEscapeIsLockedAndInterruptible: a sweep holds its folder (a second sweep or a training in one of its run
// folders is refused with exit 1), and SIGINT stops it with 130 and how to continue.
func TestEscapeIsLockedAndInterruptible(t *testing.T) {
	gguf, _ := testenv.Stories260K(t)
	out := filepath.Join(t.TempDir(), "sweep")
	sweep := []string{"escape", "--model", gguf, "--optimizers", "sign", "--lrs", "1e-3", "--init-scales", "0.01",
		"--steps", "100000", "--batch-size", "2", "--seq-len", "32", "--eval-every", "0", "--out", out}
	p := startSaddle(t, sweep...)
	var runDir string
	for deadline := time.Now().Add(2 * time.Minute); runDir == "" && time.Now().Before(deadline) && !p.exited(); time.Sleep(20 * time.Millisecond) {
		dirs, _ := filepath.Glob(filepath.Join(out, "runs", "*"))
		if len(dirs) == 1 && len(metricSteps(t, dirs[0])) >= 2 {
			runDir = dirs[0]
		}
	}
	if runDir == "" {
		t.Fatalf("the sweep's run never got to step 1:\n%s", p.stderr)
	}
	pid := "pid " + strconv.Itoa(p.cmd.Process.Pid)
	if code, _, errs := saddle(t, sweep...); code != 1 || !strings.Contains(errs, out+" is in use by "+pid) {
		t.Fatalf("a second sweep: exit %d, want 1 naming %s:\n%s", code, pid, errs)
	}
	if code, _, errs := saddle(t, "train", "--resume", runDir); code != 1 || !strings.Contains(errs, runDir+" is in use by "+pid) {
		t.Fatalf("a training in the sweep's run folder: exit %d, want 1 naming %s:\n%s", code, pid, errs)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t); code != 130 || !strings.Contains(p.stderr.String(), "to continue: the same saddle escape command with --out "+out) {
		t.Fatalf("SIGINT: exit %d, want 130 and how to continue:\n%s", code, p.stderr)
	}
}
