package finetune

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/saddle-ml/saddle/internal/fileio"
)

// metricsLog appends one JSON row per step to OUT/metrics.jsonl.
type metricsLog struct {
	path string
	f    *os.File
	enc  *json.Encoder
}

// openMetricsLog opens path for appending. keepRows ≥ 0 (a resumed run) first drops the rows after that step,
// which the stopped run wrote after its checkpoint and which are about to be redone.
func openMetricsLog(path string, keepRows int) (*metricsLog, error) {
	if keepRows >= 0 {
		if err := truncateMetrics(path, keepRows); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &metricsLog{path: path, f: f, enc: json.NewEncoder(f)}, nil
}

func (m *metricsLog) write(row MetricsRow) error {
	if err := m.enc.Encode(row); err != nil {
		return fmt.Errorf("%s: %w", m.path, err)
	}
	return nil
}

func (m *metricsLog) close() { m.f.Close() }

// truncateMetrics keeps the rows of metrics.jsonl up to and including step (rewriting the file atomically).
func truncateMetrics(path string, step int) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var kept []byte
	for i, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var row struct {
			Step int `json:"step"`
		}
		if err := json.Unmarshal(line, &row); err != nil {
			// A line cut short by a kill can only be the last one.
			if i == bytes.Count(data, []byte("\n")) {
				break
			}
			return fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		if row.Step <= step {
			kept = append(append(kept, line...), '\n')
		}
	}
	return fileio.WriteFile(path, kept)
}

func writeJSONAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fileio.WriteFile(path, append(data, '\n'))
}
