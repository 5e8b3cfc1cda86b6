package verify

import (
	"crypto/subtle"

	"github.com/tpmid/tpmid/pkg/common/tpmname"
)

// ReasonAKHierarchy: the AK that signed the quotes is not a child of a
// primary key of the endorsement hierarchy, so its quotes' resetCount and
// restartCount are obfuscated and say nothing about reboots or rollback.
const ReasonAKHierarchy Reason = "ak_hierarchy"

// maxCreationData bounds the TPMS_CREATION_DATA parsed; real ones are
// 100-300 bytes.
const maxCreationData = 4096

// EndorsementQualifiedName returns the qualified name an AK with Name
// akName has when it is a child of a primary key of the endorsement
// hierarchy whose Name is the parentName in createData (the AK's
// TPMS_CREATION_DATA from TPM2_Create): QN(parent) = H_p(TPM_RH_ENDORSEMENT
// || parentName), QN(AK) = H_ak(QN(parent) || akName), each prefixed with
// its name algorithm (TPM 2.0 Part 1, 16.6). Compare it with a quote's
// qualifiedSigner.
//
// Why it matters: a TPM obfuscates resetCount and restartCount in every
// attestation signed by a key outside the endorsement and platform
// hierarchies (TPM 2.0 Part 1, 36.6; an offset derived from the key's
// qualified name). The agent chooses the AK's parent, so root on the node
// could otherwise pick an owner-hierarchy AK whose offset lifts a
// rolled-back TPM's counters past the server's last-seen ones.
//
// Security: createData comes from the agent unauthenticated; only the
// comparison with the qualifiedSigner inside a quote the AK signed binds
// it (a restricted AK signs only TPM-made attestations, so that qualified
// name is the TPM's). Another parentName than the real parent's gives a
// different qualified name unless SHA-2 has a second preimage.
func EndorsementQualifiedName(akName, createData []byte) ([]byte, error) {
	if len(createData) == 0 || len(createData) > maxCreationData {
		return nil, failf(ReasonAKHierarchy, "AK creation data of %d bytes (want 1..%d)", len(createData), maxCreationData)
	}
	// In place, without go-tpm's reflection (140 µs and 200 allocations
	// per attestation); FuzzFastParseAgreesWithGoTPM holds it to go-tpm.
	cd, err := parseCreationData(createData)
	if err != nil {
		return nil, failf(ReasonAKHierarchy, "AK creation data: %v", err)
	}
	parentQN, err := tpmname.EndorsementPrimary(cd.ParentName)
	if err != nil {
		return nil, failf(ReasonAKHierarchy, "AK creation data: parent Name: %v", err)
	}
	qn, err := tpmname.Qualify(parentQN, akName)
	if err != nil {
		return nil, failf(ReasonAKHierarchy, "AK Name: %v", err)
	}
	return qn, nil
}

// CheckAKHierarchy compares a quote's qualifiedSigner with want from
// EndorsementQualifiedName.
func CheckAKHierarchy(want, qualifiedSigner []byte) error {
	if subtle.ConstantTimeCompare(want, qualifiedSigner) != 1 {
		return failf(ReasonAKHierarchy, "the quote's signer is not a child of the endorsement-hierarchy primary key its creation data names: its resetCount and restartCount are obfuscated (an AK under an owner-hierarchy SRK?)")
	}
	return nil
}
