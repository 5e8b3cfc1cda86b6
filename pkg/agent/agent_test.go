package agent_test

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/wire"
)

func hello(t *testing.T, m *testmachine.Machine, cfg agent.Config) (*wire.Hello, error) {
	t.Helper()
	s, raw, err := agent.BeginWith(m.TPM, cfg)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	var h wire.Hello
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return &h, nil
}

func TestAKKeptInDataDir(t *testing.T) {
	m := testmachine.New(t)
	dir := t.TempDir()
	cfg := agent.Config{DataDir: dir}
	first, err := hello(t, m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	second, err := hello(t, m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.AK.Public, second.AK.Public) {
		t.Error("the AK kept in data_dir was not reused")
	}
	if bytes.Equal(first.Nonce, second.Nonce) {
		t.Error("agent nonce repeated")
	}
	info, err := os.Stat(filepath.Join(dir, "ak-ecdsa.blob"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("AK blob: %v, mode %v", err, info)
	}
	// A blob the TPM cannot load (corrupt, or from another TPM) is replaced.
	if err := os.WriteFile(filepath.Join(dir, "ak-ecdsa.blob"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	third, err := hello(t, m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(third.AK.Public, first.AK.Public) {
		t.Error("corrupt blob did not lead to a new AK")
	}
	// Without data_dir every attestation has a fresh AK.
	a, _ := hello(t, m, agent.Config{})
	b, _ := hello(t, m, agent.Config{})
	if a == nil || b == nil || bytes.Equal(a.AK.Public, b.AK.Public) {
		t.Error("AK reused without data_dir")
	}
}

func TestEKCertificatePath(t *testing.T) {
	m := testmachine.New(t)
	der, err := os.ReadFile(m.EKCertPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pemPath := filepath.Join(dir, "ek.pem")
	padded := filepath.Join(dir, "ek-padded.der")
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(padded, append(der, bytes.Repeat([]byte{0xff}, 100)...), 0o600)
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	for _, p := range []string{m.EKCertPath, pemPath, padded} {
		h, err := hello(t, m, agent.Config{EKCertificatePath: p})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if !bytes.Equal(h.EK.Certificate, der) {
			t.Errorf("%s: sent certificate differs from the DER", p)
		}
	}
	for _, p := range []string{garbage, filepath.Join(dir, "missing")} {
		if _, err := hello(t, m, agent.Config{EKCertificatePath: p}); err == nil || !strings.Contains(err.Error(), "ek_certificate_path") {
			t.Errorf("%s: err = %v, want an ek_certificate_path error", p, err)
		}
	}
}
