// Package softtpm does in software what a TPM does with its EK:
// TPM2_ActivateCredential, for an RSA key whose private half is in memory.
// It exists for tests that play the attacker of the EK certificate profile:
// someone who holds a key that a CA in ek_ca_bundle certified for another
// purpose (a TLS server key, an AK), sends it as the EK, and answers the
// server's TPM2_MakeCredential challenge without any TPM. Never use it
// outside tests. ActivateCredentialECC does the same for ECC EKs, for the
// load harness's software attesters (internal/softagent).
package softtpm

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
)

// The TCG default RSA EK template (EK Credential Profile, template L-1):
// nameAlg SHA-256, symmetric AES-128 in CFB mode. A TPM derives the
// credential keys with the EK's nameAlg and symmetric algorithm; so does
// this package.
const (
	ekNameAlg  = crypto.SHA256
	ekSymBytes = 16
)

// ErrIntegrity is TPM_RC_INTEGRITY: the credential was not made for this
// key and name, or it was changed.
var ErrIntegrity = errors.New("softtpm: credential integrity check failed")

// ActivateCredential recovers the secret from TPM2_MakeCredential output
// made for (ek's public key, akName), as TPM2_ActivateCredential does (TPM
// 2.0 Library Part 1, "Credential Protection"; Part 3, TPM2_ActivateCredential):
//
//  1. seed = RSA-OAEP decryption of the encrypted secret with the EK
//     (nameAlg hash, label "IDENTITY\x00");
//  2. HMAC key = KDFa(nameAlg, seed, "INTEGRITY", -, -, digest bits); the
//     credential's integrity HMAC must equal HMAC(encIdentity || akName);
//  3. AES key = KDFa(nameAlg, seed, "STORAGE", akName, -, 128); encIdentity
//     is decrypted with AES-128-CFB, zero IV, into a TPM2B_DIGEST: the secret.
//
// credential and secret are as go-attestation's EncryptedCredential and
// tpmid's wire.Credential carry them: TPM2B_ID_OBJECT and
// TPM2B_ENCRYPTED_SECRET, each with its 2-byte size. akName is the AK's
// TPM Name (nameAlg || digest of its TPMT_PUBLIC). The KDF is go-tpm's
// tpm2.KDFa.
func ActivateCredential(ek *rsa.PrivateKey, akName, credential, secret []byte) ([]byte, error) {
	if ek == nil || len(akName) < 2 {
		return nil, errors.New("softtpm: need an EK private key and an AK name")
	}
	idObject, err := sized(credential, "credential blob")
	if err != nil {
		return nil, err
	}
	encSeed, err := sized(secret, "encrypted secret")
	if err != nil {
		return nil, err
	}
	seed, err := rsa.DecryptOAEP(ekNameAlg.New(), rand.Reader, ek, encSeed, []byte("IDENTITY\x00"))
	if err != nil {
		return nil, fmt.Errorf("softtpm: seed: %w", err)
	}
	return unwrapCredential(seed, akName, idObject)
}

// sized strips a 2-byte big-endian size that must cover the rest exactly.
func sized(b []byte, what string) ([]byte, error) {
	if len(b) < 2 || int(b[0])<<8|int(b[1]) != len(b)-2 {
		return nil, fmt.Errorf("softtpm: %s is not one TPM2B", what)
	}
	return b[2:], nil
}
