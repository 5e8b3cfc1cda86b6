package plugin

import (
	"context"
	"os"
	"strings"
	"testing"

	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"
)

func TestBuildConfig(t *testing.T) {
	tests := []struct {
		name string
		hcl  string
		errs []string
	}{
		{name: "defaults", hcl: ``},
		{name: "hostname", hcl: `hostname = "web-1.example.org"`},
		{name: "swtpm", hcl: `tpm_device = "tcp://127.0.0.1:2321"
ek_algorithm = "ecc"
ak_algorithm = "rsa"
event_log_path = "/tmp/log"
data_dir = "/var/lib/spire/agent/tpmid"
ek_certificate_path = "/etc/tpmid/ek.pem"`},
		{name: "every error at once", hcl: `tpm_device = "tcp://nohost"
ek_algorithm = "dsa"
ak_algorithm = "ed25519"
tpm_devcie = "/dev/tpm0"`, errs: []string{"tpm_device", "ek_algorithm \"dsa\"", "ak_algorithm \"ed25519\"", "unknown setting \"tpm_devcie\""}},
		{name: "hostname too long", hcl: "hostname = \"" + strings.Repeat("a", 254) + "\"", errs: []string{"hostname is 254 bytes"}},
		{name: "simulator refused", hcl: `tpm_device = "simulator"`, errs: []string{"for tests only"}},
		{name: "not HCL", hcl: `tpm_device = [`, errs: []string{"not valid HCL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := buildConfig(tt.hcl)
			if len(tt.errs) == 0 {
				if err != nil || cfg == nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if cfg != nil {
				t.Fatalf("config %+v returned with an error", cfg)
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, want := range tt.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q does not report %q", err, want)
				}
			}
			resp, err := New().Validate(context.Background(), &configv1.ValidateRequest{HclConfiguration: tt.hcl})
			if err != nil || resp.Valid || len(resp.Notes) == 0 {
				t.Fatalf("Validate = %+v, %v", resp, err)
			}
		})
	}
}

func TestUnconfigured(t *testing.T) {
	if err := New().AidAttestation(nil); err == nil || !strings.Contains(err.Error(), "not configured") {
		t.Fatalf("err = %v", err)
	}
}

func TestHostnameClaim(t *testing.T) {
	cfg, err := buildConfig(`hostname = "web-1.example.org"`)
	if err != nil || cfg.Hostname != "web-1.example.org" {
		t.Fatalf("%+v %v", cfg, err)
	}
	host, _ := os.Hostname()
	if cfg, err := buildConfig(``); err != nil || cfg.Hostname != host {
		t.Fatalf("default claim %q, want the machine's %q (%v)", cfg.Hostname, host, err)
	}
}
