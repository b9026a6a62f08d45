// Package setting is the error a library returns for a run setting it cannot use. The setting is named as the
// run's config.json and config files spell it ("batch_size", "lr"), so that each front end can name it in its own
// terms: the CLI turns "batch_size" into --batch-size.
package setting

import "fmt"

// Error reports a setting whose value cannot be used.
type Error struct {
	Name string // the setting's key, e.g. "batch_size"
	Msg  string // what is wrong, following the name: "0 must be >= 1"
}

func (e *Error) Error() string { return e.Name + " " + e.Msg }

// Errorf returns an *Error for setting name with a formatted message.
func Errorf(name, format string, args ...any) error {
	return &Error{Name: name, Msg: fmt.Sprintf(format, args...)}
}
