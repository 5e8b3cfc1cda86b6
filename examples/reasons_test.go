package examples

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEveryReasonDocumented: every refusal reason the server plugin can
// give (the Reason constants of pkg/server) has a row on the server
// plugin's page.
func TestEveryReasonDocumented(t *testing.T) {
	page, err := os.ReadFile("../doc/plugin_server_nodeattestor_tpm.md")
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`Reason[A-Za-z0-9]*\s+(?:verify\.)?Reason\s*=\s*"([a-z0-9_]+)"`)
	n := 0
	err = filepath.Walk("../pkg/server", func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllStringSubmatch(string(b), -1) {
			n++
			if !strings.Contains(string(page), "| `"+m[1]+"` |") {
				t.Errorf("reason %s (%s) has no row in doc/plugin_server_nodeattestor_tpm.md", m[1], path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 40 {
		t.Errorf("found %d reason constants, want at least 40: has the declaration form changed?", n)
	}
}
