// Package tpmtest holds TPM operations for tests and the demo only: EK
// certificate provisioning (as a manufacturer does) and PCR extend (to
// "boot" a software TPM). Shipped binaries (tpmid, the agent and server
// plugins) must not link it; cmd/deps_test.go checks they do not.
package tpmtest

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/tpmid/tpmid/pkg/common/tpm"
)

// ErrEKCertExists: ProvisionEKCertificate found the EK certificate NV
// index already defined.
var ErrEKCertExists = errors.New("EK certificate NV index already defined")

// TCG EK certificate NV indices (RSA 2048, ECC P-256 low range), where
// tpm.(*TPM).EK reads them.
const (
	nvRSAEKCert = 0x01c00002
	nvECCEKCert = 0x01c0000a
)

// TCG persistent EK handles ("Registry of Reserved TPM 2.0 Handles and
// Localities"), where go-attestation looks for EKs.
const (
	persistentRSAEK = 0x81010001
	persistentECCEK = 0x81010002
)

// TCG EK nonce indices: when present, go-attestation (like the TCG EK
// Credential Profile) copies the nonce into the template's unique field.
const (
	nvRSAEKNonce = 0x01c00003
	nvECCEKNonce = 0x01c0000b
)

// ekCertNVAttrs are the attributes of an EK certificate index we define:
// readable with the index's own (empty) auth, which is how go-attestation
// and tpm2_getekcertificate read it, and with owner or platform auth;
// written with owner auth; no dictionary-attack lockout. A manufacturer's
// index is platform-created (TPMA_NV_PLATFORMCREATE) and write-locked;
// ours is owner-created and not locked, so the owner can undefine it.
const ekCertNVAttrs = legacy.AttrOwnerWrite | legacy.AttrOwnerRead | legacy.AttrAuthRead | legacy.AttrPPRead | legacy.AttrNoDA

// ekAuthPolicy is PolicySecret(TPM_RH_ENDORSEMENT), the authPolicy of the
// TCG default EK templates.
var ekAuthPolicy = []byte{
	0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D,
	0x46, 0xA5, 0xD7, 0x24, 0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64,
	0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
}

// defaultEKTemplate returns the TCG EK Credential Profile default (low
// range) template for alg, identical to go-attestation's
// defaultRSAEKTemplate / defaultECCEKTemplate, so that the key it creates
// is the one go-attestation recreates.
func defaultEKTemplate(alg tpm.EKAlg) legacy.Public {
	pub := legacy.Public{
		NameAlg: legacy.AlgSHA256,
		Attributes: legacy.FlagFixedTPM | legacy.FlagFixedParent | legacy.FlagSensitiveDataOrigin |
			legacy.FlagAdminWithPolicy | legacy.FlagRestricted | legacy.FlagDecrypt,
		AuthPolicy: append([]byte(nil), ekAuthPolicy...),
	}
	sym := &legacy.SymScheme{Alg: legacy.AlgAES, KeyBits: 128, Mode: legacy.AlgCFB}
	if alg == tpm.EKRSA {
		pub.Type = legacy.AlgRSA
		pub.RSAParameters = &legacy.RSAParams{Symmetric: sym, KeyBits: 2048, ModulusRaw: make([]byte, 256)}
	} else {
		pub.Type = legacy.AlgECC
		pub.ECCParameters = &legacy.ECCParams{
			Symmetric: sym,
			CurveID:   legacy.CurveNISTP256,
			Point:     legacy.ECPoint{XRaw: make([]byte, 32), YRaw: make([]byte, 32)},
		}
	}
	return pub
}

