package trustfiles

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

func realPath(t testing.TB, rel string) string { t.Helper(); return realdata.Path(t, rel) }

func readReal(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(realPath(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoadEKTrust(t *testing.T) {
	// A single PEM bundle file with several blocks.
	if tr, err := LoadEKTrust(realPath(t, "cacerts/safeboot/roots.pem")); err != nil || tr.Roots == nil {
		t.Errorf("roots.pem: %v", err)
	}
	// DER files in a directory.
	if _, err := LoadEKTrust(realPath(t, "cacerts/google-gce")); err != nil {
		t.Errorf("google-gce: %v", err)
	}
	// Two PEM files glued by cat without a newline between them.
	glued := filepath.Join(t.TempDir(), "glued.pem")
	a := bytes.TrimSpace(readReal(t, "cacerts/keylime-tpm_cert_store/GS_TPM_RT.pem"))
	b := bytes.TrimSpace(readReal(t, "cacerts/keylime-tpm_cert_store/STM_RSA_RT.pem"))
	if err := os.WriteFile(glued, append(a, b...), 0o600); err != nil {
		t.Fatal(err)
	}
	if cs, err := LoadCertificates(glued); err != nil || len(cs) != 2 {
		t.Errorf("glued PEM: %d certificates, %v", len(cs), err)
	}
	dir := t.TempDir()
	bad := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	inter := readReal(t, "cacerts/google-gce/tpm_ek_intermediate_2.crt")
	for _, c := range []struct {
		name string
		path string
	}{
		{"missing", filepath.Join(dir, "nope.pem")},
		{"empty dir", filepath.Dir(bad("empty/readme.txt", []byte("x")))},
		{"garbage file", bad("garbage.pem", []byte("not a cert"))},
		{"PEM without certificate", bad("key.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1}}))},
		{"intermediate only", filepath.Dir(bad("interonly/i.crt", inter))},
		{"unparsable DER in dir", filepath.Dir(bad("baddir/x.der", []byte{0x30, 0x03, 1, 2, 3}))},
	} {
		if _, err := LoadEKTrust(c.path); verify.ReasonOf(err) != verify.ReasonEKTrustConfig {
			t.Errorf("%s: %v, want %s", c.name, err, verify.ReasonEKTrustConfig)
		}
	}
}

func TestLoadAllowlist(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "allow.txt")
	h := strings.Repeat("ab", 32)
	if err := os.WriteFile(good, []byte("# enrolled\n"+strings.ToUpper(h)+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	al, err := LoadAllowlist(good)
	if err != nil || !al.Contains(h) {
		t.Fatalf("allowlist %v, %v", al, err)
	}
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("not-hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAllowlist(bad); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad line: %v", err)
	}
	if _, err := LoadAllowlist(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}
