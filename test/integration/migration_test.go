package integration

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-attestation/attest"

	"github.com/tpmid/tpmid/internal/demo"
	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/common/tpm"
)

// TestMigrationFromSpireTPMPlugin runs spire-tpm-plugin's own config
// layout through tpmid: the server plugin with ca_path (a directory of EK
// CA certificates) and hash_path (a directory of empty files named by EK
// hash), the agent plugin with its default settings (only where the TPM
// and its event log are). The machine has an RSA EK with a certificate
// (from swtpm's CA) and, as many TPMs do, an ECC P-256 EK with one too.
// Whichever way the server admits it, the agent ID is
// spiffe://example.org/spire/agent/tpm/<the hash tpmid ek prints>, which
// is the hash spire-tpm-plugin's get_tpm_pubhash prints (computed here as
// it computes it), so the agent keeps the ID spire-tpm-plugin gave it.
func TestMigrationFromSpireTPMPlugin(t *testing.T) {
	env, ctx := newEnv(t)
	m := env.newMachine(ctx, "node")

	// A second EK certificate, for the ECC P-256 EK, from another
	// manufacturer CA: the default EK must still be the RSA one.
	eccCA, err := testca.New("ECC EK manufacturer CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.withTPM(func(tp *tpm.TPM) error {
		return tpmtest.ProvisionEKCertificate(tp, tpm.EKECC, func(pub crypto.PublicKey) ([]byte, error) {
			return eccCA.IssueEK(pub, "id:53494D55", "id:00000001", "id:00020000")
		})
	}); err != nil {
		t.Fatalf("provisioning an ECC P-256 EK certificate: %v", err)
	}

	// What spire-tpm-plugin's get_tpm_pubhash would print on this machine.
	pubhash := getTPMPubhash(t, m.inst.Addr())
	// What tpmid ek prints, as an operator runs it (default algorithm).
	out, err := env.tpmid(ctx, "ek", "--tpm", m.inst.Addr())
	if err != nil {
		t.Fatal(err)
	}
	mm := regexp.MustCompile(`(?m)^ek_hash: ([0-9a-f]{64})$`).FindStringSubmatch(out)
	if mm == nil {
		t.Fatalf("tpmid ek printed no ek_hash line:\n%s", out)
	}
	hash := mm[1]
	if hash != pubhash {
		t.Fatalf("tpmid ek prints %s, get_tpm_pubhash would print %s", hash, pubhash)
	}
	if !strings.Contains(out, "algorithm: rsa") {
		t.Errorf("tpmid ek did not pick the RSA EK by default:\n%s", out)
	}
	wantID := "spiffe://" + demo.TrustDomain + "/spire/agent/tpm/" + hash

	// spire-tpm-plugin's directories.
	hashes := filepath.Join(env.tmp, "hashes")
	if err := os.MkdirAll(hashes, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hashes, hash), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	emptyHashes := filepath.Join(env.tmp, "other-hashes")
	if err := os.MkdirAll(emptyHashes, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(emptyHashes, strings.Repeat("ab", 32)), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		pluginData string
		warnings   []string
		refused    bool
	}{
		{"ca_path and hash_path", fmt.Sprintf("        ca_path = %q\n        hash_path = %q", m.caBundle, hashes), []string{"ca_path", "hash_path"}, false},
		{"hash_path only", fmt.Sprintf("        hash_path = %q", hashes), []string{"hash_path"}, false},
		{"ca_path only", fmt.Sprintf("        ca_path = %q", m.caBundle), []string{"ca_path"}, false},
		// The EK is admitted by its certificate although its hash is not
		// listed: ca_path or hash_path, as spire-tpm-plugin.
		{"ca_path, hash not in hash_path", fmt.Sprintf("        ca_path = %q\n        hash_path = %q", m.caBundle, emptyHashes), []string{"ca_path", "hash_path"}, false},
		// And hash_path is a real check: without ca_path, an unlisted
		// hash is refused.
		{"hash not in hash_path", fmt.Sprintf("        hash_path = %q", emptyHashes), []string{"hash_path"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := env.StartServer(ctx, "spire-server-"+strings.NewReplacer(" ", "-", ",", "", "_", "").Replace(tc.name),
				demo.ServerOptions{ExtraPluginData: tc.pluginData})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Stop()
			for _, key := range tc.warnings {
				if line := findLineWith(srv.Log(), "Deprecated setting", key+" is deprecated"); line == "" {
					t.Errorf("spire-server logged no deprecation warning for %s", key)
				} else {
					t.Logf("warning: %s", line)
				}
			}
			a, err := env.attest(ctx, srv, m, agentOpts{Timeout: 60 * time.Second})
			if tc.refused {
				wantRefused(t, err, "ek_not_admitted")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The TPM serves one connection at a time: the next agent
			// needs it.
			defer a.Agent.Stop()
			if a.SPIFFEID != wantID {
				t.Errorf("agent ID %s, want spire-tpm-plugin's %s", a.SPIFFEID, wantID)
			}
			// spire-tpm-plugin's one selector, tpm:pub_hash:<hash>, is
			// there too.
			wantSelector(t, a, "pub_hash", hash)
		})
	}
}

// findLineWith returns the first line of log containing all of needles.
func findLineWith(log string, needles ...string) string {
	for _, l := range strings.Split(log, "\n") {
		all := true
		for _, n := range needles {
			all = all && strings.Contains(l, n)
		}
		if all {
			return l
		}
	}
	return ""
}

// getTPMPubhash computes what spire-tpm-plugin's get_tpm_pubhash prints
// for the TPM at addr (tcp://host:port), the way it does: the first EK
// go-attestation's EKs() returns (the RSA EK, with its NV certificate if
// any), the SHA-256 of its public key in PKIX DER, as lowercase hex. It
// uses go-attestation directly, not tpmid's tpm package.
func getTPMPubhash(t *testing.T, addr string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "tcp://"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	at, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: &rawTPMConn{conn}})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	defer at.Close()
	eks, err := at.EKs()
	if err != nil || len(eks) == 0 {
		t.Fatalf("go-attestation EKs: %d, %v", len(eks), err)
	}
	der, err := x509.MarshalPKIXPublicKey(eks[0].Public)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(der))
}

// rawTPMConn is a go-attestation command channel over swtpm's data socket:
// a response is read whole (header, then the size it announces), since
// go-tpm reads it in one call.
type rawTPMConn struct{ net.Conn }

func (c *rawTPMConn) Read(p []byte) (int, error) {
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(c.Conn, hdr); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint32(hdr[2:6]))
	if n < 10 || n > len(p) {
		return 0, fmt.Errorf("TPM response of %d bytes for a %d-byte buffer", n, len(p))
	}
	copy(p, hdr)
	if _, err := io.ReadFull(c.Conn, p[10:n]); err != nil {
		return 0, err
	}
	return n, nil
}

func (c *rawTPMConn) MeasurementLog() ([]byte, error) { return nil, nil }
