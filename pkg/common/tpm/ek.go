package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"fmt"

	"github.com/google/go-attestation/attest"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// EKAlg selects the endorsement key: "rsa" (RSA 2048, certificate at NV
// 0x01c00002), "ecc" (ECC NIST P-256, certificate at NV 0x01c0000a) or ""
// (the RSA EK when it has a certificate, else the ECC P-256 EK when it has
// one, else the RSA EK without certificate). "" prefers RSA so that an
// agent moved from spire-tpm-plugin, which always uses the RSA EK, keeps
// its agent ID (decision of 2026-11-25, docs/tpm-access.md).
//
// The P-384 EK of the TCG high range (certificate at NV 0x01c00016, key at
// 0x81010016, which swtpm always creates) is not supported: go-attestation
// neither reads it nor makes credentials for it with the AES-256/SHA-384
// parameters its template needs. See docs/tpm-access.md.
type EKAlg string

// EK algorithms.
const (
	EKAuto EKAlg = ""
	EKRSA  EKAlg = "rsa"
	EKECC  EKAlg = "ecc"
)

// TCG EK Credential Profile NV indices and persistent handles.
const (
	nvRSAEKCert     = 0x01c00002
	nvECCEKCert     = 0x01c0000a // P-256, low range
	nvECCP384EKCert = 0x01c00016 // high range H-3, unsupported
)

// MaxEKCert bounds the NV index holding an EK certificate. Real EK
// certificates are 0.8-1.6 KiB; NV indices are usually 1-2 KiB with 0xFF
// padding.
const MaxEKCert = 4096

// EK is an endorsement key with its certificate, if the TPM has one.
type EK struct {
	// Alg is EKRSA or EKECC.
	Alg EKAlg
	// Public is *rsa.PublicKey or *ecdsa.PublicKey.
	Public crypto.PublicKey
	// PublicDER is Public in PKIX (SubjectPublicKeyInfo) DER.
	PublicDER []byte
	// CertDER is the EK certificate trimmed of NV padding; nil if the TPM
	// has none for this EK.
	CertDER []byte

	ek attest.EK
}

