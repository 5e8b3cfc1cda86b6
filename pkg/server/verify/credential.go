package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// ReasonEKMalformed is the session's "ek_malformed", for an EK key no
// TCG template makes.
const ReasonEKMalformed Reason = "ek_malformed"

// ekParams is what TPM2_MakeCredential takes from an EK's template beside
// its key: the name algorithm (the KDF and HMAC hash of the credential)
// and the AES key size of the credential's encryption.
type ekParams struct {
	nameAlg tpm2.TPMIAlgHash
	aesBits int
}

// ekParamsFor follows the TCG EK Credential Profile 2.5 templates: RSA
// 2048 and P-256 (L-1, L-2, H-1, H-2) use SHA-256 and AES-128; RSA 3072 and
// 4096 (H-6, H-7) and P-384 (H-3) SHA-384 and AES-256; P-521 (H-4) SHA-512
// and AES-256. Any other key is refused: no TCG EK has it.
func ekParamsFor(pub crypto.PublicKey) (ekParams, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return ekParams{tpm2.TPMAlgSHA256, 128}, nil
		case 3072, 4096:
			return ekParams{tpm2.TPMAlgSHA384, 256}, nil
		}
		return ekParams{}, failf(ReasonEKMalformed, "RSA EK of %d bits: the TCG EK templates are RSA 2048, 3072 and 4096", k.N.BitLen())
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ekParams{tpm2.TPMAlgSHA256, 128}, nil
		case elliptic.P384():
			return ekParams{tpm2.TPMAlgSHA384, 256}, nil
		case elliptic.P521():
			return ekParams{tpm2.TPMAlgSHA512, 256}, nil
		}
		return ekParams{}, failf(ReasonEKMalformed, "ECC EK on curve %s: the TCG EK templates are P-256, P-384 and P-521", k.Curve.Params().Name)
	}
	return ekParams{}, failf(ReasonEKMalformed, "EK key of type %T: an EK is RSA or ECC", pub)
}

// EKPublicArea derives the EK's TPMT_PUBLIC from its key by the TCG
// template of its type and size (see ekParamsFor). Only the fields
// TPM2_MakeCredential reads are meaningful: type, nameAlg, symmetric and
// the key; attributes and authPolicy, which only the TPM enforces, are
// left empty.
//
// Security: the parameters follow the key, never the agent: an agent
// claiming weaker ones cannot, since it sends no template. An EK whose
// real template differs (a non-TCG EK) fails activation in its own TPM.
func EKPublicArea(pub crypto.PublicKey) (*tpm2.TPMTPublic, error) {
	p, err := ekParamsFor(pub)
	if err != nil {
		return nil, err
	}
	sym := tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(p.aesBits)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
	attrs := tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, AdminWithPolicy: true, Restricted: true, Decrypt: true}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.E != 65537 {
			return nil, failf(ReasonEKMalformed, "RSA EK exponent %d: the TCG EK templates use 65537", k.E)
		}
		return &tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: p.nameAlg, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{Symmetric: sym, KeyBits: tpm2.TPMKeyBits(k.N.BitLen())}),
			Unique:     tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()}),
		}, nil
	case *ecdsa.PublicKey:
		if _, err := k.ECDH(); err != nil { // the point is on the curve
			return nil, failf(ReasonEKMalformed, "ECC EK: %v", err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		curve := map[int]tpm2.TPMECCCurve{32: tpm2.TPMECCNistP256, 48: tpm2.TPMECCNistP384, 66: tpm2.TPMECCNistP521}[size]
		return &tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: p.nameAlg, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: sym,
				Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
				CurveID:   curve,
				KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, size))},
				Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, size))},
			}),
		}, nil
	}
	return nil, failf(ReasonEKMalformed, "EK key of type %T", pub)
}

// MakeCredential is TPM2_MakeCredential in software (go-tpm's
// CreateCredential): it protects secret for the TPM holding ekPub's
// private key, bound to the object named akName, with an RSA-OAEP
// encrypted seed (RSA EK) or an ECDH seed (ECC EK) and the EK template's
// nameAlg and AES size. blob is TPM2B_ID_OBJECT and encSecret
// TPM2B_ENCRYPTED_SECRET, both with their 2-byte size, as the agent's
// TPM2_ActivateCredential takes them.
//
// Security: only a TPM holding the EK's private key, with an object of
// name akName loaded, recovers secret; the TPM checks the name before
// decrypting.
func MakeCredential(rand io.Reader, ekPub crypto.PublicKey, akName, secret []byte) (blob, encSecret []byte, err error) {
	pub, err := EKPublicArea(ekPub)
	if err != nil {
		return nil, nil, err
	}
	key, err := tpm2.ImportEncapsulationKey(pub)
	if err != nil {
		return nil, nil, failf(ReasonEKMalformed, "EK key: %v", err)
	}
	id, enc, err := tpm2.CreateCredential(rand, key, akName, secret)
	if err != nil {
		return nil, nil, fmt.Errorf("making the credential: %w", err)
	}
	return with2B(id), with2B(enc), nil
}

func with2B(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}
