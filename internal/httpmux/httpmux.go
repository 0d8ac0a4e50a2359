// Package httpmux is an http.ServeMux that lists its patterns, so that a test can walk
// every route a server serves and a new route cannot ship without being checked.
package httpmux

import (
	"net/http"
	"slices"
	"sync"
)

// Mux is an http.ServeMux that remembers the patterns registered on it.
type Mux struct {
	http.ServeMux
	mu       sync.Mutex
	patterns []string
}

// New returns an empty Mux.
func New() *Mux { return &Mux{} }

// Handle registers h for pattern, as http.ServeMux does.
func (m *Mux) Handle(pattern string, h http.Handler) {
	m.ServeMux.Handle(pattern, h) // panics on a bad or duplicate pattern before it is listed
	m.mu.Lock()
	m.patterns = append(m.patterns, pattern)
	m.mu.Unlock()
}

// HandleFunc registers f for pattern, as http.ServeMux does.
func (m *Mux) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(f))
}

// Patterns lists the registered patterns in registration order.
func (m *Mux) Patterns() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.patterns)
}

// Lister is a handler that lists the patterns it serves.
type Lister interface{ Patterns() []string }
