package tpmtest

import (
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/tpmid/tpmid/pkg/common/tpm"
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
