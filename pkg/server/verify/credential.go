package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// Reasons of this file. ReasonAKCreation is the session's reason of the
// same name (moved here with the check); ReasonEKMalformed is likewise
// the session's "ek_malformed", for an EK key no TCG template makes.
const (
	ReasonAKCreation  Reason = "ak_creation"  // creation data, creation attestation or its signature do not match the AK
	ReasonEKMalformed Reason = "ek_malformed" // an EK key type or size outside the TCG EK templates
)

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

// maxCreationField bounds each creation structure CheckAKCreation parses;
// real ones are 100-600 bytes.
const maxCreationField = 4096

// CheckAKCreation checks that the AK was created in a TPM with what its
// public area says, from the TPM2_Create / TPM2_CertifyCreation outputs
// the agent sends (go-attestation's CheckAKParameters did the same):
// createAttestation is a TPMS_ATTEST with magic TPM_GENERATED_VALUE and
// type TPM_ST_ATTEST_CREATION, certifying an object whose Name is the
// AK's and whose creationHash is H_nameAlg(createData); createSignature
// is the AK's valid signature over createAttestation. akPublic is the
// AK's TPMT_PUBLIC (or TPM2B_PUBLIC). Every failure is ReasonAKCreation
// (ReasonAKMalformed for an unparsable public area).
//
// Security: the creation attestation is signed by the AK itself, so it
// proves something only once the AK is known to be a restricted key in a
// TPM (a TPM signs a TPM_GENERATED structure with one only if it made the
// structure); a software key claiming those attributes signs anything.
// TPM2_ActivateCredential for the EK proves that, and more: the server
// session therefore relies on activation and does not call this
// (docs/verification.md, 2026-11-25). Nothing in the product calls it any
// more; it goes with the hello's creation attestation and signature (same
// entry). The creation data stays: EndorsementQualifiedName reads it.
func CheckAKCreation(akPublic, createData, createAttestation, createSignature []byte) error {
	ak, err := ParseAKPublic(akPublic)
	if err != nil {
		return err
	}
	if ak.TPMTPublic == nil {
		return failf(ReasonAKCreation, "the AK public key is not a TPM public area")
	}
	for n, f := range map[string][]byte{"creation data": createData, "creation attestation": createAttestation, "creation signature": createSignature} {
		if len(f) == 0 || len(f) > maxCreationField {
			return failf(ReasonAKCreation, "%s of %d bytes (want 1..%d)", n, len(f), maxCreationField)
		}
	}
	nameAlg := tpm2.TPMIAlgHash(binary.BigEndian.Uint16(ak.TPMTPublic[2:4]))
	h, err := nameAlg.Hash()
	if err != nil {
		return failf(ReasonAKCreation, "AK nameAlg 0x%04x: %v", uint16(nameAlg), err)
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](createAttestation)
	if err != nil {
		return failf(ReasonAKCreation, "creation attestation: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(att), createAttestation) {
		return failf(ReasonAKCreation, "creation attestation has trailing bytes")
	}
	if att.Magic != tpm2.TPMGeneratedValue {
		return failf(ReasonAKCreation, "creation attestation magic 0x%08x is not TPM_GENERATED_VALUE", uint32(att.Magic))
	}
	if att.Type != tpm2.TPMSTAttestCreation {
		return failf(ReasonAKCreation, "attestation type 0x%04x is not TPM_ST_ATTEST_CREATION", uint16(att.Type))
	}
	info, err := att.Attested.Creation()
	if err != nil {
		return failf(ReasonAKCreation, "creation attestation: %v", err)
	}
	if subtle.ConstantTimeCompare(info.ObjectName.Buffer, ak.Name) != 1 {
		return failf(ReasonAKCreation, "creation attestation certifies another object than this AK")
	}
	d := h.New()
	d.Write(createData)
	if subtle.ConstantTimeCompare(info.CreationHash.Buffer, d.Sum(nil)) != 1 {
		return failf(ReasonAKCreation, "creation data does not hash to the certified creationHash")
	}
	if _, err := tpm2.Unmarshal[tpm2.TPMSCreationData](createData); err != nil {
		return failf(ReasonAKCreation, "creation data: %v", err)
	}
	if err := checkCreationSignature(ak.Public, createAttestation, createSignature); err != nil {
		return err
	}
	return nil
}

// checkCreationSignature verifies a TPMT_SIGNATURE (RSASSA, RSAPSS or
// ECDSA, SHA-256/384/512) by pub over msg.
func checkCreationSignature(pub crypto.PublicKey, msg, sigBytes []byte) error {
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](sigBytes)
	if err != nil {
		return failf(ReasonAKCreation, "creation signature: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(sig), sigBytes) {
		return failf(ReasonAKCreation, "creation signature has trailing bytes")
	}
	hashOf := func(a tpm2.TPMIAlgHash) (crypto.Hash, []byte, error) {
		switch a {
		case tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512:
		default:
			return 0, nil, failf(ReasonAKCreation, "creation signature hash 0x%04x (want SHA-256, SHA-384 or SHA-512)", uint16(a))
		}
		h, _ := a.Hash()
		w := h.New()
		w.Write(msg)
		return h, w.Sum(nil), nil
	}
	switch sig.SigAlg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return failf(ReasonAKCreation, "RSA creation signature by a %T AK", pub)
		}
		var s *tpm2.TPMSSignatureRSA
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			s, err = sig.Signature.RSASSA()
		} else {
			s, err = sig.Signature.RSAPSS()
		}
		if err != nil {
			return failf(ReasonAKCreation, "creation signature: %v", err)
		}
		h, digest, err := hashOf(s.Hash)
		if err != nil {
			return err
		}
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(k, h, digest, s.Sig.Buffer)
		} else {
			err = rsa.VerifyPSS(k, h, digest, s.Sig.Buffer, nil)
		}
		if err != nil {
			return failf(ReasonAKCreation, "creation signature does not verify with the AK: %v", err)
		}
	case tpm2.TPMAlgECDSA:
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return failf(ReasonAKCreation, "ECDSA creation signature by a %T AK", pub)
		}
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return failf(ReasonAKCreation, "creation signature: %v", err)
		}
		_, digest, err := hashOf(s.Hash)
		if err != nil {
			return err
		}
		r, ss := new(big.Int).SetBytes(s.SignatureR.Buffer), new(big.Int).SetBytes(s.SignatureS.Buffer)
		if !ecdsa.Verify(k, digest, r, ss) {
			return failf(ReasonAKCreation, "creation signature does not verify with the AK")
		}
	default:
		return failf(ReasonAKCreation, "creation signature algorithm 0x%04x (want RSASSA, RSAPSS or ECDSA)", uint16(sig.SigAlg))
	}
	return nil
}
