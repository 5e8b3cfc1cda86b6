package cmd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// forbidden are packages that exist for tests and demos only: the
// in-process TPM simulator (cgo, go-tpm-tools), EK provisioning and PCR
// extend (internal/tpmtest) and the harnesses built on them.
var forbidden = []string{
	"github.com/google/go-tpm-tools/simulator",
	"github.com/tpmid/tpmid/internal/tpmtest",
	"github.com/tpmid/tpmid/internal/testmachine",
	"github.com/tpmid/tpmid/internal/testca",
	"github.com/tpmid/tpmid/internal/softtpm",
	"github.com/tpmid/tpmid/internal/demo",
	"github.com/tpmid/tpmid/test", // harnesses and bench-only plugins (test/bench/spire/floor)
}

// TestShippedBinariesLinkNoTestTPMCode runs `go list -deps` on each shipped
// binary as make build and make dist build it (no build tags, with and
// without cgo) and fails if it links a forbidden package.
func TestShippedBinariesLinkNoTestTPMCode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatalf("no go command: %v", err)
		}
	}
	for _, cgo := range []string{"0", "1"} {
		for _, bin := range []string{"./tpmid", "./tpmid-agent-plugin", "./tpmid-server-plugin"} {
			cmd := exec.Command(goBin, "list", "-deps", bin)
			// GOFLAGS cleared: a -tags tpmsimulator of the test run's
			// environment must not leak into the release configuration.
			cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOFLAGS=")
			out, err := cmd.Output()
			if err != nil {
				msg := ""
				if ee, ok := err.(*exec.ExitError); ok {
					msg = string(ee.Stderr)
				}
				t.Fatalf("CGO_ENABLED=%s go list -deps %s: %v\n%s", cgo, bin, err, msg)
			}
			deps := strings.Fields(string(out))
			if len(deps) < 50 || !slices.Contains(deps, "github.com/tpmid/tpmid/pkg/common/tpm") && bin != "./tpmid-server-plugin" {
				t.Fatalf("CGO_ENABLED=%s go list -deps %s: %d packages, implausible", cgo, bin, len(deps))
			}
			for _, d := range deps {
				for _, f := range forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("CGO_ENABLED=%s %s links %s (test-only)", cgo, bin, d)
					}
				}
			}
		}
	}
}
