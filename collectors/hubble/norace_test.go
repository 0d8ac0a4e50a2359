//go:build !race

package hubble

// raceEnabled: see race_test.go.
const raceEnabled = false
