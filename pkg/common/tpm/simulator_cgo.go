//go:build cgo && tpmsimulator

package tpm

// This file is the only one that links the in-process Microsoft reference
// TPM (cgo). It is built only with the tpmsimulator build tag, which the
// tests use (make test, make unit); shipped binaries are built without it
// and do not contain the simulator.

import (
	"fmt"
	"io"

	"github.com/google/go-tpm-tools/simulator"
)

// openSimulator returns the process's simulator. Only one exists per
// process: a second Open("simulator") blocks until the first is closed.
func openSimulator() (io.ReadWriteCloser, error) {
	s, err := simulator.Get()
	if err != nil {
		return nil, fmt.Errorf("starting the in-process TPM simulator: %w", err)
	}
	return s, nil
}
