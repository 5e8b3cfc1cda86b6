package tpm

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/tpmid/tpmid/pkg/common/tpmname"
)

// srkHandle is where the storage root key lives (TCG provisioning
// guidance; go-attestation uses the same handle and template, so AK blobs
// it wrote load under the SRK this package finds or makes).
const srkHandle tpm2.TPMHandle = 0x81000001

// storageParent is the key an AK is created and loaded under.
type storageParent struct {
	tpm2.AuthHandle
	// transient: tpmid's own SRK in the endorsement hierarchy, made by
	// TPM2_CreatePrimary for this one use (see srk); flush it once the AK
	// is loaded, which needs no parent after TPM2_Load.
	transient bool
}

// srk returns the parent for a new AK. AKs must live in the endorsement
// hierarchy: a TPM obfuscates resetCount and restartCount in the quotes of
// keys outside the endorsement and platform hierarchies (TPM 2.0 Part 1,
// 36.6; an offset derived from the signing key's qualified name), and the
// server's reboot counter checks compare them across AKs, so a new AK in
// the owner hierarchy looks like a rollback half the time, and as a cloned
// TPM (found by the integration test TestRestoredTPMSnapshotIsRefused).
//
//   - The SRK at 0x81000001 is used when its qualified name shows it is a
//     primary key of the endorsement hierarchy, as go-attestation and tpmid
//     make it: TPM2_ReadPublic, one command.
//   - An SRK there in another hierarchy is another program's (systemd's
//     systemd-tpm2-setup, tpm2-tools provisioning and Windows all put an
//     owner-hierarchy SRK there); it is left alone and a transient ECC
//     P-256 SRK is made in the endorsement hierarchy instead
//     (TPM2_CreatePrimary; ECC because primary keys are derived on every
//     use and RSA key generation takes seconds on some TPMs). Its Name is
//     the same on every use: the endorsement seed determines it.
//   - With nothing at 0x81000001, an SRK is made in the endorsement
//     hierarchy and persisted there (TPM2_CreatePrimary,
//     TPM2_EvictControl; empty endorsement and owner auth), in the same
//     hierarchy as go-attestation made it: from the TCG ECC P-256 SRK
//     template, or the RSA-2048 one if the TPM refuses ECC. ECC because
//     this is the first attestation of a new machine, and RSA-2048 key
//     generation took 45 ms of it on swtpm and takes seconds on some
//     hardware TPMs (docs/tpm-access.md). Any key at 0x81000001 serves
//     go-attestation as its SRK, so AKs it makes still load.
func (t *TPM) srk() (storageParent, error) {
	tp := t.tp()
	rsp, err := tpm2.ReadPublic{ObjectHandle: srkHandle}.Execute(tp)
	if err == nil {
		if inEndorsementHierarchy(rsp.Name, rsp.QualifiedName) {
			return persistentParent(rsp.Name), nil
		}
		return t.transientSRK()
	}
	cp, cerr := t.endorsementPrimary(tpm2.ECCSRKTemplate)
	if cerr != nil {
		var rerr error
		if cp, rerr = t.endorsementPrimary(tpm2.RSASRKTemplate); rerr != nil {
			return storageParent{}, fmt.Errorf("no SRK at 0x%08x (%v), and TPM2_CreatePrimary of one: ECC P-256: %v; RSA-2048: %w", uint32(srkHandle), err, cerr, rerr)
		}
	}
	_, eerr := tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
		PersistentHandle: srkHandle,
	}.Execute(tp)
	if err := errors.Join(eerr, t.flush(uint32(cp.ObjectHandle))); err != nil {
		return storageParent{}, fmt.Errorf("TPM2_EvictControl of the SRK to 0x%08x: %w", uint32(srkHandle), err)
	}
	return persistentParent(cp.Name), nil
}

// endorsementPrimary makes a primary key from tmpl in the endorsement
// hierarchy (TPM2_CreatePrimary, empty endorsement auth).
func (t *TPM) endorsementPrimary(tmpl tpm2.TPMTPublic) (*tpm2.CreatePrimaryResponse, error) {
	return tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t.tp())
}

// persistentParent is the SRK at 0x81000001 with Name name (password auth,
// which involves no Name).
func persistentParent(name tpm2.TPM2BName) storageParent {
	return storageParent{AuthHandle: tpm2.AuthHandle{Handle: srkHandle, Name: name, Auth: tpm2.PasswordAuth(nil)}}
}

// transientSRK makes tpmid's transient SRK: the TCG ECC P-256 SRK template
// in the endorsement hierarchy (TPM2_CreatePrimary). The caller flushes it.
func (t *TPM) transientSRK() (storageParent, error) {
	cp, err := t.endorsementPrimary(tpm2.ECCSRKTemplate)
	if err != nil {
		return storageParent{}, fmt.Errorf("0x%08x holds an SRK outside the endorsement hierarchy, and TPM2_CreatePrimary of tpmid's own ECC SRK there: %w", uint32(srkHandle), err)
	}
	return storageParent{AuthHandle: tpm2.AuthHandle{Handle: cp.ObjectHandle, Name: cp.Name, Auth: tpm2.PasswordAuth(nil)}, transient: true}, nil
}

// release flushes a transient parent; a persistent one stays.
func (p storageParent) release(t *TPM) error {
	if !p.transient {
		return nil
	}
	return t.flush(uint32(p.Handle))
}

// persistentSRK is the key at 0x81000001 as it is, for AK blobs written
// before tpmid recorded their parent (they were all made under it).
func (t *TPM) persistentSRK() (storageParent, error) {
	rsp, err := tpm2.ReadPublic{ObjectHandle: srkHandle}.Execute(t.tp())
	if err != nil {
		return storageParent{}, fmt.Errorf("TPM2_ReadPublic of the SRK at 0x%08x, which the AK blob was made under: %w", uint32(srkHandle), err)
	}
	return persistentParent(rsp.Name), nil
}

// inEndorsementHierarchy reports whether a key with this Name and
// qualified name is a primary key of the endorsement hierarchy. A primary
// key's qualified name is H(hierarchy handle || Name) in its name
// algorithm (TPM 2.0 Part 1, 16.6), so the TPM's own TPM2_ReadPublic
// answer says which hierarchy holds the key.
func inEndorsementHierarchy(name, qualified tpm2.TPM2BName) bool {
	want, err := tpmname.EndorsementPrimary(name.Buffer)
	return err == nil && bytes.Equal(want, qualified.Buffer)
}

// InEndorsementHierarchy reports whether the AK's creation data names a
// primary key of the endorsement hierarchy as its parent (parentName and
// parentQualifiedName of TPMS_CREATION_DATA). AKs made by tpmid before
// 2026-11-25 under another program's owner-hierarchy SRK are not: their
// quotes' counters are obfuscated and the server refuses them
// (ak_hierarchy), so the agent makes a new AK instead. It sends no TPM
// command and trusts the blob the agent kept; the server checks the same
// against the quote's qualifiedSigner, which the TPM signed.
func (k *AK) InEndorsementHierarchy() bool {
	cd, err := tpm2.Unmarshal[tpm2.TPMSCreationData](k.params.CreateData)
	if err != nil {
		return false
	}
	return inEndorsementHierarchy(cd.ParentName, cd.ParentQualifiedName)
}
