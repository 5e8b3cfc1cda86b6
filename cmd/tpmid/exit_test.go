package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestExitStatus: through main, usage errors exit 2, failed checks exit 1,
// each with one line on stderr; with --json the error is a JSON object on
// stderr with a stable reason.
func TestExitStatus(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	tests := []struct {
		name   string
		args   []string
		code   int
		json   bool
		reason string
		want   string
	}{
		{"unknown command", []string{"bogus"}, 2, false, "", `unknown command "bogus"`},
		{"unknown subcommand", []string{"hosts", "bogus"}, 2, false, "", `unknown command "bogus" for "tpmid hosts"`},
		{"unknown flag", []string{"eventlog", "replay", "--bogus", "x"}, 2, false, "", "unknown flag: --bogus"},
		{"missing argument", []string{"eventlog", "replay"}, 2, false, "", "accepts 1 arg(s), received 0"},
		{"missing argument, JSON", []string{"verify", "ekcert", "--json"}, 2, true, "usage", "accepts 1 arg(s)"},
		{"required flag, JSON", []string{"appraise", "--json"}, 2, true, "usage", `required flag(s) "eventlog" not set`},
		{"failed check", []string{"eventlog", "replay", missing}, 1, false, "", "no such file"},
		{"failed check, JSON", []string{"eventlog", "replay", "--json", missing}, 1, true, "error", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runMain(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, stderr)
			}
			if strings.Count(stderr, "\n") != 1 || stdout != "" {
				t.Errorf("stderr %q, stdout %q: want one line on stderr only", stderr, stdout)
			}
			if !tt.json {
				if !strings.HasPrefix(stderr, "tpmid: ") || !strings.Contains(stderr, tt.want) {
					t.Errorf("stderr %q, want %q", stderr, tt.want)
				}
				return
			}
			var e errorJSON
			if err := json.Unmarshal([]byte(stderr), &e); err != nil {
				t.Fatalf("stderr %q is not JSON: %v", stderr, err)
			}
			if e.Reason != tt.reason || !strings.Contains(e.Error, tt.want) {
				t.Errorf("%+v, want reason %q and %q", e, tt.reason, tt.want)
			}
		})
	}
}
