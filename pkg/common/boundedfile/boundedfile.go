// Package boundedfile reads files with a size bound, for every input tpmid
// takes from disk (event logs, certificates, allowlists, AK blobs). It reads
// up to the bound plus one byte instead of trusting Stat, because
// securityfs files such as binary_bios_measurements report size 0.
package boundedfile

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrTooLarge is returned for a file larger than the bound.
var ErrTooLarge = errors.New("file too large")

// Read returns the contents of path, or ErrTooLarge when it holds more than
// max bytes.
func Read(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w (more than %d bytes)", path, ErrTooLarge, max)
	}
	return b, nil
}
