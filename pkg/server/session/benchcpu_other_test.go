//go:build !linux

package session_test

import "time"

// threadCPU is not measured here; BenchmarkServerRatio reports wall time only.
func threadCPU() (time.Duration, bool) { return 0, false }
