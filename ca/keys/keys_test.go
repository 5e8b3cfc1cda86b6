package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/pemutil"
)

func TestSoftKMS(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	k, err := Open(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.Type != apiv1.SoftKMS || k.URI != DefaultKMS {
		t.Errorf("KMS %+v", k)
	}
	u, err := k.DefaultKeyURI("root")
	if err != nil || u != "softkms:path=root.key" {
		t.Fatalf("DefaultKeyURI = %q, %v", u, err)
	}
	for alg, check := range map[Algorithm]func(any) bool{
		"":        func(p any) bool { k, ok := p.(*ecdsa.PublicKey); return ok && k.Curve == elliptic.P256() },
		ECDSAP384: func(p any) bool { k, ok := p.(*ecdsa.PublicKey); return ok && k.Curve == elliptic.P384() },
		RSA3072:   func(p any) bool { k, ok := p.(*rsa.PublicKey); return ok && k.N.BitLen() == 3072 },
	} {
		name := "k-" + string(alg)
		u, _ := k.DefaultKeyURI(name)
		s, err := k.Create(ctx, u, alg)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if !check(s.Public()) {
			t.Errorf("%s: key %T", alg, s.Public())
		}
		path := filepath.Join(dir, name+".key")
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: key file %v, %v", alg, fi, err)
		}
		// The file is PKCS#8 PEM of the same key, and Signer loads it.
		b, _ := os.ReadFile(path)
		if !strings.HasPrefix(string(b), "-----BEGIN PRIVATE KEY-----") {
			t.Errorf("%s: key file is not PKCS#8 PEM: %.40q", alg, b)
		}
		v, err := pemutil.Read(path)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := k.Signer(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []any{v.(crypto.Signer).Public(), s2.Public()} {
			a, _ := x509.MarshalPKIXPublicKey(p)
			b, _ := x509.MarshalPKIXPublicKey(s.Public())
			if string(a) != string(b) {
				t.Errorf("%s: stored key differs", alg)
			}
		}
		sum := sha256.Sum256([]byte("x"))
		if _, err := s2.Sign(rand.Reader, sum[:], crypto.SHA256); err != nil {
			t.Errorf("%s: sign: %v", alg, err)
		}
		// Never over an existing key.
		if _, err := k.Create(ctx, u, alg); err == nil || !strings.Contains(err.Error(), "exists") {
			t.Errorf("%s: second Create: %v", alg, err)
		}
	}
	// An absolute path is used as is.
	abs := filepath.Join(t.TempDir(), "abs.key")
	if _, err := k.Create(ctx, "softkms:path="+abs, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Error(err)
	}
	// A key readable by others is refused.
	os.Chmod(filepath.Join(dir, "k-.key"), 0o640)
	if _, err := k.Signer(ctx, "softkms:path=k-.key"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("0640 key: %v", err)
	}
	for _, bad := range []string{"pkcs11:id=01;object=x", "softkms:", "not a uri", "softkms:path=missing.key"} {
		if _, err := k.Signer(ctx, bad); err == nil {
			t.Errorf("Signer(%q) accepted", bad)
		}
	}
	if _, err := k.Create(ctx, "softkms:path=x.key", "DSA-1024"); err == nil {
		t.Error("DSA accepted")
	}
	if err := k.Remove("softkms:path=" + abs); err != nil {
		t.Error(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := k.Create(cancelled, "softkms:path=c.key", ""); err == nil {
		t.Error("Create with a cancelled context")
	}
}

func TestDefaultKeyURIs(t *testing.T) {
	for typ, want := range map[apiv1.Type]string{
		apiv1.PKCS11: "pkcs11:id=", apiv1.TPMKMS: "tpmkms:name=tpmid-root",
	} {
		k := &KMS{Type: typ}
		u, err := k.DefaultKeyURI("root")
		if err != nil || !strings.HasPrefix(u, want) {
			t.Errorf("%s: %q, %v", typ, u, err)
		}
		if typ == apiv1.PKCS11 && !strings.HasSuffix(u, ";object=tpmid-root") {
			t.Errorf("pkcs11 key URI %q", u)
		}
	}
	if _, err := (&KMS{Type: apiv1.AmazonKMS}).DefaultKeyURI("root"); err == nil {
		t.Error("awskms has no default key names")
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"softkms:":                              "softkms:",
		"pkcs11:token=a;pin-value=1234":         "pkcs11:token=a;pin-value=REDACTED",
		"pkcs11:pin-value=1234;token=a":         "pkcs11:pin-value=REDACTED;token=a",
		"pkcs11:module-path=/m.so?pin-value=12": "pkcs11:module-path=/m.so?pin-value=REDACTED",
		"yubikey:management-key=x;password=p":   "yubikey:management-key=x;password=REDACTED",
		"pkcs11:pin-source=/etc/pin":            "pkcs11:pin-source=/etc/pin",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseAlgorithm(t *testing.T) {
	for in, want := range map[string]Algorithm{"": ECDSAP256, "ecdsa-p256": ECDSAP256, "ECDSA-P384": ECDSAP384, "rsa-3072": RSA3072, " RSA-4096 ": RSA4096} {
		if got, err := ParseAlgorithm(in); err != nil || got != want {
			t.Errorf("%q: %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"rsa-1024", "ed25519", "P256"} {
		if _, err := ParseAlgorithm(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
