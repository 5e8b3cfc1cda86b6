//go:build !cgo || !tpmsimulator

package tpm

import (
	"fmt"
	"io"
)

// openSimulator fails: this binary was built without the in-process
// simulator, which needs cgo and the tpmsimulator build tag (tests only).
func openSimulator() (io.ReadWriteCloser, error) {
	return nil, fmt.Errorf("%w: built without the simulator (it is for tests: build with cgo and -tags tpmsimulator)", ErrBadDevice)
}
