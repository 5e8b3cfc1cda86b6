package plugin

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	configv1 "github.com/spiffe/spire-plugin-sdk/proto/spire/service/common/config/v1"

	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/testmachine"
)

// TestOperatorMistakes: each mistake an operator makes in the agent's
// plugin_data fails Configure (or Validate) with a message naming the key
// and what to do, once.
func TestOperatorMistakes(t *testing.T) {
	// A port nobody listens on: listen, note the address, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	tests := []struct {
		name string
		hcl  string
		want string // in the Configure error; Validate must accept the HCL when static is false
		// static: Validate refuses too (a mistake visible without the TPM).
		static bool
	}{
		{name: "missing device", hcl: `tpm_device = "/dev/nonexistent-tpm"`, want: `tpm_device "/dev/nonexistent-tpm": the TPM cannot be used: opening TPM device /dev/nonexistent-tpm`},
		{name: "unreachable swtpm", hcl: fmt.Sprintf("tpm_device = %q", "tcp://"+closed), want: fmt.Sprintf(`tpm_device "tcp://%s": the TPM cannot be used: connecting to TPM at tcp://%s`, closed, closed)},
		{name: "unreachable unix socket", hcl: `tpm_device = "unix:///nonexistent/swtpm.sock"`, want: `connecting to TPM at unix:///nonexistent/swtpm.sock`},
		{name: "list for a string", hcl: `tpm_device = ["/dev/tpmrm0"]`, want: "tpm_device (line 1): want a string", static: true},
		{name: "bad scheme", hcl: `tpm_device = "http://host:1"`, want: "unknown scheme", static: true},
		{name: "bad ek algorithm", hcl: `ek_algorithm = "dsa"`, want: `ek_algorithm "dsa" is not one of [rsa rsa2048 rsa3072 rsa4096 ecc p256 p384 p521]`, static: true},
		{name: "bad ak algorithm", hcl: `ak_algorithm = "p224"`, want: `ak_algorithm "p224" is not one of [ecdsa p256 p384 rsa rsa2048 rsa3072]`, static: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New().Configure(context.Background(), &configv1.ConfigureRequest{HclConfiguration: tt.hcl})
			if err == nil {
				t.Fatal("Configure accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Configure: %v\nwant %q", err, tt.want)
			}
			if n := strings.Count(err.Error(), tt.want); n != 1 {
				t.Errorf("%q says it %d times", err, n)
			}
			resp, err := New().Validate(context.Background(), &configv1.ValidateRequest{HclConfiguration: tt.hcl})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Valid == tt.static {
				t.Errorf("Validate = %+v (Validate must check only what is static)", resp)
			}
		})
	}
}

// TestConfigureChecksEventLog: on a TPM that answers, a configured
// event_log_path that is missing, unreadable or not an event log fails
// Configure naming it; the machine's own log passes.
func TestConfigureChecksEventLog(t *testing.T) {
	m := testmachine.NewSwtpm(t, swtpm.Options{})
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not an event log at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "unreadable")
	if err := os.WriteFile(unreadable, []byte{1}, 0o000); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"the machine's log", m.LogPath, ""},
		{"missing", filepath.Join(dir, "missing"), `event_log_path "` + filepath.Join(dir, "missing") + `": `},
		{"not an event log", garbage, `event_log_path "` + garbage + `": not a TCG binary event log`},
	}
	if os.Geteuid() != 0 {
		tests = append(tests, struct{ name, path, want string }{"unreadable", unreadable, `event_log_path "` + unreadable + `": `})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hcl := fmt.Sprintf("tpm_device = %q\nevent_log_path = %q", m.Device, tt.path)
			_, err := New().Configure(context.Background(), &configv1.ConfigureRequest{HclConfiguration: hcl})
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Configure: %v", err)
			case tt.want == "":
				return
			case err == nil:
				t.Fatal("Configure accepted")
			case !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Configure: %v\nwant %q", err, tt.want)
			}
		})
	}
}

// TestConfigureDefaultLogWarns: the kernel's default log is only read when
// it exists, and an unreadable one is a warning, not a refusal.
func TestConfigureDefaultLogWarns(t *testing.T) {
	var buf bytes.Buffer
	p := New()
	p.SetLogger(hclog.New(&hclog.LoggerOptions{Output: &buf}))
	if err := p.checkEventLog(""); err != nil {
		t.Fatalf("default log: %v", err)
	}
}
