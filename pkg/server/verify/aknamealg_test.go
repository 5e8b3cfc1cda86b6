package verify

import (
	"bytes"
	"crypto/x509"
	"testing"
)

// TestCheckAKNameAlg: real AKs (SHA-256 names) pass; the same public areas
// with a SHA-1 name algorithm are ak_weak; SHA-384 passes; a PKIX key has no
// name algorithm to check.
func TestCheckAKNameAlg(t *testing.T) {
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
		if err := CheckAKNameAlg(withNameAlg(0x000b)); err != nil {
			t.Errorf("%s (SHA-256): %v", path, err)
		}
		if err := CheckAKNameAlg(withNameAlg(0x000c)); err != nil {
			t.Errorf("%s with SHA-384: %v", path, err)
		}
		err := CheckAKNameAlg(withNameAlg(0x0004))
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
		if err := CheckAKNameAlg(pkix); ReasonOf(err) != ReasonAKMalformed {
			t.Errorf("PKIX key: %v, want %s", err, ReasonAKMalformed)
		}
	}
	if err := CheckAKNameAlg(nil); ReasonOf(err) != ReasonAKMalformed {
		t.Errorf("nil: %v", err)
	}
}
