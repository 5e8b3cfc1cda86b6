package softtpm

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"
)

// TestActivateCredentialECC: a credential made for an ECC EK the way the
// server makes it (credactivation.Generate with an *ecdsa.PublicKey, as
// go-attestation passes the EK) comes back out; another EK, AK name or
// changed byte does not.
func TestActivateCredentialECC(t *testing.T) {
	newKey := func() (*ecdsa.PrivateKey, *ecdh.PrivateKey) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		d, err := k.ECDH()
		if err != nil {
			t.Fatal(err)
		}
		return k, d
	}
	ekSign, ek := newKey()
	_, other := newKey()
	digest := sha256.Sum256([]byte("an AK's TPMT_PUBLIC"))
	ak := &legacy.HashValue{Alg: legacy.AlgSHA256, Value: digest[:]}
	name, err := ak.Encode()
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{0xa5}, 32)
	cred, encSecret, err := credactivation.Generate(ak, &ekSign.PublicKey, 16, secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ActivateCredentialECC(ek, name, cred, encSecret)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("ActivateCredentialECC = %x, %v; want %x", got, err, secret)
	}

	otherName := bytes.Clone(name)
	otherName[len(otherName)-1] ^= 1
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	for _, c := range []struct {
		name            string
		key             *ecdh.PrivateKey
		akName          []byte
		cred, encSecret []byte
		integrity       bool // ErrIntegrity rather than another error
	}{
		{"another EK", other, name, cred, encSecret, true},
		{"another AK name", ek, otherName, cred, encSecret, true},
		{"credential HMAC changed", ek, name, flip(cred, 5), encSecret, true},
		{"encIdentity changed", ek, name, flip(cred, len(cred)-1), encSecret, true},
		{"ephemeral point off the curve", ek, name, cred, flip(encSecret, len(encSecret)-1), false},
		{"credential size wrong", ek, name, cred[:len(cred)-1], encSecret, false},
		{"point truncated", ek, name, cred, append([]byte{0, byte(len(encSecret) - 3)}, encSecret[2:len(encSecret)-1]...), false},
		{"no secret", ek, name, cred, nil, false},
		{"no key", nil, name, cred, encSecret, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ActivateCredentialECC(c.key, c.akName, c.cred, c.encSecret)
			if err == nil {
				t.Fatalf("ActivateCredentialECC = %x, want an error", got)
			}
			if errors.Is(err, ErrIntegrity) != c.integrity {
				t.Fatalf("error %v: ErrIntegrity %v, want %v", err, errors.Is(err, ErrIntegrity), c.integrity)
			}
		})
	}
}