// ProvisionEKCertificate gives tp an EK certificate in NV, as a
// manufacturer does. It is for provisioning test and software TPMs, and
// TPMs shipped without an EK certificate (the owner's own CA then issues
// it).
//
// It creates the EK of alg (EKRSA: RSA 2048, EKECC: NIST P-256) from the
// TCG default template with TPM2_CreatePrimary under the endorsement
// hierarchy (reading the EK nonce index with TPM2_NV_Read first, as
// go-attestation does), calls issue with its public key, checks the
// returned DER is one certificate for that key and at most MaxEKCert
// bytes, and stores it at the TCG index (0x01c00002 RSA, 0x01c0000a ECC)
// with TPM2_NV_DefineSpace and TPM2_NV_Write (owner authorization, empty
// owner password; attributes ownerwrite|ownerread|authread|ppread|no_da,
// so it reads back with the index's own empty auth as go-attestation and
// tpm2_getekcertificate read it). It then persists the EK with
// TPM2_EvictControl at its TCG handle (0x81010001 RSA if free, 0x81010002
// ECC), because go-attestation only reports an ECC EK certificate whose
// key sits at 0x81010002. The transient EK is flushed (TPM2_FlushContext)
// on every path, and the NV index is undefined again
// (TPM2_NV_UndefineSpace) if a later step fails.
//
// If the NV index already exists it refuses with an error wrapping
// ErrEKCertExists and changes nothing (remove an index with tpm2_nvundefine
// first if you mean to replace it). If 0x81010002 holds another key, ECC
// provisioning is refused too.
//
// Security: the certificate is only a claim. A server trusts it only after
// verifying its chain to a root it was configured with and that the TPM
// activated a credential for this very EK; writing a certificate here
// proves nothing by itself.
func ProvisionEKCertificate(tp *tpm.TPM, alg tpm.EKAlg, issue func(ekPub crypto.PublicKey) ([]byte, error)) error {
	var certIdx, nonceIdx, persistent tpmutil.Handle
	switch alg {
	case tpm.EKRSA:
		certIdx, nonceIdx, persistent = nvRSAEKCert, nvRSAEKNonce, persistentRSAEK
	case tpm.EKECC:
		certIdx, nonceIdx, persistent = nvECCEKCert, nvECCEKNonce, persistentECCEK
	default:
		return fmt.Errorf("%w: provisioning an EK certificate needs rsa or ecc, not %q", tpm.ErrBadAlgorithm, alg)
	}
	if issue == nil {
		return errors.New("ProvisionEKCertificate: nil issue function")
	}
	return tp.WithChannel(func(ch io.ReadWriter) error {
		return provision(ch, alg, certIdx, nonceIdx, persistent, issue)
	})
}

