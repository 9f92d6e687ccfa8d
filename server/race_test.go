//go:build race

package server

// raceEnabled: the race detector adds allocations of its own.
const raceEnabled = true
