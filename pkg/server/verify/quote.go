package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/google/go-tpm/tpm2"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// Size bounds for quotes. A TPMS_ATTEST for a quote is at most about 300
// bytes (64-byte qualified name, 64-byte extraData, a few selections, a
// 64-byte digest); a TPMT_SIGNATURE is at most 6 + 1024 bytes (RSA-8192) or
// 6 + 2*(2+66) (ECDSA P-521).
const (
	MaxAttestSize    = 2048
	MaxSignatureSize = 1100
)

const (
	tpmGeneratedValue = 0xff544347
	tpmSTAttestQuote  = 0x8018
)

// Quote is the output of TPM2_Quote.
type Quote struct {
	Attest    []byte // TPMS_ATTEST (see UnwrapAttest for TPM2B_ATTEST)
	Signature []byte // TPMT_SIGNATURE
}

// QuoteFacts is what a verified quote says.
type QuoteFacts struct {
	Bank            pcrs.Alg        // the one PCR bank selected; 0 when a VerifyQuoteMulti quote selects several
	PCRs            []int           // selected indices of Bank, ascending; nil when several banks are selected
	Selection       []BankSelection // every selected bank, in the quote's TPML_PCR_SELECTION order
	SignatureHash   pcrs.Alg        // hash of the signature scheme (also the pcrDigest hash)
	ResetCount      uint32
	RestartCount    uint32
	Clock           uint64
	Safe            bool
	FirmwareVersion uint64
	QualifiedSigner []byte   // TPM2B_NAME buffer: the AK's qualified name
	Weak            []string // e.g. "signature hash sha1", "pcr bank sha1"
}

// BankSelection is one TPMS_PCR_SELECTION of a quote.
type BankSelection struct {
	Bank pcrs.Alg
	PCRs []int // ascending
}

// UnwrapAttest accepts a TPMS_ATTEST or a TPM2B_ATTEST (size-prefixed, as
// some tools write it) and returns the TPMS_ATTEST. Input that is neither is
// returned unchanged, for VerifyQuote to reject with its reason.
func UnwrapAttest(b []byte) []byte {
	if len(b) >= 6 && binary.BigEndian.Uint32(b) != tpmGeneratedValue &&
		int(binary.BigEndian.Uint16(b)) == len(b)-2 && binary.BigEndian.Uint32(b[2:]) == tpmGeneratedValue {
		return b[2:]
	}
	return b
}

// VerifyQuote checks a TPM2_Quote against the AK that signed it, the
// extraData the verifier expects (its nonce or session binding) and the PCR
// values the quote claims to cover. The checks, in order, each with its reason:
//
//   - sizes (ReasonQuoteMalformed);
//   - magic == TPM_GENERATED_VALUE (ReasonQuoteNotGenerated): a restricted
//     key signs nothing that starts with it unless the TPM made it;
//   - type == TPM_ST_ATTEST_QUOTE (ReasonQuoteNotQuote);
//   - TPMS_ATTEST and TPMT_SIGNATURE decode canonically (ReasonQuoteMalformed);
//   - the signature (RSASSA-PKCS1-v1_5, RSASSA-PSS or ECDSA with SHA-1/256/384/512)
//     verifies with ak over the whole TPMS_ATTEST, hashed with the
//     signature's hash (ReasonQuoteSignature);
//   - extraData equals extraData, in constant time (ReasonQuoteExtraData);
//   - the selection names exactly one bank and at least one PCR in 0..23
//     (ReasonQuotePCRSelection);
//   - every selected PCR has a value of the bank's size in values
//     (ReasonQuotePCRValues);
//   - pcrDigest == H(values of the selected PCRs in index order), where H is
//     the signing scheme's hash (TPM 2.0 Part 3, 18.4 TPM2_Quote: "digest of
//     the selected PCR using the hash of the signing scheme"), not the bank's
//     hash (ReasonQuoteDigest).
//
// What the caller still decides: whether the selection is the one it asked
// for (CheckSelection), whether weak algorithms are acceptable (Weak), and
// whether ResetCount/RestartCount/Clock moved forward since the last quote.
// QualifiedSigner is reported, not checked: it is H(parent's qualified name
// || AK name) and the parent is not known here.
func VerifyQuote(ak crypto.PublicKey, q Quote, extraData []byte, values pcrs.Values) (*QuoteFacts, error) {
	return verifyQuote(ak, q, extraData, values, false)
}