// EK returns the endorsement key of the given algorithm. It reads the NV
// public areas of the EK certificate indices (TPM2_NV_ReadPublic) to bound
// their size, then lets go-attestation read the certificates
// (TPM2_NV_Read) and find the EK's persistent handle (TPM2_ReadPublic).
// Without a certificate, the RSA EK is recreated from the default template
// (TPM2_CreatePrimary, flushed at once).
//
// Security: nothing here proves the key is a genuine TPM's: the caller's
// verifier must chain CertDER to a manufacturer root or match an enrolled
// key. go-attestation may persist the RSA EK at 0x81010001
// (TPM2_EvictControl) if it is missing, which needs empty owner auth.
func (t *TPM) EK(alg EKAlg) (*EK, error) {
	switch alg {
	case EKAuto, EKRSA, EKECC:
	default:
		return nil, fmt.Errorf("%w: EK algorithm %q (want rsa, ecc or empty)", ErrBadAlgorithm, alg)
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()

	present := map[uint32]bool{}
	for _, idx := range []uint32{nvRSAEKCert, nvECCEKCert} {
		pub, err := legacy.NVReadPublic(t.ch, tpmutil.Handle(idx))
		if err != nil {
			continue // absent (TPM_RC_HANDLE)
		}
		if int(pub.DataSize) > MaxEKCert {
			return nil, fmt.Errorf("EK certificate NV index 0x%08x holds %d bytes: %w (bound %d)", idx, pub.DataSize, ErrTooLarge, MaxEKCert)
		}
		present[idx] = true
	}

	var withCert []attest.EK
	if len(present) > 0 {
		eks, err := t.at.EKCertificates()
		if err != nil {
			return nil, fmt.Errorf("reading EK certificates: %w", err)
		}
		withCert = eks
	}
	pick := func(want EKAlg) *attest.EK {
		for i := range withCert {
			switch k := withCert[i].Public.(type) {
			case *ecdsa.PublicKey:
				if want == EKECC && k.Curve == elliptic.P256() {
					return &withCert[i]
				}
			case *rsa.PublicKey:
				if want == EKRSA {
					return &withCert[i]
				}
			}
		}
		return nil
	}
	var chosen *attest.EK
	switch alg {
	case EKAuto:
		// RSA first: spire-tpm-plugin's EK, hence its agent ID.
		if chosen = pick(EKRSA); chosen == nil {
			chosen = pick(EKECC)
		}
	default:
		chosen = pick(alg)
	}
	if chosen == nil && alg == EKECC {
		reason := "no ECC P-256 EK certificate at NV 0x01c0000a"
		if _, err := legacy.NVReadPublic(t.ch, nvECCP384EKCert); err == nil {
			reason += " (the TPM has a P-384 EK certificate at 0x01c00016, which tpmid does not support; use ek_algorithm rsa)"
		}
		return nil, fmt.Errorf("%w: %s", ErrNoEK, reason)
	}
	if chosen == nil {
		eks, err := t.at.EKs()
		if err != nil {
			return nil, fmt.Errorf("%w: creating the RSA EK from the default template: %w", ErrNoEK, err)
		}
		if len(eks) == 0 {
			return nil, fmt.Errorf("%w: the TPM returned no RSA EK", ErrNoEK)
		}
		chosen = &eks[0]
	}
	return newEK(*chosen)
}

func newEK(a attest.EK) (*EK, error) {
	ek := &EK{Public: a.Public, ek: a}
	switch a.Public.(type) {
	case *rsa.PublicKey:
		ek.Alg = EKRSA
	case *ecdsa.PublicKey:
		ek.Alg = EKECC
	default:
		return nil, fmt.Errorf("%w: EK public key of type %T", ErrBadAlgorithm, a.Public)
	}
	der, err := x509.MarshalPKIXPublicKey(a.Public)
	if err != nil {
		return nil, fmt.Errorf("encoding the EK public key: %w", err)
	}
	ek.PublicDER = der
	if a.Certificate != nil {
		cert, err := TrimDER(a.Certificate.Raw)
		if err != nil {
			return nil, fmt.Errorf("EK certificate: %w", err)
		}
		ek.CertDER = append([]byte(nil), cert...)
	}
	return ek, nil
}

// TrimDER returns the prefix of b that is one complete DER SEQUENCE (such
// as a certificate), dropping trailing bytes (the 0xFF padding of NV
// indices). It reads only the outer tag and length; it does not validate
// the contents. Errors wrap ErrBadDER.
func TrimDER(b []byte) ([]byte, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrBadDER, len(b))
	}
	if b[0] != 0x30 {
		return nil, fmt.Errorf("%w: outer tag 0x%02x is not SEQUENCE (0x30)", ErrBadDER, b[0])
	}
	hdr, n := 2, uint64(b[1])
	switch {
	case b[1] == 0x80:
		return nil, fmt.Errorf("%w: indefinite length is not DER", ErrBadDER)
	case b[1] > 0x80:
		ll := int(b[1] & 0x7f)
		if ll > 4 {
			return nil, fmt.Errorf("%w: %d length octets", ErrBadDER, ll)
		}
		if len(b) < 2+ll {
			return nil, fmt.Errorf("%w: truncated in the length octets", ErrBadDER)
		}
		if b[2] == 0 {
			return nil, fmt.Errorf("%w: non-minimal length encoding", ErrBadDER)
		}
		n = 0
		for _, c := range b[2 : 2+ll] {
			n = n<<8 | uint64(c)
		}
		if n < 0x80 {
			return nil, fmt.Errorf("%w: non-minimal length encoding", ErrBadDER)
		}
		hdr = 2 + ll
	}
	if n > uint64(len(b)-hdr) {
		return nil, fmt.Errorf("%w: truncated: SEQUENCE of %d bytes but only %d follow the header", ErrBadDER, n, len(b)-hdr)
	}
	return b[:hdr+int(n)], nil
}
