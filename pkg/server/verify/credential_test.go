package verify_test

import (
	"bytes"
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

// TestCheckAKCreation: real AKs pass; every tampering of the four
// fields, and the parameters of another AK, fail with ak_creation.
func TestCheckAKCreation(t *testing.T) {
	all := akParams(t)
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i%len(c)] ^= 1; return c }
	for alg, p := range all {
		if err := verify.CheckAKCreation(p.Public, p.CreateData, p.CreateAttestation, p.CreateSignature); err != nil {
			t.Errorf("%s: real AK refused: %v", alg, err)
		}
		other := all[tpm.AKP256]
		if alg == tpm.AKP256 {
			other = all[tpm.AKRSA2048]
		}
		for name, tc := range map[string][4][]byte{
			"creation data changed":         {p.Public, flip(p.CreateData, len(p.CreateData)-1), p.CreateAttestation, p.CreateSignature},
			"attestation of another AK":     {p.Public, p.CreateData, other.CreateAttestation, other.CreateSignature},
			"attestation changed":           {p.Public, p.CreateData, flip(p.CreateAttestation, len(p.CreateAttestation)-3), p.CreateSignature},
			"attestation magic":             {p.Public, p.CreateData, flip(p.CreateAttestation, 0), p.CreateSignature},
			"attestation trailing byte":     {p.Public, p.CreateData, append(bytes.Clone(p.CreateAttestation), 0), p.CreateSignature},
			"signature changed":             {p.Public, p.CreateData, p.CreateAttestation, flip(p.CreateSignature, len(p.CreateSignature)-1)},
			"signature of another AK":       {p.Public, p.CreateData, p.CreateAttestation, other.CreateSignature},
			"signature trailing byte":       {p.Public, p.CreateData, p.CreateAttestation, append(bytes.Clone(p.CreateSignature), 0)},
			"public area of another AK":     {other.Public, p.CreateData, p.CreateAttestation, p.CreateSignature},
			"empty creation data":           {p.Public, nil, p.CreateAttestation, p.CreateSignature},
			"oversized creation data":       {p.Public, make([]byte, 5000), p.CreateAttestation, p.CreateSignature},
			"empty signature":               {p.Public, p.CreateData, p.CreateAttestation, nil},
			"attestation is the public key": {p.Public, p.CreateData, p.Public, p.CreateSignature},
		} {
			err := verify.CheckAKCreation(tc[0], tc[1], tc[2], tc[3])
			if r := verify.ReasonOf(err); r != verify.ReasonAKCreation {
				t.Errorf("%s, %s: %v, want %s", alg, name, err, verify.ReasonAKCreation)
			}
		}
	}
	if err := verify.CheckAKCreation([]byte{1, 2, 3}, []byte{1}, []byte{1}, []byte{1}); verify.ReasonOf(err) != verify.ReasonAKMalformed {
		t.Errorf("garbage public area: %v, want ak_malformed", err)
	}
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

func FuzzCheckAKCreation(f *testing.F) {
	for _, p := range akParams(f) {
		f.Add(p.Public, p.CreateData, p.CreateAttestation, p.CreateSignature)
	}
	f.Fuzz(func(t *testing.T, pub, data, att, sig []byte) {
		err := verify.CheckAKCreation(pub, data, att, sig)
		if err != nil {
			if r := verify.ReasonOf(err); r != verify.ReasonAKCreation && r != verify.ReasonAKMalformed {
				t.Fatalf("untyped error %v", err)
			}
		}
	})
}
