// Package tpmname computes TPM qualified names (TPM 2.0 Part 1, 16.6), for
// the agent (which hierarchy holds a key) and the server (which hierarchy
// holds the AK that signed a quote) alike.
package tpmname

import (
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Qualify returns the qualified name of an object with Name name whose
// parent has qualified name parentQN: alg || H_alg(parentQN || name), where
// alg is name's name algorithm (its first two bytes). The Name must be
// alg || a digest of alg's size.
func Qualify(parentQN, name []byte) ([]byte, error) {
	if len(name) < 2 {
		return nil, fmt.Errorf("Name of %d bytes has no algorithm", len(name))
	}
	h, err := tpm2.TPMIAlgHash(binary.BigEndian.Uint16(name)).Hash()
	if err != nil {
		return nil, err
	}
	if len(name) != 2+h.Size() {
		return nil, fmt.Errorf("Name of %d bytes for a %d-byte digest", len(name), h.Size())
	}
	d := h.New()
	d.Write(parentQN)
	d.Write(name)
	return d.Sum(name[:2:2]), nil
}

// EndorsementPrimary returns the qualified name of a primary key of the
// endorsement hierarchy with Name name: a hierarchy's qualified name is
// its handle, TPM_RH_ENDORSEMENT.
func EndorsementPrimary(name []byte) ([]byte, error) {
	return Qualify(binary.BigEndian.AppendUint32(nil, uint32(tpm2.TPMRHEndorsement)), name)
}