// VerifyQuoteMulti is VerifyQuote for a quote that may select several banks
// (tpm2_quote -l sha1:0,1+sha256:0,1, Keylime and other attesters), for
// tools such as `tpmid verify quote`; the plugin protocol keeps one quote
// per bank and uses VerifyQuote. The selection must name at least one bank;
// each bank at most once, known, with at least one PCR in 0..23
// (ReasonQuotePCRSelection). pcrDigest must be the signing scheme's hash
// over the selected PCR values bank by bank in the TPML_PCR_SELECTION's
// order, each bank's PCRs in ascending index order (TPM 2.0 Part 3,
// TPM2_Quote; Part 1, PCR digest computation); every selected PCR needs a
// value of its bank's size (ReasonQuotePCRValues). Facts.Selection lists
// the banks in quote order; Bank and PCRs are set only when one bank is
// selected, so CheckSelection refuses a multi-bank quote.
func VerifyQuoteMulti(ak crypto.PublicKey, q Quote, extraData []byte, values pcrs.Values) (*QuoteFacts, error) {
	return verifyQuote(ak, q, extraData, values, true)
}

func verifyQuote(ak crypto.PublicKey, q Quote, extraData []byte, values pcrs.Values, multi bool) (*QuoteFacts, error) {
	if ak == nil {
		return nil, failf(ReasonInvalidArgument, "no AK public key")
	}
	a := q.Attest
	if len(a) > MaxAttestSize {
		return nil, failf(ReasonQuoteMalformed, "TPMS_ATTEST is %d bytes, limit %d", len(a), MaxAttestSize)
	}
	if len(q.Signature) > MaxSignatureSize {
		return nil, failf(ReasonQuoteMalformed, "TPMT_SIGNATURE is %d bytes, limit %d", len(q.Signature), MaxSignatureSize)
	}
	if len(a) < 6 {
		return nil, failf(ReasonQuoteMalformed, "TPMS_ATTEST is %d bytes, too short", len(a))
	}
	if m := binary.BigEndian.Uint32(a); m != tpmGeneratedValue {
		return nil, failf(ReasonQuoteNotGenerated, "magic 0x%08x, want TPM_GENERATED_VALUE 0x%08x", m, tpmGeneratedValue)
	}
	if t := binary.BigEndian.Uint16(a[4:]); t != tpmSTAttestQuote {
		return nil, failf(ReasonQuoteNotQuote, "attestation type 0x%04x, want TPM_ST_ATTEST_QUOTE 0x%04x", t, tpmSTAttestQuote)
	}
	att, err := parseQuoteAttest(a)
	if err != nil {
		return nil, failf(ReasonQuoteMalformed, "TPMS_ATTEST: %v", err)
	}

	sigHash, err := verifySignature(ak, a, q.Signature)
	if err != nil {
		return nil, err
	}

	if subtle.ConstantTimeCompare(att.ExtraData, extraData) != 1 {
		// Both are public (a hash of the nonces both sides sent in clear);
		// the values tell a stale or replayed quote from a wrong nonce.
		return nil, failf(ReasonQuoteExtraData, "extraData %x (%d bytes) differs from the expected %x (%d bytes): the quote was not made for this challenge's nonces",
			att.ExtraData, len(att.ExtraData), extraData, len(extraData))
	}

	sel, err := selection(att.PCRSelect, multi)
	if err != nil {
		return nil, err
	}

	h := sigHash.New()
	for _, bs := range sel {
		for _, i := range bs.PCRs {
			v, ok := values.Get(bs.Bank, i)
			if !ok {
				return nil, failf(ReasonQuotePCRValues, "no value for quoted PCR %s:%d", bs.Bank, i)
			}
			if len(v) != bs.Bank.Size() {
				return nil, failf(ReasonQuotePCRValues, "PCR %s:%d value is %d bytes, want %d", bs.Bank, i, len(v), bs.Bank.Size())
			}
			h.Write(v)
		}
	}
	sigAlg, _ := pcrs.FromCryptoHash(sigHash)
	if d := att.PCRDigest; len(d) != sigHash.Size() || subtle.ConstantTimeCompare(h.Sum(nil), d) != 1 {
		return nil, failf(ReasonQuoteDigest, "pcrDigest %x is not %s over PCR values %s", d, sigAlg, selectionString(sel))
	}

	f := &QuoteFacts{
		Selection:       sel,
		SignatureHash:   sigAlg,
		ResetCount:      att.ResetCount,
		RestartCount:    att.RestartCount,
		Clock:           att.Clock,
		Safe:            att.Safe,
		FirmwareVersion: att.FirmwareVersion,
		QualifiedSigner: bytes.Clone(att.QualifiedSigner),
	}
	if sigAlg.Weak() {
		f.Weak = append(f.Weak, "signature hash "+sigAlg.String())
	}
	if len(sel) == 1 {
		f.Bank, f.PCRs = sel[0].Bank, slices.Clone(sel[0].PCRs)
	}
	for _, bs := range sel {
		if bs.Bank.Weak() {
			f.Weak = append(f.Weak, "pcr bank "+bs.Bank.String())
		}
	}
	if k, ok := ak.(*rsa.PublicKey); ok && k.N.BitLen() < 2048 {
		f.Weak = append(f.Weak, fmt.Sprintf("rsa key %d bits", k.N.BitLen()))
	}
	return f, nil
}

