package plugin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

// TestOperatorMistakes: each mistake an operator makes in the server's
// plugin_data is reported once, naming the key and what it wants.
func TestOperatorMistakes(t *testing.T) {
	bundle := writeBundle(t)
	empty := filepath.Join(t.TempDir(), "empty.txt")
	if err := os.WriteFile(empty, []byte("# nothing yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hashes := t.TempDir()
	tests := []struct {
		name string
		hcl  string
		want []string // each exactly once, and nothing else
	}{
		{name: "bogus policy", hcl: `ek_policy = "bogus"`,
			want: []string{`ek_policy "bogus" is not one of cert, allowlist, cert_or_allowlist, cert_and_allowlist`}},
		{name: "empty allowlist", hcl: `ek_policy = "allowlist"
ek_hash_allowlist = "` + empty + `"`, want: []string{"lists no EK hash"}},
		{name: "empty hash_path", hcl: `hash_path = "` + hashes + `"`, want: []string{"hash_path " + hashes + " lists no EK hash"}},
		{name: "string for a list", hcl: `pcr_banks = "sha256"
ek_ca_bundle = "` + bundle + `"`, want: []string{"pcr_banks (line 1): want a list of strings"}},
		{name: "string for PCRs", hcl: `pcrs = "0-7"`, want: []string{"pcrs (line 1): want a list of integers"}},
		{name: "word for a size", hcl: `max_hello_size = "big"`, want: []string{"max_hello_size (line 1): want an integer"}},
		{name: "string for a bool", hcl: `require_event_log = "yes"`, want: []string{"require_event_log (line 1): want true or false"}},
		{name: "alias and new key", hcl: `ca_path = "` + bundle + `"
ek_ca_bundle = "` + bundle + `"`, want: []string{"ca_path and ek_ca_bundle are both set"}},
		{name: "hash alias and new key", hcl: `hash_path = "` + hashes + `"
ek_hash_allowlist = "` + empty + `"
ek_policy = "allowlist"`, want: []string{"hash_path and ek_hash_allowlist are both set", "ek_hash_allowlist " + empty + " lists no EK hash"}},
		{name: "hash_path a file", hcl: `hash_path = "` + empty + `"`, want: []string{"hash_path: " + empty + " is not a directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := buildConfig("example.org", tt.hcl)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, w := range tt.want {
				if n := strings.Count(msg, w); n != 1 {
					t.Errorf("%q says %q %d times, want once", msg, w, n)
				}
			}
			resp, verr := New().Validate(context.Background(), &configv1.ValidateRequest{
				CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"}, HclConfiguration: tt.hcl,
			})
			if verr != nil || resp.Valid {
				t.Fatalf("Validate = %+v, %v", resp, verr)
			}
			if len(resp.Notes) != len(tt.want) {
				t.Errorf("notes %q, want %d (one per mistake)", resp.Notes, len(tt.want))
			}
		})
	}
}

// TestDeprecatedAliases: spire-tpm-plugin's ca_path and hash_path (a
// directory of files named by EK hash) work, with the policy
// spire-tpm-plugin applies (either admits), and a warning naming the new key.
func TestDeprecatedAliases(t *testing.T) {
	bundle := writeBundle(t)
	hashes := t.TempDir()
	h1 := strings.Repeat("ab", 32)
	h2 := strings.Repeat("CD", 32)
	for _, n := range []string{h1, h2, "README", ".hidden", "abcd"} {
		if err := os.WriteFile(filepath.Join(hashes, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, hcl, policy string
		warnings          []string
		allowlisted       int
	}{
		{"ca_path", `ca_path = "` + bundle + `"`, "cert", []string{"ca_path is deprecated: rename it to ek_ca_bundle"}, 0},
		{"hash_path", `hash_path = "` + hashes + `"`, "allowlist", []string{"hash_path is deprecated"}, 2},
		{"both", `ca_path = "` + bundle + `"
hash_path = "` + hashes + `"`, "cert_or_allowlist", []string{"ca_path is deprecated", "ek_hash_allowlist"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := buildConfig("example.org", tt.hcl)
			if err != nil {
				t.Fatal(err)
			}
			if string(s.ek.Policy) != tt.policy || len(s.ek.Allowlist) != tt.allowlisted {
				t.Errorf("policy %s with %d hashes, want %s with %d", s.ek.Policy, len(s.ek.Allowlist), tt.policy, tt.allowlisted)
			}
			if tt.allowlisted > 0 {
				if _, ok := s.ek.Allowlist[strings.ToLower(h2)]; !ok {
					t.Errorf("upper-case hash file not allowlisted: %v", s.ek.Allowlist)
				}
			}
			joined := strings.Join(s.warnings, "\n")
			for _, w := range tt.warnings {
				if !strings.Contains(joined, w) {
					t.Errorf("warnings %q do not say %q", s.warnings, w)
				}
			}
			resp, _ := New().Validate(context.Background(), &configv1.ValidateRequest{
				CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"}, HclConfiguration: tt.hcl,
			})
			if !resp.Valid || len(resp.Notes) != len(s.warnings) {
				t.Errorf("Validate = %+v", resp)
			}
			var log bytes.Buffer
			p := New()
			p.SetLogger(hclog.New(&hclog.LoggerOptions{Output: &log}))
			defer p.Close()
			if _, err := p.Configure(context.Background(), &configv1.ConfigureRequest{
				CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: "example.org"},
				HclConfiguration:  tt.hcl + "\nstore = \"" + filepath.Join(t.TempDir(), "db") + "\"",
			}); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(log.String(), "deprecated") {
				t.Errorf("Configure logged no warning: %s", log.String())
			}
		})
	}
}
