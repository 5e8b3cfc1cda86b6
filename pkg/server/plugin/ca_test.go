package plugin_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/testmachine"
)

// TestAKCertificateOverGRPC: with ca_dir, the first attestation delivers
// an AK certificate chain (kept by the agent plugin in data_dir, verifying
// to the CA root and naming the agent), and the next attestation takes the
// fast path; both plugins over the SDK's real gRPC transport, on swtpm.
func TestAKCertificateOverGRPC(t *testing.T) {
	m := testmachine.NewSwtpm(t, swtpm.Options{})
	caDir := t.TempDir()
	if _, err := issuer.Init(context.Background(), issuer.InitOptions{Dir: caDir}); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	agentHCL := fmt.Sprintf("tpm_device = %q\nevent_log_path = %q\ndata_dir = %q", m.Device, m.LogPath, dataDir)
	var log syncBuffer
	p := servePairLog(t, agentHCL, fmt.Sprintf("ek_ca_bundle = %q\nca_dir = %q", m.TrustDir, caDir),
		hclog.New(&hclog.LoggerOptions{Output: &log, Level: hclog.Info}))

	attrs, err := p.attest(t)
	if err != nil {
		t.Fatalf("first attestation: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(dataDir, "ak-ecdsa.chain.pem"))
	if err != nil {
		t.Fatalf("agent kept no chain: %v", err)
	}
	var chain [][]byte
	for blk, rest := pem.Decode(raw); blk != nil; blk, rest = pem.Decode(rest) {
		chain = append(chain, blk.Bytes)
	}
	ca, err := issuer.Load(context.Background(), caDir)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	if len(chain) != 2 {
		t.Fatalf("chain of %d certificates", len(chain))
	}
	leaf, err := parseCert(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	facts, err := ca.VerifyAK(leaf, mustParse(t, chain[1:]), leaf.NotBefore.Add(2*60e9))
	if err != nil {
		t.Fatalf("delivered chain does not verify to the CA root: %v", err)
	}
	if facts.SPIFFEID.String() != attrs.SpiffeId {
		t.Errorf("certificate names %s, agent is %s", facts.SPIFFEID, attrs.SpiffeId)
	}
	if !strings.Contains(log.String(), "fast_path=false") || !strings.Contains(log.String(), "ak_certificate_delivered=true") {
		t.Errorf("first attestation log:\n%s", log.String())
	}

	if _, err := p.attest(t); err != nil {
		t.Fatalf("re-attestation: %v", err)
	}
	if !strings.Contains(log.String(), "fast_path=true") {
		t.Errorf("re-attestation did not take the fast path:\n%s", log.String())
	}
}

func parseCert(der []byte) (*x509.Certificate, error) { return x509.ParseCertificate(der) }

func mustParse(t *testing.T, ders [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}
