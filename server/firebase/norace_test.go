//go:build !race

package firebase

const raceEnabled = false
