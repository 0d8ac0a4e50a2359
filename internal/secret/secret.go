// Package secret is Meridian's one way to hold a secret (an API token, a password, a
// TSIG key): it is read from a file, else from an environment variable; never from a
// flag or from the YAML itself, and never printed. Every component reads its secrets
// with Read, so the order of precedence is the same everywhere.
//
// A configuration field naming a secret's file carries the environment variable in its
// struct tag, `secret:"MERIDIAN_API_TOKEN"`, which `meridian config reference` lists.
package secret

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Source says where a secret is: the file File when it is set, else the environment
// variable Env. Field is the YAML path of the file setting, for errors.
type Source struct {
	File  string
	Env   string
	Field string
}

// Value is a secret that has been read. It prints as "<secret>" through fmt, slog, YAML
// and JSON, so a log line or a configuration dump cannot leak it; Reveal returns it.
type Value struct{ s string }

// Redacted is how a non-empty Value prints.
const Redacted = "<secret>"

// Read reads the secret from its file (surrounding white space trimmed), else from its
// environment variable. No secret at all is an empty Value, not an error: whether one
// is required is the component's decision. An unreadable or empty file is an error.
func Read(src Source) (Value, error) {
	if src.File != "" {
		b, err := os.ReadFile(src.File)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is said once, below
			}
			return Value{}, fmt.Errorf("%s %s: %w", orFile(src.Field), src.File, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return Value{}, fmt.Errorf("%s %s: empty file", orFile(src.Field), src.File)
		}
		return Value{v}, nil
	}
	if src.Env == "" {
		return Value{}, nil
	}
	return Value{strings.TrimSpace(os.Getenv(src.Env))}, nil
}

func orFile(field string) string {
	if field == "" {
		return "secret file"
	}
	return field
}

// New wraps a secret obtained some other way (a test's, a generated one).
func New(s string) Value { return Value{s} }

// Reveal returns the secret itself, for the one place that uses it.
func (v Value) Reveal() string { return v.s }

// Empty reports whether no secret was found.
func (v Value) Empty() bool { return v.s == "" }

func (v Value) String() string {
	if v.s == "" {
		return ""
	}
	return Redacted
}

// GoString keeps %#v from printing the field.
func (v Value) GoString() string { return `secret.Value("` + v.String() + `")` }

// LogValue is what slog writes.
func (v Value) LogValue() slog.Value { return slog.StringValue(v.String()) }

// MarshalYAML and MarshalJSON write the redacted form.
func (v Value) MarshalYAML() (any, error) { return v.String(), nil }

func (v Value) MarshalJSON() ([]byte, error) { return []byte(`"` + v.String() + `"`), nil }

// MarshalText covers encoders that prefer it (slog's JSON handler among them).
func (v Value) MarshalText() ([]byte, error) { return []byte(v.String()), nil }
