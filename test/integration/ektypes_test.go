package integration

import (
	"testing"

	"github.com/tpmid/tpmid/internal/demo"
)

// TestRSA3072EK: swtpm_setup --rsa-keysize 3072 makes an RSA-3072 EK of
// the TCG high range (template H-6, certificate at NV 0x01c0001c, key at
// 0x8101001c, SHA-384 and AES-256); the agent uses it (ek_algorithm
// rsa3072) with an RSA-3072 AK and the real SPIRE server admits it.
func TestRSA3072EK(t *testing.T) {
	env, ctx := newEnv(t)
	node, err := env.NewNode(ctx, "node", demo.NodeOptions{RSAKeySize: 3072, Boot: demo.BootOptions{SecureBoot: true}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := env.StartServer(ctx, "spire-server", demo.ServerOptions{EKCABundle: node.CABundle})
	if err != nil {
		t.Fatal(err)
	}
	a, err := env.Attest(ctx, srv, node, demo.AgentOptions{EKAlgorithm: "rsa3072", AKAlgorithm: "rsa3072"})
	if err != nil {
		t.Fatal(err)
	}
	checkAttested(t, a, certSelectors...)
}
