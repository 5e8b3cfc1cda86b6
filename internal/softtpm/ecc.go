package softtpm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// ActivateCredentialECC is ActivateCredential for an ECC EK (the TCG
// default NIST P-256 EK template, L-2: nameAlg SHA-256, AES-128-CFB): the
// encrypted secret is not an RSA-OAEP ciphertext but the caller's
// ephemeral public point, a TPMS_ECC_POINT, and the seed comes from ECDH
// (TPM 2.0 Library Part 1, "Secret Sharing", ECDH; Part 3,
// TPM2_ActivateCredential):
//
//  1. Z = x-coordinate of ECDH(ek, ephemeral point);
//  2. seed = KDFe(nameAlg, Z, "IDENTITY", ephemeral x, EK x, digest bits);
//  3. the integrity HMAC and the AES-128-CFB decryption as for RSA.
//
// It costs one ECDH, which is why the load harness gives its software
// attesters ECC EKs. Security caveat: a key that answers here was never in a
// TPM; this is for tests and load generation only.
func ActivateCredentialECC(ek *ecdh.PrivateKey, akName, credential, secret []byte) ([]byte, error) {
	if ek == nil || len(akName) < 2 {
		return nil, errors.New("softtpm: need an EK private key and an AK name")
	}
	idObject, err := sized(credential, "credential blob")
	if err != nil {
		return nil, err
	}
	point, err := sized(secret, "encrypted secret")
	if err != nil {
		return nil, err
	}
	var x, y tpmutil.U16Bytes
	n, err := tpmutil.Unpack(point, &x, &y)
	if err != nil || n != len(point) {
		return nil, fmt.Errorf("softtpm: encrypted secret is not one TPMS_ECC_POINT (%v)", err)
	}
	pubBytes := ek.PublicKey().Bytes() // 0x04 || X || Y
	coord := (len(pubBytes) - 1) / 2
	if len(x) == 0 || len(y) == 0 || len(x) > coord || len(y) > coord {
		return nil, fmt.Errorf("softtpm: ephemeral point coordinates of %d and %d bytes, want at most %d", len(x), len(y), coord)
	}
	uncompressed := make([]byte, 1+2*coord)
	uncompressed[0] = 4
	copy(uncompressed[1+coord-len(x):1+coord], x)
	copy(uncompressed[1+2*coord-len(y):], y)
	eph, err := ek.Curve().NewPublicKey(uncompressed)
	if err != nil {
		return nil, fmt.Errorf("softtpm: ephemeral point: %w", err)
	}
	z, err := ek.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("softtpm: ECDH: %w", err)
	}
	seed := tpm2.KDFe(ekNameAlg, z, "IDENTITY", uncompressed[1:1+coord], pubBytes[1:1+coord], ekNameAlg.Size()*8)
	return unwrapCredential(seed, akName, idObject)
}

// unwrapCredential checks the TPMS_ID_OBJECT's integrity HMAC under seed and
// akName and decrypts its encIdentity into the secret (TPM 2.0 Library Part
// 1, "Credential Protection"); the part of TPM2_ActivateCredential that is
// the same for RSA and ECC EKs.
func unwrapCredential(seed, akName, idObject []byte) ([]byte, error) {
	var integrity tpmutil.U16Bytes
	n, err := tpmutil.Unpack(idObject, &integrity)
	if err != nil {
		return nil, fmt.Errorf("softtpm: TPMS_ID_OBJECT: %w", err)
	}
	encIdentity := idObject[n:]
	mac := hmac.New(ekNameAlg.New, tpm2.KDFa(ekNameAlg, seed, "INTEGRITY", nil, nil, ekNameAlg.Size()*8))
	mac.Write(encIdentity)
	mac.Write(akName)
	if !hmac.Equal(mac.Sum(nil), integrity) {
		return nil, ErrIntegrity
	}
	block, err := aes.NewCipher(tpm2.KDFa(ekNameAlg, seed, "STORAGE", akName, nil, ekSymBytes*8))
	if err != nil {
		return nil, err
	}
	cv := make([]byte, len(encIdentity))
	cipher.NewCFBDecrypter(block, make([]byte, block.BlockSize())).XORKeyStream(cv, encIdentity)
	var digest tpmutil.U16Bytes
	if n, err := tpmutil.Unpack(cv, &digest); err != nil || n != len(cv) {
		return nil, fmt.Errorf("softtpm: decrypted credential is not a TPM2B_DIGEST (%v)", err)
	}
	return digest, nil
}
