//go:build !cgo

package tpm

import (
	"fmt"
	"io"
)

func openSimulator() (io.ReadWriteCloser, error) {
	return nil, fmt.Errorf("%w: the in-process simulator needs a cgo build", ErrBadDevice)
}
