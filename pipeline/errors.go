package pipeline

import (
	"context"
	"errors"

	"github.com/grafana/dskit/backoff"
)

// Permanent marks an Inserter error that retrying cannot fix (for example the server
// refuses the block's columns). After retry.reject_after such attempts the pipeline moves
// the block to the spool's rejected/ folder and counts its rows as dropped instead of
// retrying it forever and stalling its record kind. Any other error is retried until the
// block is stored.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (e permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether err, or an error it wraps, was marked with Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

func newBackoff(ctx context.Context, c RetryConfig) *backoff.Backoff {
	return backoff.New(ctx, c.backoff())
}
