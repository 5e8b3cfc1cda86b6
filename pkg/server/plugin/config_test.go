package plugin

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"

	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

func writeBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ca, err := testca.New("root")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WritePEM(filepath.Join(dir, "root.pem")); err != nil {
		t.Fatal(err)
	}
	return dir
}

type policyView struct {
	EKPolicy        appraise.EKPolicy
	RequireEventLog bool
	PCRSelectors    bool
	Selections      []wire.Selection
	MaxHello        int
}

func TestBuildPolicy(t *testing.T) {
	bundle := writeBundle(t)
	allow := filepath.Join(t.TempDir(), "allow.txt")
	if err := os.WriteFile(allow, []byte("# fleet A\n"+strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badAllow := filepath.Join(t.TempDir(), "bad.txt")
	if err := os.WriteFile(badAllow, []byte("nothex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		hcl   string
		td    string
		check func(t *testing.T, p *policyView)
		errs  []string // every one must be reported
	}{
		{
			name: "defaults",
			hcl:  `ek_ca_bundle = "` + bundle + `"`,
			check: func(t *testing.T, p *policyView) {
				if p.EKPolicy != "cert" || !p.RequireEventLog || p.PCRSelectors {
					t.Errorf("defaults wrong: %+v", p)
				}
				if len(p.Selections) != 1 || p.Selections[0].Bank != "sha256" || len(p.Selections[0].PCRs) != 8 {
					t.Errorf("default selection wrong: %+v", p.Selections)
				}
			},
		},
		{
			name: "all settings",
			hcl: `ek_ca_bundle = "` + bundle + `"
ek_hash_allowlist = "` + allow + `"
ek_policy = "cert_and_allowlist"
pcr_banks = ["sha1", "sha256"]
pcrs = [7, 0]
require_event_log = false
pcr_selectors = true
max_hello_size = 1024`,
			check: func(t *testing.T, p *policyView) {
				if len(p.Selections) != 2 || p.RequireEventLog || !p.PCRSelectors || p.MaxHello != 1024 {
					t.Errorf("settings not applied: %+v", p)
				}
				if p.Selections[0].PCRs[0] != 0 || p.Selections[0].PCRs[1] != 7 {
					t.Errorf("pcrs not sorted: %v", p.Selections[0].PCRs)
				}
			},
		},
		{
			name: "every error at once",
			hcl: `ek_policy = "cert_and_allowlist"
pcr_banks = ["md5", "sha256", "sha256"]
pcrs = [1, 1, 99]
bogus = 1`,
			errs: []string{
				"needs ek_ca_bundle", "needs ek_hash_allowlist", "unknown PCR bank \"md5\"",
				"sha256 is listed twice", "99 is not in 0..23", "listed twice", "unknown setting \"bogus\"",
			},
		},
		{name: "bad policy", hcl: `ek_policy = "trust_me"`, errs: []string{"ek_policy \"trust_me\""}},
		{name: "missing bundle", hcl: `ek_ca_bundle = "/nonexistent/bundle"`, errs: []string{"ek_ca_bundle"}},
		{name: "bad allowlist", hcl: `ek_policy = "allowlist"
ek_hash_allowlist = "` + badAllow + `"`, errs: []string{"line 1"}},
		{name: "bundle without use", hcl: `ek_policy = "allowlist"
ek_hash_allowlist = "` + allow + `"
ek_ca_bundle = "` + bundle + `"`, errs: []string{"does not use it"}},
		{name: "not HCL", hcl: `ek_policy = [`, errs: []string{"not valid HCL"}},
		{name: "unknown chain quirk", hcl: `ek_ca_bundle = "` + bundle + `"
ek_chain_quirks = ["sha1-intermediates", "self-signed-leaves"]`, errs: []string{"ek_chain_quirks", `"self-signed-leaves"`, `valid values are "sha1-intermediates", "expired-intermediates"`}},
		{name: "chain quirk twice", hcl: `ek_ca_bundle = "` + bundle + `"
ek_chain_quirks = ["expired-intermediates", "expired-intermediates"]`, errs: []string{`ek_chain_quirks: "expired-intermediates" is listed twice`}},
		{name: "chain quirks not a list", hcl: `ek_ca_bundle = "` + bundle + `"
ek_chain_quirks = { sha1 = true }`, errs: []string{"ek_chain_quirks (line 2): want a list of strings"}},
		{name: "chain quirks a string", hcl: `ek_ca_bundle = "` + bundle + `"
ek_chain_quirks = "sha1-intermediates"`, errs: []string{"ek_chain_quirks (line 2): want a list of strings"}},
		{name: "chain quirks a number", hcl: `ek_ca_bundle = "` + bundle + `"
ek_chain_quirks = 1`, errs: []string{"ek_chain_quirks (line 2): want a list of strings"}},
		{name: "chain quirks without a chain", hcl: `ek_policy = "allowlist"
ek_hash_allowlist = "` + allow + `"
ek_chain_quirks = ["sha1-intermediates"]`, errs: []string{`ek_chain_quirks is set but ek_policy "allowlist" checks no EK certificate chain`}},
		{name: "bad trust domain", td: "Not A Domain!", hcl: `ek_ca_bundle = "` + bundle + `"`, errs: []string{"trust_domain"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			td := tt.td
			if td == "" {
				td = "example.org"
			}
			s, err := buildConfig(td, tt.hcl)
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				p := s.session
				tt.check(t, &policyView{s.ek.Policy, p.RequireEventLog, p.PCRSelectors, p.Selections, p.MaxHello})
				return
			}
			if err == nil {
				t.Fatal("config accepted")
			}
			for _, want := range tt.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not report %q", err, want)
				}
			}
			// Validate reports the same errors as notes, without failing the RPC.
			resp, verr := New().Validate(context.Background(), &configv1.ValidateRequest{
				CoreConfiguration: &configv1.CoreConfiguration{TrustDomain: td},
				HclConfiguration:  tt.hcl,
			})
			if verr != nil || resp.Valid || len(resp.Notes) == 0 {
				t.Fatalf("Validate = %+v, %v", resp, verr)
			}
		})
	}
}

// TestChainQuirksConfig: ek_chain_quirks reaches the EK trust, none by
// default, in canonical order whatever order plugin_data gives.
func TestChainQuirksConfig(t *testing.T) {
	bundle := writeBundle(t)
	for _, c := range []struct {
		hcl  string
		want []verify.ChainQuirk
	}{
		{``, nil},
		{`ek_chain_quirks = []`, nil},
		{`ek_chain_quirks = ["sha1-intermediates"]`, []verify.ChainQuirk{verify.ChainQuirkSHA1Intermediates}},
		{`ek_chain_quirks = ["expired-intermediates"]`, []verify.ChainQuirk{verify.ChainQuirkExpiredIntermediates}},
		{`ek_chain_quirks = ["expired-intermediates", "sha1-intermediates"]`, []verify.ChainQuirk{verify.ChainQuirkSHA1Intermediates, verify.ChainQuirkExpiredIntermediates}},
	} {
		s, err := buildConfig("example.org", `ek_ca_bundle = "`+bundle+`"`+"\n"+c.hcl)
		if err != nil {
			t.Fatalf("%s: %v", c.hcl, err)
		}
		if !slices.Equal(s.ek.Trust.ChainQuirks, c.want) {
			t.Errorf("%s: quirks %v, want %v", c.hcl, s.ek.Trust.ChainQuirks, c.want)
		}
	}
}
