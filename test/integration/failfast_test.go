package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/internal/demo"
)

// TestAgentRefusesToStartWithoutTPM: an agent whose tpm_device names no TPM
// does not start and retry every few seconds: the plugin's Configure opens
// the TPM, so spire-agent exits at once, and its log names the device.
func TestAgentRefusesToStartWithoutTPM(t *testing.T) {
	env, ctx := newEnv(t)
	node, err := env.NewNode(ctx, "node1", demo.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := env.StartServer(ctx, "spire-server", demo.ServerOptions{EKCABundle: node.CABundle})
	if err != nil {
		t.Fatal(err)
	}
	const device = "tcp://127.0.0.1:1"
	start := time.Now()
	_, err = env.Attest(ctx, srv, node, demo.AgentOptions{TPMDevice: device, Timeout: 30 * time.Second})
	if err == nil {
		t.Fatal("spire-agent attested without a TPM")
	}
	var refused *demo.RefusedError
	if errors.As(err, &refused) {
		t.Fatalf("the server refused the agent (%s): it should not have got that far", refused.Line)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("spire-agent took %s to give up", d.Round(time.Millisecond))
	}
	logs, _ := filepath.Glob(filepath.Join(env.LogDir, "node1-agent*.log"))
	var text strings.Builder
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		text.Write(b)
	}
	if !strings.Contains(text.String(), device) || !strings.Contains(text.String(), "cannot be used") {
		t.Errorf("spire-agent's log does not name the device (%v):\n%s", err, text.String())
	}
}
