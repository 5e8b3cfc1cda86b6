// Package realdata finds the shared folder of real TPM evidence (event logs,
// quotes, EK certificate chains from real machines; see its MANIFEST.md)
// that tests read in place. Nothing from it is copied into the project.
package realdata

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// EnvVar overrides where the folder is.
const EnvVar = "TPMID_REAL_TESTDATA"

// candidates lists where the folder may be: $TPMID_REAL_TESTDATA, beside the
// repository (../shared/testdata/real), and this workplace's shared folder.
func candidates() []string {
	var out []string
	if d := os.Getenv(EnvVar); d != "" {
		return []string{d}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		out = append(out, filepath.Join(root, "..", "shared", "testdata", "real"))
	}
	return append(out, "/work/shared/testdata/real")
}

// Find returns the folder, or an error naming where it looked.
func Find() (string, error) {
	var errs []error
	for _, d := range candidates() {
		if _, err := os.Stat(filepath.Join(d, "MANIFEST.md")); err != nil {
			errs = append(errs, err)
			continue
		}
		return d, nil
	}
	return "", errors.Join(errs...)
}

// Dir returns the folder, skipping the test with the reason when it is absent.
func Dir(tb testing.TB) string {
	tb.Helper()
	d, err := Find()
	if err != nil {
		tb.Skipf("real TPM evidence not found (set %s to its folder): %v", EnvVar, err)
	}
	return d
}

// Path joins rel to the folder, skipping the test when the folder is absent.
func Path(tb testing.TB, rel string) string {
	tb.Helper()
	return filepath.Join(Dir(tb), rel)
}
