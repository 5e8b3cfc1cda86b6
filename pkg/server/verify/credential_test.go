package verify_test

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"path/filepath"
	"testing"

	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// akParams makes AKs of every type in the simulator (only with the
// tpmsimulator build tag and cgo).
func akParams(t testing.TB) map[tpm.AKAlg]tpm.AKParams {
	t.Helper()
	tp, err := tpm.Open(tpm.Config{Device: "simulator", EventLogPath: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Skipf("simulator: %v (build with -tags tpmsimulator and cgo)", err)
	}
	defer tp.Close()
	out := map[tpm.AKAlg]tpm.AKParams{}
	for _, alg := range []tpm.AKAlg{tpm.AKP256, tpm.AKP384, tpm.AKRSA2048} {
		ak, err := tp.NewAK(alg)
		if err != nil {
			t.Fatal(err)
		}
		out[alg] = ak.Params()
		ak.Close(tp)
	}
	return out
}

// TestMakeCredentialKeys: the EK keys of the TCG templates get a
// credential (sized TPM2B blob and secret); others are refused with
// ek_malformed before any cryptography.
func TestMakeCredentialKeys(t *testing.T) {
	name := append([]byte{0, 0x0b}, make([]byte, 32)...)
	secret := make([]byte, 32)
	rsaKey := func(bits int) crypto.PublicKey {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			t.Fatal(err)
		}
		return &k.PublicKey
	}
	ecKey := func(c elliptic.Curve) crypto.PublicKey {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return &k.PublicKey
	}
	for _, tc := range []struct {
		name string
		key  crypto.PublicKey
		ok   bool
	}{
		{"RSA 2048", rsaKey(2048), true},
		{"RSA 3072", rsaKey(3072), true},
		{"RSA 4096", rsaKey(4096), true},
		{"P-256", ecKey(elliptic.P256()), true},
		{"P-384", ecKey(elliptic.P384()), true},
		{"P-521", ecKey(elliptic.P521()), true},
		{"RSA 1024", rsaKey(1024), false},
		{"RSA 2048 exponent 3", &rsa.PublicKey{N: rsaKey(2048).(*rsa.PublicKey).N, E: 3}, false},
		{"P-224", ecKey(elliptic.P224()), false},
		{"Ed25519", ed25519.PublicKey(make([]byte, 32)), false},
		{"X25519", func() crypto.PublicKey { k, _ := ecdh.X25519().GenerateKey(rand.Reader); return k.PublicKey() }(), false},
	} {
		blob, enc, err := verify.MakeCredential(rand.Reader, tc.key, name, secret)
		if !tc.ok {
			if verify.ReasonOf(err) != verify.ReasonEKMalformed {
				t.Errorf("%s: %v, want %s", tc.name, err, verify.ReasonEKMalformed)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		for what, b := range map[string][]byte{"blob": blob, "secret": enc} {
			if len(b) < 3 || int(b[0])<<8|int(b[1]) != len(b)-2 {
				t.Errorf("%s: %s is not a TPM2B", tc.name, what)
			}
		}
	}
}

// TestEKPublicAreaParams: nameAlg and symmetric follow the key, per the
// TCG templates (the agent has no say).
func TestEKPublicAreaParams(t *testing.T) {
	for _, tc := range []struct {
		curve   elliptic.Curve
		nameAlg uint16
		aes     uint16
	}{
		{elliptic.P256(), 0x000b, 128},
		{elliptic.P384(), 0x000c, 256},
		{elliptic.P521(), 0x000d, 256},
	} {
		k, _ := ecdsa.GenerateKey(tc.curve, rand.Reader)
		pub, err := verify.EKPublicArea(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		d, err := pub.Parameters.ECCDetail()
		if err != nil {
			t.Fatal(err)
		}
		bits, _ := d.Symmetric.KeyBits.AES()
		if uint16(pub.NameAlg) != tc.nameAlg || uint16(*bits) != tc.aes {
			t.Errorf("%s: nameAlg 0x%04x AES-%d, want 0x%04x AES-%d", tc.curve.Params().Name, uint16(pub.NameAlg), *bits, tc.nameAlg, tc.aes)
		}
	}
}
