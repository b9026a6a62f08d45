package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// exitCodeError is an error that exits with its own code: an interrupted run exits 128 + the signal's number
// (130 for SIGINT, 143 for SIGTERM), as a shell reports a process the signal killed.
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string { return e.err.Error() }
func (e exitCodeError) Unwrap() error { return e.err }

// interrupts turns the first SIGINT or SIGTERM into a cancelled context (the run finishes its step, saves a
// checkpoint and stops); a second one exits at once with the same code, leaving the last complete checkpoint
// (checkpoints are written atomically).
type interrupts struct {
	ctx    context.Context
	cancel context.CancelFunc
	ch     chan os.Signal
	done   chan struct{}
	mu     sync.Mutex
	sig    syscall.Signal // the first signal; 0 while none came
}

// exitOnSecond is what a second signal does; tests in the test process replace it.
var exitOnSecond = os.Exit

func watchInterrupts(cmd *cobra.Command) *interrupts {
	in := &interrupts{ch: make(chan os.Signal, 2), done: make(chan struct{})}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	signal.Notify(in.ch, os.Interrupt, syscall.SIGTERM)
	w, name := cmd.ErrOrStderr(), cmd.Name()
	go func() {
		for {
			select {
			case s := <-in.ch:
				in.mu.Lock()
				first := in.sig == 0
				if first {
					in.sig, _ = s.(syscall.Signal)
				}
				in.mu.Unlock()
				if first {
					fmt.Fprintf(w, "\nsaddle %s: %v: stopping after this step and saving a checkpoint (press Ctrl-C again to stop at once)\n", name, s)
					in.cancel()
					continue
				}
				fmt.Fprintf(w, "\nsaddle %s: %v again: stopping at once; the last complete checkpoint is intact\n", name, s)
				exitOnSecond(in.code())
			case <-in.done:
				return
			}
		}
	}()
	return in
}

// stop stops watching; signals go back to their default (killing the process).
func (in *interrupts) stop() {
	signal.Stop(in.ch)
	close(in.done)
	in.cancel()
}

// code is the exit code for the signal that came (130 when none did).
func (in *interrupts) code() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.sig == 0 {
		return 128 + int(syscall.SIGINT)
	}
	return 128 + int(in.sig)
}

// interrupted wraps err (the run's report that it stopped) with the exit code of the signal and what to run next.
func (in *interrupts) interrupted(err error, next string) error {
	return exitCodeError{code: in.code(), err: fmt.Errorf("%w\nto continue: %s", err, next)}
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// lockOut takes the lock on a run or sweep folder for the life of the command; a folder another process holds is
// refused (exit 1) with the holder's pid and command line.
func lockOut(cmd *cobra.Command, dir, how string) (*fileio.Locked, error) {
	l, err := fileio.LockDir(dir, cmd.CommandPath()+" "+how+" "+shellQuote(dir))
	if err != nil {
		return nil, err
	}
	return l, nil
}
