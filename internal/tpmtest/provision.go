// Package tpmtest holds TPM operations for tests and the demo only: EK
// certificate provisioning (as a manufacturer does) and PCR extend (to
// "boot" a software TPM). Shipped binaries (tpmid, the agent and server
// plugins) must not link it; cmd/deps_test.go checks they do not.
package tpmtest

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpmutil"

	"github.com/tpmid/tpmid/pkg/common/tpm"
)

// ErrEKCertExists: ProvisionEKCertificate found the EK certificate NV
// index already defined.
var ErrEKCertExists = errors.New("EK certificate NV index already defined")

// ekCertNVAttrs are the attributes of an EK certificate index we define:
// readable with the index's own (empty) auth, which is how tpmid and
// tpm2_getekcertificate read it, and with owner or platform auth;
// written with owner auth; no dictionary-attack lockout. A manufacturer's
// index is platform-created (TPMA_NV_PLATFORMCREATE) and write-locked;
// ours is owner-created and not locked, so the owner can undefine it.
const ekCertNVAttrs = legacy.AttrOwnerWrite | legacy.AttrOwnerRead | legacy.AttrAuthRead | legacy.AttrPPRead | legacy.AttrNoDA

// ProvisionEKCertificate gives tp an EK certificate in NV, as a
// manufacturer does. It is for provisioning test and software TPMs, and
// TPMs shipped without an EK certificate (the owner's own CA then issues
// it).
//
// It creates the EK of alg (any tpm.EKAlg but "": RSA 2048/3072/4096, ECC
// P-256/384/521; rsa2048 and p256 in the low range, the others in the high
// range) from its TCG template (tpm.EKTemplate) with TPM2_CreatePrimary
// under the endorsement hierarchy, calls issue with its public key, checks
// the returned DER is one certificate for that key and at most MaxEKCert
// bytes, and stores it at the template's TCG index (tpm.EKCertIndex, e.g.
// 0x01c00002 RSA-2048, 0x01c0000a P-256, 0x01c00016 P-384) with
// TPM2_NV_DefineSpace and TPM2_NV_Write (owner authorization, empty owner
// password; attributes ownerwrite|ownerread|authread|ppread|no_da, so it
// reads back with the index's own empty auth). It then persists the EK
// with TPM2_EvictControl at its handle (tpm.EKPersistentHandle, e.g.
// 0x81010001, 0x81010002, 0x81010016) if that is free. The transient EK is
// flushed (TPM2_FlushContext) on every path, and the NV index is undefined
// again (TPM2_NV_UndefineSpace) if a later step fails.
//
// If the NV index already exists it refuses with an error wrapping
// ErrEKCertExists and changes nothing (remove an index with tpm2_nvundefine
// first if you mean to replace it). If the persistent handle holds another
// key, it is refused too.
//
// Security: the certificate is only a claim. A server trusts it only after
// verifying its chain to a root it was configured with and that the TPM
// activated a credential for this very EK; writing a certificate here
// proves nothing by itself.
func ProvisionEKCertificate(tp *tpm.TPM, alg tpm.EKAlg, issue func(ekPub crypto.PublicKey) ([]byte, error)) error {
	tmpl, ok := tpm.EKTemplate(alg)
	if !ok {
		return fmt.Errorf("%w: provisioning an EK certificate needs one of %v, not %q", tpm.ErrBadAlgorithm, tpm.EKAlgs, alg)
	}
	if issue == nil {
		return errors.New("ProvisionEKCertificate: nil issue function")
	}
	certIdx, persistent := tpmutil.Handle(tpm.EKCertIndex(alg)), tpm2.TPMHandle(tpm.EKPersistentHandle(alg))
	return tp.WithChannel(func(ch io.ReadWriter) error {
		return provision(ch, alg, tmpl, certIdx, persistent, issue)
	})
}

func provision(ch io.ReadWriter, alg tpm.EKAlg, tmpl tpm2.TPMTPublic, certIdx tpmutil.Handle, persistent tpm2.TPMHandle, issue func(crypto.PublicKey) ([]byte, error)) (err error) {
	if _, err := legacy.NVReadPublic(ch, certIdx); err == nil {
		return fmt.Errorf("%w: NV index 0x%08x already holds the %s EK certificate", ErrEKCertExists, uint32(certIdx), alg)
	}
	tp := transport.FromReadWriter(ch)
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(tp)
	if err != nil {
		return fmt.Errorf("TPM2_CreatePrimary of the %s EK: %w", alg, err)
	}
	defer func() {
		if _, ferr := (tpm2.FlushContext{FlushHandle: cp.ObjectHandle}).Execute(tp); ferr != nil {
			err = errors.Join(err, fmt.Errorf("TPM2_FlushContext of the %s EK: %w", alg, ferr))
		}
	}()
	outPub, err := cp.OutPublic.Contents()
	if err != nil {
		return err
	}
	pub, err := tpm2.Pub(*outPub)
	if err != nil {
		return err
	}

	// Fail before writing anything if another key is at the handle.
	persist := true
	if cur, err := (tpm2.ReadPublic{ObjectHandle: persistent}).Execute(tp); err == nil {
		persist = false
		if !bytes.Equal(cur.Name.Buffer, cp.Name.Buffer) {
			return fmt.Errorf("persistent handle 0x%08x holds another key than the %s EK of the TCG template", uint32(persistent), alg)
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
		if _, err := (tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
			PersistentHandle: persistent,
		}).Execute(tp); err != nil {
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
