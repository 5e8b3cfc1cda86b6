package softtpm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"
)

// TestActivateCredential: a credential made the way the server makes it
// (go-tpm's credactivation.Generate, which go-attestation's
// ActivationParameters.Generate calls) comes back out in software; any other
// key, name or byte does not.
func TestActivateCredential(t *testing.T) {
	ek, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("an AK's TPMT_PUBLIC"))
	ak := &legacy.HashValue{Alg: legacy.AlgSHA256, Value: digest[:]}
	name, err := ak.Encode()
	if err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{0x5a}, 32)
	cred, encSecret, err := credactivation.Generate(ak, &ek.PublicKey, 16, secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ActivateCredential(ek, name, cred, encSecret)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("ActivateCredential = %x, %v; want %x", got, err, secret)
	}

	otherName := bytes.Clone(name)
	otherName[len(otherName)-1] ^= 1
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	for _, c := range []struct {
		name            string
		key             *rsa.PrivateKey
		akName          []byte
		cred, encSecret []byte
		integrity       bool // ErrIntegrity rather than another error
	}{
		{"another EK", other, name, cred, encSecret, false},
		{"another AK name", ek, otherName, cred, encSecret, true},
		{"credential HMAC changed", ek, name, flip(cred, 5), encSecret, true},
		{"encIdentity changed", ek, name, flip(cred, len(cred)-1), encSecret, true},
		{"seed changed", ek, name, cred, flip(encSecret, len(encSecret)-1), false},
		{"credential size wrong", ek, name, cred[:len(cred)-1], encSecret, false},
		{"no secret", ek, name, cred, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ActivateCredential(c.key, c.akName, c.cred, c.encSecret)
			if err == nil {
				t.Fatalf("activated: %x", got)
			}
			if c.integrity != errors.Is(err, ErrIntegrity) {
				t.Fatalf("err = %v, integrity failure %v", err, c.integrity)
			}
		})
	}
}
