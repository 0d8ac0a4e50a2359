//go:build race

package hubble

// raceEnabled: under the race detector sync.Pool drops items at random, so allocation
// counts are not the code's.
const raceEnabled = true