func provision(ch io.ReadWriter, alg tpm.EKAlg, certIdx, nonceIdx, persistent tpmutil.Handle, issue func(crypto.PublicKey) ([]byte, error)) (err error) {
	if _, err := legacy.NVReadPublic(ch, certIdx); err == nil {
		return fmt.Errorf("%w: NV index 0x%08x already holds the %s EK certificate", ErrEKCertExists, uint32(certIdx), alg)
	}

	tmpl := defaultEKTemplate(alg)
	if nonce, err := legacy.NVReadEx(ch, nonceIdx, legacy.HandleOwner, "", 0); err == nil {
		if alg == tpm.EKRSA {
			copy(tmpl.RSAParameters.ModulusRaw, nonce)
		} else {
			copy(tmpl.ECCParameters.Point.XRaw, nonce)
		}
	}
	hnd, pub, err := legacy.CreatePrimary(ch, legacy.HandleEndorsement, legacy.PCRSelection{}, "", "", tmpl)
	if err != nil {
		return fmt.Errorf("TPM2_CreatePrimary of the %s EK: %w", alg, err)
	}
	defer func() {
		if ferr := legacy.FlushContext(ch, hnd); ferr != nil {
			err = errors.Join(err, fmt.Errorf("TPM2_FlushContext of the %s EK: %w", alg, ferr))
		}
	}()

	// The ECC EK must end up at 0x81010002; fail before writing anything
	// if another key is there.
	persist := true
	if cur, _, _, err := legacy.ReadPublic(ch, persistent); err == nil {
		persist = false
		k, kerr := cur.Key()
		if kerr != nil || !samePublic(k, pub) {
			if alg == tpm.EKECC {
				return fmt.Errorf("persistent handle 0x%08x holds another key than the ECC EK of the default template: go-attestation would not find the EK for this certificate", uint32(persistent))
			}
			// go-attestation recreates the RSA EK at 0x81010003.
		}
	}

	der, err := issue(pub)
	if err != nil {
		return fmt.Errorf("issuing the %s EK certificate: %w", alg, err)
	}
	if err := checkEKCert(der, pub); err != nil {
		return err
	}

	nvPub := legacy.NVPublic{NVIndex: certIdx, NameAlg: legacy.AlgSHA256, Attributes: ekCertNVAttrs, DataSize: uint16(len(der))}
	ownerAuth := legacy.AuthCommand{Session: legacy.HandlePasswordSession, Attributes: legacy.AttrContinueSession}
	if err := legacy.NVDefineSpaceEx(ch, legacy.HandleOwner, "", nvPub, ownerAuth); err != nil {
		return fmt.Errorf("TPM2_NV_DefineSpace 0x%08x (%d bytes, owner auth): %w", uint32(certIdx), len(der), err)
	}
	defer func() {
		if err != nil {
			if uerr := legacy.NVUndefineSpace(ch, "", legacy.HandleOwner, certIdx); uerr != nil {
				err = errors.Join(err, fmt.Errorf("TPM2_NV_UndefineSpace 0x%08x: %w", uint32(certIdx), uerr))
			}
		}
	}()
	chunk := nvBufferMax(ch)
	for off := 0; off < len(der); off += chunk {
		end := min(off+chunk, len(der))
		if err := legacy.NVWrite(ch, legacy.HandleOwner, certIdx, "", der[off:end], uint16(off)); err != nil {
			return fmt.Errorf("TPM2_NV_Write 0x%08x bytes %d-%d: %w", uint32(certIdx), off, end, err)
		}
	}
	if persist {
		if err := legacy.EvictControl(ch, "", legacy.HandleOwner, hnd, persistent); err != nil {
			return fmt.Errorf("TPM2_EvictControl of the %s EK to 0x%08x: %w", alg, uint32(persistent), err)
		}
	}
	return nil
}

// checkEKCert checks der is exactly one DER certificate of at most
// MaxEKCert bytes, for pub.
func checkEKCert(der []byte, pub crypto.PublicKey) error {
	if len(der) > tpm.MaxEKCert {
		return fmt.Errorf("EK certificate of %d bytes: %w (bound %d)", len(der), tpm.ErrTooLarge, tpm.MaxEKCert)
	}
	trimmed, err := tpm.TrimDER(der)
	if err != nil {
		return fmt.Errorf("EK certificate: %w", err)
	}
	if len(trimmed) != len(der) {
		return fmt.Errorf("EK certificate: %w: %d bytes after the DER", tpm.ErrBadDER, len(der)-len(trimmed))
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("EK certificate: %w: %w", tpm.ErrBadDER, err)
	}
	if !samePublic(cert.PublicKey, pub) {
		return errors.New("EK certificate is for another key than the EK")
	}
	return nil
}

func samePublic(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// nvBufferMax returns TPM_PT_NV_BUFFER_MAX, the most bytes one
// TPM2_NV_Write takes, or 512 if the TPM does not say.
func nvBufferMax(ch io.ReadWriter) int {
	const fallback = 512
	vals, _, err := legacy.GetCapability(ch, legacy.CapabilityTPMProperties, 1, uint32(legacy.NVMaxBufferSize))
	if err != nil || len(vals) == 0 {
		return fallback
	}
	p, ok := vals[0].(legacy.TaggedProperty)
	if !ok || p.Tag != legacy.NVMaxBufferSize || p.Value < 64 || p.Value > 4096 {
		return fallback
	}
	return int(p.Value)
}
