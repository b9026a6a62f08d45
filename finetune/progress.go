package finetune

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// progress draws a one-line bar on a terminal and prints plain lines otherwise (logs, CI), at most every few seconds.
type progress struct {
	w        io.Writer
	tty      bool
	total    int
	start    time.Time
	lastLine time.Time
}

func newProgress(w io.Writer, total int) *progress {
	p := &progress{w: w, total: total, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) update(step int, row MetricsRow) {
	if p.w == nil {
		return
	}
	eval := ""
	if row.EvalLoss != nil {
		eval = fmt.Sprintf(" eval %.4f", *row.EvalLoss)
	}
	loss := 0.0
	if row.Loss != nil {
		loss = *row.Loss
	}
	msg := fmt.Sprintf("step %d/%d loss %.4f%s lr %.3g |ΔW|/|W| %.2e %.0f tok/s", step, p.total, loss, eval, row.LR,
		row.All.RelDW, row.TokensPerSecond)
	if p.tty {
		width := 24
		filled := width * step / p.total
		fmt.Fprintf(p.w, "\r[%s%s] %s\x1b[K", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), msg)
		return
	}
	if step == p.total || row.EvalLoss != nil || time.Since(p.lastLine) > 5*time.Second {
		fmt.Fprintln(p.w, msg)
		p.lastLine = time.Now()
	}
}

func (p *progress) done() {
	if p.w != nil && p.tty {
		fmt.Fprintln(p.w)
	}
}
