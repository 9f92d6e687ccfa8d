//go:build race

package passkey

// raceEnabled: the race detector adds allocations of its own.
const raceEnabled = true
