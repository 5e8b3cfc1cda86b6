package verify

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"testing"
)

// TestCheckAKStrength: real AKs (SHA-256 names) pass; the same public areas
// with a SHA-1 name algorithm are ak_weak; SHA-384 passes; a PKIX key has no
// name algorithm to check.
func TestCheckAKStrength(t *testing.T) {
	for _, path := range []string{
		"quotes/lenovo-t490-stm/ak.pub",
		"quotes/gce-windows-shielded-vm/ak.tpmt_public.bin",
		"quotes/gce-cos-85/nonce9009/ak.tpmt_public.bin",
	} {
		b := readReal(t, path)
		if len(b) >= 2 && int(b[0])<<8|int(b[1]) == len(b)-2 {
			b = b[2:] // TPM2B_PUBLIC
		}
		withNameAlg := func(alg uint16) *AKPublic {
			t.Helper()
			c := bytes.Clone(b)
			c[2], c[3] = byte(alg>>8), byte(alg)
			ak, err := ParseAKPublic(c)
			if err != nil {
				t.Fatalf("%s with nameAlg 0x%04x: %v", path, alg, err)
			}
			return ak
		}
		if err := CheckAKStrength(withNameAlg(0x000b)); err != nil {
			t.Errorf("%s (SHA-256): %v", path, err)
		}
		if err := CheckAKStrength(withNameAlg(0x000c)); err != nil {
			t.Errorf("%s with SHA-384: %v", path, err)
		}
		err := CheckAKStrength(withNameAlg(0x0004))
		if ReasonOf(err) != ReasonAKWeak {
			t.Errorf("%s with SHA-1: %v, want %s", path, err, ReasonAKWeak)
		}
		// The SHA-1 key is otherwise a fine AK: the refusal is about its name.
		if err := CheckAKAttributes(withNameAlg(0x0004)); err != nil {
			t.Errorf("%s with SHA-1 attributes: %v", path, err)
		}
		pub := withNameAlg(0x000b).Public
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		pkix, err := ParseAKPublic(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckAKStrength(pkix); ReasonOf(err) != ReasonAKMalformed {
			t.Errorf("PKIX key: %v, want %s", err, ReasonAKMalformed)
		}
	}
	if err := CheckAKStrength(nil); ReasonOf(err) != ReasonAKMalformed {
		t.Errorf("nil: %v", err)
	}
}

// TestCheckAKStrengthRSA: an RSA AK under 2048 bits is refused before the
// challenge, not only later as a weak quote. (PKIX keys of 2048 bits and
// more go on to the name check, which they fail for lack of a TPMT_PUBLIC;
// real TPM AKs of 2048 bits pass in TestCheckAKStrength.)
func TestCheckAKStrengthRSA(t *testing.T) {
	for _, c := range []struct {
		bits int
		want Reason
	}{{1024, ReasonAKWeak}, {2047, ReasonAKWeak}, {2048, ReasonAKMalformed}, {3072, ReasonAKMalformed}} {
		n := new(big.Int).Lsh(big.NewInt(1), uint(c.bits-1))
		n.Add(n, big.NewInt(1))
		der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: 65537})
		if err != nil {
			t.Fatal(err)
		}
		ak, err := ParseAKPublic(der)
		if err != nil {
			t.Fatalf("%d bits: %v", c.bits, err)
		}
		if got := ReasonOf(CheckAKStrength(ak)); got != c.want {
			t.Errorf("%d bits: reason %q, want %q", c.bits, got, c.want)
		}
	}
}