// selection decodes the quote's TPML_PCR_SELECTION, in its order. Without
// multi it accepts exactly one TPMS_PCR_SELECTION: one bank per quote is
// tpmid's protocol (one quote per requested bank), which keeps the facts one
// Bank and one PCR list. With multi it accepts one or more. Either way every
// entry names a known bank not named before and at least one PCR, all in
// 0..pcrs.MaxIndex: an entry with no bits set adds nothing to the digest and
// is something an honest agent never sends, and a bank named twice would be
// hashed twice and make the facts ambiguous.
func selection(l tpm2.TPMLPCRSelection, multi bool) ([]BankSelection, error) {
	n := len(l.PCRSelections)
	switch {
	case n == 0:
		return nil, failf(ReasonQuotePCRSelection, "quote selects no bank")
	case n != 1 && !multi:
		return nil, failf(ReasonQuotePCRSelection, "quote selects %d banks, want exactly 1", n)
	}
	out := make([]BankSelection, 0, n)
	for _, s := range l.PCRSelections {
		bank := pcrs.Alg(s.Hash)
		if !bank.Known() {
			return nil, failf(ReasonQuotePCRSelection, "unknown PCR bank %s", bank)
		}
		for _, prev := range out {
			if prev.Bank == bank {
				return nil, failf(ReasonQuotePCRSelection, "quote selects bank %s twice", bank)
			}
		}
		var idx []int
		for byteI, b := range s.PCRSelect {
			for bit := 0; bit < 8; bit++ {
				if b&(1<<bit) == 0 {
					continue
				}
				i := byteI*8 + bit
				if i > pcrs.MaxIndex {
					return nil, failf(ReasonQuotePCRSelection, "quote selects PCR %d, beyond %d", i, pcrs.MaxIndex)
				}
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			return nil, failf(ReasonQuotePCRSelection, "quote selects no PCR of bank %s", bank)
		}
		out = append(out, BankSelection{Bank: bank, PCRs: idx})
	}
	return out, nil
}

// selectionString is "sha256:[0 1 2]" or "sha1:[0] sha256:[0 1]".
func selectionString(sel []BankSelection) string {
	parts := make([]string, len(sel))
	for i, bs := range sel {
		parts[i] = fmt.Sprintf("%s:%v", bs.Bank, bs.PCRs)
	}
	return strings.Join(parts, " ")
}

// CheckSelection rejects facts whose quote covers another bank or other PCRs
// than want (order and duplicates in want do not matter).
func CheckSelection(f *QuoteFacts, bank pcrs.Alg, want []int) error {
	if f == nil {
		return failf(ReasonInvalidArgument, "no quote facts")
	}
	if f.Bank != bank {
		return failf(ReasonQuotePCRSelection, "quote covers bank %s, want %s", f.Bank, bank)
	}
	w := slices.Clone(want)
	slices.Sort(w)
	w = slices.Compact(w)
	if !slices.Equal(f.PCRs, w) {
		return failf(ReasonQuotePCRSelection, "quote covers PCRs %s:%v, want %v", f.Bank, f.PCRs, w)
	}
	return nil
}

var sigHashes = map[tpm2.TPMIAlgHash]crypto.Hash{
	tpm2.TPMAlgSHA1:   crypto.SHA1,
	tpm2.TPMAlgSHA256: crypto.SHA256,
	tpm2.TPMAlgSHA384: crypto.SHA384,
	tpm2.TPMAlgSHA512: crypto.SHA512,
}

// verifySignature checks a TPMT_SIGNATURE over msg and returns its hash.
func verifySignature(ak crypto.PublicKey, msg, sigBytes []byte) (crypto.Hash, error) {
	if len(sigBytes) == 0 {
		return 0, failf(ReasonQuoteSignature, "empty signature")
	}
	sig, err := parseSignature(sigBytes)
	if errors.Is(err, errSlowPath) {
		// Not RSASSA, RSAPSS or ECDSA: go-tpm says whether it is a
		// TPMT_SIGNATURE at all, and it is refused either way.
		other, err := unmarshalCanonical[tpm2.TPMTSignature](sigBytes)
		if err != nil {
			return 0, failf(ReasonQuoteSignature, "TPMT_SIGNATURE: %v", err)
		}
		return 0, failf(ReasonQuoteSignature, "unsupported signature algorithm 0x%04x", uint16(other.SigAlg))
	}
	if err != nil {
		return 0, failf(ReasonQuoteSignature, "TPMT_SIGNATURE: %v", err)
	}
	h, ok := sigHashes[sig.Hash]
	if !ok {
		return 0, failf(ReasonQuoteSignature, "unsupported signature hash 0x%04x", uint16(sig.Hash))
	}
	var digest [64]byte
	d := h.New()
	d.Write(msg)
	sum := d.Sum(digest[:0])
	switch sig.Alg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		pub, ok := ak.(*rsa.PublicKey)
		if !ok {
			return 0, failf(ReasonQuoteSignature, "RSA signature but the AK is %T", ak)
		}
		if sig.Alg == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(pub, h, sum, sig.RSA)
		} else {
			// TPMs use a salt as long as the hash (TPM 2.0 rev 1.38+) or
			// the maximum (older ones): accept either.
			err = rsa.VerifyPSS(pub, h, sum, sig.RSA, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		}
		if err != nil {
			return 0, failf(ReasonQuoteSignature, "%s signature does not verify with the AK", sigName(sig.Alg))
		}
		return h, nil
	default: // ECDSA
		pub, ok := ak.(*ecdsa.PublicKey)
		if !ok {
			return 0, failf(ReasonQuoteSignature, "ECDSA signature but the AK is %T", ak)
		}
		r := new(big.Int).SetBytes(sig.R)
		s := new(big.Int).SetBytes(sig.S)
		if !ecdsa.Verify(pub, sum, r, s) {
			return 0, failf(ReasonQuoteSignature, "ECDSA signature does not verify with the AK")
		}
		return h, nil
	}
}

func sigName(a tpm2.TPMIAlgSigScheme) string {
	switch a {
	case tpm2.TPMAlgRSASSA:
		return "RSASSA-PKCS1-v1_5"
	case tpm2.TPMAlgRSAPSS:
		return "RSASSA-PSS"
	case tpm2.TPMAlgECDSA:
		return "ECDSA"
	}
	return fmt.Sprintf("alg 0x%04x", uint16(a))
}
