//go:build race

package queuetest

// RaceDetector reports whether the tests were built with the race
// detector, which makes SQLite (C translated to Go, every memory access
// instrumented) 10 to 25 times slower.
const RaceDetector = true
