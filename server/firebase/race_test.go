//go:build race

package firebase

// raceEnabled: the race detector adds allocations of its own.
const raceEnabled = true
