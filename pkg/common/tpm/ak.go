package tpm

import (
	"crypto"
	"errors"
	"fmt"

	goattest "github.com/google/go-attestation/attest"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// AKAlg selects the attestation key algorithm: "ecdsa" (NIST P-256,
// ECDSA-SHA256; the default) or "rsa" (RSA 2048, RSASSA-PKCS1v1_5-SHA256).
type AKAlg string

// AK algorithms.
const (
	AKDefault AKAlg = ""
	AKECDSA   AKAlg = "ecdsa"
	AKRSA     AKAlg = "rsa"
)

// MaxAKBlob bounds an AK blob given to LoadAK.
const MaxAKBlob = 64 << 10

// AKParams are the AK's attestation parameters, byte for byte as
// go-attestation's AttestationParameters: Public is TPM2B_PUBLIC contents
// (TPMT_PUBLIC), CreateData TPMS_CREATION_DATA, CreateAttestation
// TPMS_ATTEST (TPM_ST_ATTEST_CREATION), CreateSignature TPMT_SIGNATURE.
type AKParams struct {
	Public, CreateData, CreateAttestation, CreateSignature []byte
}

// AK is an attestation key loaded in the TPM: a restricted signing key
// under the SRK (0x81000001). Close it to flush it.
type AK struct {
	ak     *goattest.AK
	params AKParams
	pub    crypto.PublicKey
	closed bool
}

// NewAK creates an AK (TPM2_Create under the SRK, TPM2_Load, then
// TPM2_CertifyCreation so a verifier can check its attributes). If the SRK
// is missing, go-attestation creates and persists it (TPM2_CreatePrimary,
// TPM2_EvictControl at 0x81000001), which needs empty owner auth.
//
// Security: the AK's attributes (fixedTPM, restricted, sign) prove nothing
// until a verifier has seen it activate a credential for a trusted EK.
func (t *TPM) NewAK(alg AKAlg) (*AK, error) {
	cfg := &goattest.AKConfig{}
	switch alg {
	case AKDefault, AKECDSA:
		cfg.Algorithm = goattest.ECDSA
	case AKRSA:
		cfg.Algorithm = goattest.RSA
	default:
		return nil, fmt.Errorf("%w: AK algorithm %q (want ecdsa, rsa or empty)", ErrBadAlgorithm, alg)
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	a, err := t.at.NewAK(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating %s AK: %w", cfg.Algorithm, err)
	}
	ak, err := t.wrapAK(a)
	if err != nil {
		return nil, errors.Join(err, a.Close(t.at))
	}
	return ak, nil
}

// LoadAK loads an AK from a blob made by (*AK).Blob (TPM2_Load under the
// SRK). The blob's private part is encrypted by the SRK, so it loads only
// in the TPM that made it.
func (t *TPM) LoadAK(blob []byte) (*AK, error) {
	if len(blob) > MaxAKBlob {
		return nil, fmt.Errorf("AK blob of %d bytes: %w (bound %d)", len(blob), ErrTooLarge, MaxAKBlob)
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	a, err := t.at.LoadAK(blob)
	if err != nil {
		return nil, fmt.Errorf("loading AK blob: %w", err)
	}
	ak, err := t.wrapAK(a)
	if err != nil {
		return nil, errors.Join(err, a.Close(t.at))
	}
	return ak, nil
}

func (t *TPM) wrapAK(a *goattest.AK) (*AK, error) {
	p := a.AttestationParameters()
	pub, err := goattest.ParseAKPublic(p.Public)
	if err != nil {
		return nil, fmt.Errorf("AK public area: %w", err)
	}
	return &AK{
		ak:     a,
		params: AKParams{Public: p.Public, CreateData: p.CreateData, CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature},
		pub:    pub.Public,
	}, nil
}

// Blob returns the AK in a form LoadAK accepts (go-attestation's JSON
// serialisation: TPM2B_PUBLIC, the SRK-wrapped TPM2B_PRIVATE and the
// creation parameters). It holds no secret in clear, but keep it with
// integrity: a swapped blob would make the agent present another AK.
func (k *AK) Blob() ([]byte, error) {
	b, err := k.ak.Marshal()
	if err != nil {
		return nil, fmt.Errorf("serialising AK: %w", err)
	}
	return b, nil
}

// Params returns the AK's attestation parameters for the server.
func (k *AK) Params() AKParams { return k.params }

// Public returns the AK's public key (*ecdsa.PublicKey or *rsa.PublicKey).
func (k *AK) Public() crypto.PublicKey { return k.pub }

// Close flushes the AK from the TPM (TPM2_FlushContext). Closing twice is
// a no-op.
func (k *AK) Close(t *TPM) error {
	if err := t.lock(); err != nil {
		return err
	}
	defer t.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	if err := k.ak.Close(t.at); err != nil {
		return fmt.Errorf("flushing AK: %w", err)
	}
	return nil
}

// Activate decrypts a credential made by TPM2_MakeCredential for (ek, ak)
// with TPM2_ActivateCredential, authorising the EK with a policy session
// (TPM2_StartAuthSession + TPM2_PolicySecret on the endorsement hierarchy,
// flushed afterwards). credential is TPM2B_ID_OBJECT and secret
// TPM2B_ENCRYPTED_SECRET, both with their 2-byte size prefix, as
// attest.EncryptedCredential holds them. Failure wraps ErrActivation.
//
// Security: returning the secret proves to its maker that ak is in the
// TPM holding ek; the caller must not reveal it except as the protocol's
// keyed proof.
func (t *TPM) Activate(ak *AK, ek *EK, credential, secret []byte) ([]byte, error) {
	if ak == nil || ek == nil {
		return nil, fmt.Errorf("%w: nil AK or EK", ErrActivation)
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	if ak.closed {
		return nil, fmt.Errorf("%w: AK is closed", ErrClosed)
	}
	out, err := ak.ak.ActivateCredentialWithEK(t.at, goattest.EncryptedCredential{Credential: credential, Secret: secret}, ek.ek)
	if err != nil {
		return nil, fmt.Errorf("%w: TPM2_ActivateCredential with the %s EK: %w", ErrActivation, ek.Alg, err)
	}
	return out, nil
}

// Quote signs the given PCRs of one bank with the AK (TPM2_Quote), with
// extraData as qualifyingData. attest is the TPMS_ATTEST structure and
// signature the TPMT_SIGNATURE. extraData is at most 64 bytes on most
// TPMs (the size of the AK's name digest).
//
// Security: the caller must read PCR values in the same session and the
// verifier must check the quote's PCR digest against them; a quote
// alone proves only the digest.
func (t *TPM) Quote(ak *AK, extraData []byte, bank pcrs.Alg, pcrList []int) (attest, signature []byte, err error) {
	list, err := checkSelection(bank, pcrList)
	if err != nil {
		return nil, nil, err
	}
	if ak == nil {
		return nil, nil, fmt.Errorf("TPM2_Quote: nil AK")
	}
	if err := t.lock(); err != nil {
		return nil, nil, err
	}
	defer t.mu.Unlock()
	if ak.closed {
		return nil, nil, fmt.Errorf("%w: AK is closed", ErrClosed)
	}
	q, err := ak.ak.QuotePCRs(t.at, extraData, goattest.HashAlg(bank), list)
	if err != nil {
		return nil, nil, fmt.Errorf("TPM2_Quote bank %s PCRs %v: %w", bank, list, err)
	}
	return q.Quote, q.Signature, nil
}
