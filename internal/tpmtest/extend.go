package tpmtest

import (
	"fmt"
	"io"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
)

// Extend extends one PCR of tp in each given bank with TPM2_PCR_Extend
// (one command for all banks). It exists so tests and the demo can "boot"
// a software TPM; tpmid never extends PCRs on a real machine.
//
// Security: any process with TPM access can extend PCRs 0-15 on most
// TPMs after boot; PCR values prove nothing without the event log and
// quote.
func Extend(tp *tpm.TPM, pcr int, digests map[pcrs.Alg][]byte) error {
	if pcr < 0 || pcr > pcrs.MaxIndex {
		return fmt.Errorf("%w: PCR %d not in 0..%d", tpm.ErrBadPCR, pcr, pcrs.MaxIndex)
	}
	if len(digests) == 0 {
		return fmt.Errorf("%w: no digests to extend PCR %d with", tpm.ErrBadPCR, pcr)
	}
	var vals tpm2.TPMLDigestValues
	banks := make([]pcrs.Alg, 0, len(digests))
	for a := range digests {
		banks = append(banks, a)
	}
	slices.Sort(banks)
	for _, a := range banks {
		d := digests[a]
		if !a.Known() {
			return fmt.Errorf("%w: PCR bank %s", tpm.ErrBadAlgorithm, a)
		}
		if len(d) != a.Size() {
			return fmt.Errorf("extend PCR %d bank %s: %d-byte digest, want %d", pcr, a, len(d), a.Size())
		}
		vals.Digests = append(vals.Digests, tpm2.TPMTHA{HashAlg: tpm2.TPMIAlgHash(a), Digest: d})
	}
	return tp.WithChannel(func(ch io.ReadWriter) error {
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
			Digests:   vals,
		}.Execute(transport.FromReadWriter(ch))
		if err != nil {
			return fmt.Errorf("TPM2_PCR_Extend PCR %d banks %v: %w", pcr, banks, err)
		}
		return nil
	})
}
