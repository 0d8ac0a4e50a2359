// Package configcheck holds the field checks that configuration sections' Validate
// methods share, so that every section words a bad value the same way:
// "section.field: must be positive, got 0s".
package configcheck

import "fmt"

type number interface {
	~int | ~int64 | ~uint64 | ~float64
}

// First returns the first failed check of errs, in order; nil if none failed.
func First(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Positive checks v > 0.
func Positive[T number](field string, v T) error {
	if v > 0 {
		return nil
	}
	return fmt.Errorf("%s: must be positive, got %v", field, v)
}

// NotNegative checks v >= 0.
func NotNegative[T number](field string, v T) error {
	if v >= 0 {
		return nil
	}
	return fmt.Errorf("%s: must not be negative, got %v", field, v)
}

// AtLeast checks v >= least.
func AtLeast[T number](field string, v, least T) error {
	if v >= least {
		return nil
	}
	return fmt.Errorf("%s: must be at least %v, got %v", field, least, v)
}

// Set checks that v is not empty.
func Set(field, v string) error {
	if v != "" {
		return nil
	}
	return fmt.Errorf("%s: must be set", field)
}
