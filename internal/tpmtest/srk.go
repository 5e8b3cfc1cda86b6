package tpmtest

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/common/tpmname"
)

// OwnerSRKHandle is where ProvisionOwnerSRK puts the SRK.
const OwnerSRKHandle = 0x81000001

// ProvisionOwnerSRK persists an SRK in the owner (storage) hierarchy at
// 0x81000001, as systemd-tpm2-setup does on a modern Linux machine (the
// TCG ECC P-256 SRK template), or tpm2-tools provisioning and Windows do
// (the RSA-2048 one, rsa true): TPM2_CreatePrimary under TPM_RH_OWNER,
// TPM2_EvictControl, TPM2_FlushContext. It returns the key's Name. tpmid's
// agent must leave it alone and keep its AKs out of the owner hierarchy.
func ProvisionOwnerSRK(tp *tpm.TPM, rsa bool) (name []byte, err error) {
	tmpl := tpm2.ECCSRKTemplate
	if rsa {
		tmpl = tpm2.RSASRKTemplate
	}
	err = tp.WithChannel(func(ch io.ReadWriter) error {
		t := transport.FromReadWriter(ch)
		cp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			InPublic:      tpm2.New2B(tmpl),
		}.Execute(t)
		if err != nil {
			return fmt.Errorf("TPM2_CreatePrimary of the owner SRK: %w", err)
		}
		defer tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(t)
		if _, err := (tpm2.EvictControl{
			Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
			PersistentHandle: OwnerSRKHandle,
		}.Execute(t)); err != nil {
			return fmt.Errorf("TPM2_EvictControl of the owner SRK to 0x%08x: %w", OwnerSRKHandle, err)
		}
		name = cp.Name.Buffer
		return nil
	})
	return name, err
}

// PersistentName returns the Name of the key at a persistent handle
// (TPM2_ReadPublic).
func PersistentName(tp *tpm.TPM, handle uint32) (name []byte, err error) {
	err = tp.WithChannel(func(ch io.ReadWriter) error {
		rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(handle)}.Execute(transport.FromReadWriter(ch))
		if err != nil {
			return fmt.Errorf("TPM2_ReadPublic 0x%08x: %w", handle, err)
		}
		name = rsp.Name.Buffer
		return nil
	})
	return name, err
}

// LegacyOwnerAKBlob is the AK blob an earlier tpmid agent kept on a machine
// with an owner-hierarchy SRK at 0x81000001 (ProvisionOwnerSRK must have run):
// a P-256 restricted signing AK made by TPM2_Create under that SRK, with
// TPM2_CertifyCreation, in the data_dir blob format (go-attestation's
// serialisation plus ParentName). Its quotes' resetCount and restartCount
// are obfuscated.
//
// claimParent, when not nil, forges the blob's creation data to name
// claimParent (the Name of an endorsement-hierarchy primary key) as the
// parent, with the matching parentQualifiedName: root on the node hiding
// the AK's real hierarchy from the agent and the server. The TPM's
// creation attestation then no longer matches the creation data.
func LegacyOwnerAKBlob(tp *tpm.TPM, claimParent []byte) (blob []byte, err error) {
	tmpl, err := tpm.AKTemplate(tpm.AKP256)
	if err != nil {
		return nil, err
	}
	err = tp.WithChannel(func(ch io.ReadWriter) error {
		t := transport.FromReadWriter(ch)
		srk, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(OwnerSRKHandle)}.Execute(t)
		if err != nil {
			return fmt.Errorf("TPM2_ReadPublic of the owner SRK: %w", err)
		}
		parent := tpm2.AuthHandle{Handle: tpm2.TPMHandle(OwnerSRKHandle), Name: srk.Name, Auth: tpm2.PasswordAuth(nil)}
		cr, err := tpm2.Create{ParentHandle: parent, InPublic: tpm2.New2B(tmpl)}.Execute(t)
		if err != nil {
			return fmt.Errorf("TPM2_Create of the AK: %w", err)
		}
		lr, err := tpm2.Load{ParentHandle: parent, InPrivate: cr.OutPrivate, InPublic: cr.OutPublic}.Execute(t)
		if err != nil {
			return fmt.Errorf("TPM2_Load of the AK: %w", err)
		}
		defer tpm2.FlushContext{FlushHandle: lr.ObjectHandle}.Execute(t)
		ci, err := tpm2.CertifyCreation{
			SignHandle:     tpm2.AuthHandle{Handle: lr.ObjectHandle, Name: lr.Name, Auth: tpm2.PasswordAuth(nil)},
			ObjectHandle:   tpm2.NamedHandle{Handle: lr.ObjectHandle, Name: lr.Name},
			CreationHash:   cr.CreationHash,
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			CreationTicket: cr.CreationTicket,
		}.Execute(t)
		if err != nil {
			return fmt.Errorf("TPM2_CertifyCreation: %w", err)
		}
		createData := cr.CreationData.Bytes()
		if claimParent != nil {
			cd, err := cr.CreationData.Contents()
			if err != nil {
				return err
			}
			qn, err := tpmname.EndorsementPrimary(claimParent)
			if err != nil {
				return fmt.Errorf("claimed parent: %w", err)
			}
			cd.ParentName = tpm2.TPM2BName{Buffer: claimParent}
			cd.ParentQualifiedName = tpm2.TPM2BName{Buffer: qn}
			createData = tpm2.Marshal(cd)
		}
		blob, err = json.Marshal(map[string]any{
			"KeyEncoding": 2, "TPMVersion": 2,
			"Public": cr.OutPublic.Bytes(), "CreateData": createData,
			"CreateAttestation": ci.CertifyInfo.Bytes(), "CreateSignature": tpm2.Marshal(ci.Signature),
			"KeyBlob": cr.OutPrivate.Buffer, "ParentName": srk.Name.Buffer,
		})
		return err
	})
	return blob, err
}
