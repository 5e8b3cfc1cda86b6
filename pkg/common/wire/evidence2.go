package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// Protocol version 2 evidence is a binary envelope, so that the event log
// (tens of KB) and the quotes travel as raw bytes instead of base64 inside
// JSON, which the server had to scan and decode twice (docs/protocol.md):
//
//	magic       4 bytes  0x89 'T' 'E' 'V' (never the start of JSON)
//	version     1 byte   2
//	headerLen   4 bytes  big endian, at most maxEvidenceHeader
//	header      headerLen bytes:
//	  quotes    1 byte count (1..8), then per quote:
//	            alg u16 (TPM_ALG_ID of the bank), attestLen u16, attest
//	            (TPMS_ATTEST), sigLen u16, signature (TPMT_SIGNATURE)
//	  banks     1 byte count (0..maxBanks), then per bank in strictly
//	            ascending alg order: alg u16, mask u32 (bit i: PCR i,
//	            bits 24..31 clear, not 0), then one value of the bank's
//	            size per set bit, in ascending index order
//	  proof     1 byte length (0 or 32), then the activation proof
//	logLen      4 bytes  big endian
//	log         logLen bytes, the raw event log; nothing follows
//
// Every length is checked against what is left and against its field's
// bound before it is used; the decoded fields alias the input (no copy), so
// a decode allocates only the Evidence, its quotes and the PCR maps.
var evidenceMagic = [4]byte{0x89, 'T', 'E', 'V'}

const (
	// maxBanks bounds the PCR banks of one evidence (pcrs knows fewer).
	maxBanks = 8
	// maxEvidenceHeader bounds the header: eight quotes of the largest
	// size, every PCR of maxBanks SHA-512 banks, the proof.
	maxEvidenceHeader = 1 + maxQuotes*(6+maxQuoteAttest+maxQuoteSignature) +
		1 + maxBanks*(6+maxSelectionPCRCount*64) + 1 + sha256.Size
	envelopeFixed = len(evidenceMagic) + 1 + 4 + 4
)

// IsBinaryEvidence reports whether b starts like a version 2 envelope.
func IsBinaryEvidence(b []byte) bool {
	return len(b) >= len(evidenceMagic) && [4]byte(b[:4]) == evidenceMagic
}

// encodeEvidenceBinary writes e as a version e.Version envelope. It refuses
// what the decoder would refuse for its shape (unknown banks, PCR indices
// or value sizes), so an agent never sends evidence it could know is bad.
func encodeEvidenceBinary(e *Evidence) ([]byte, error) {
	if e.Version < 0 || e.Version > 255 {
		return nil, fmt.Errorf("evidence version %d does not fit the envelope", e.Version)
	}
	if len(e.Quotes) > 255 || len(e.ActivationProof) > 255 || len(e.EventLog) > 1<<31 {
		return nil, fmt.Errorf("evidence fields too large for the envelope")
	}
	type bank struct {
		alg  pcrs.Alg
		vals map[int][]byte
	}
	banks := make([]bank, 0, len(e.PCRs))
	for name, vals := range e.PCRs {
		a, err := pcrs.ParseAlg(name)
		if err != nil {
			return nil, fmt.Errorf("evidence PCR bank: %w", err)
		}
		banks = append(banks, bank{a, vals})
	}
	slices.SortFunc(banks, func(x, y bank) int { return int(x.alg) - int(y.alg) })
	if len(banks) > 255 {
		return nil, fmt.Errorf("%d PCR banks", len(banks))
	}
	n := envelopeFixed + 3 + len(e.ActivationProof) + len(e.EventLog)
	for _, q := range e.Quotes {
		n += 6 + len(q.Attest) + len(q.Signature)
	}
	for _, bk := range banks {
		n += 6 + len(bk.vals)*bk.alg.Size()
	}
	out := make([]byte, 0, n)
	out = append(out, evidenceMagic[:]...)
	out = append(out, byte(e.Version))
	out = binary.BigEndian.AppendUint32(out, 0) // header length, set below
	start := len(out)
	out = append(out, byte(len(e.Quotes)))
	for _, q := range e.Quotes {
		a, err := pcrs.ParseAlg(q.Bank)
		if err != nil {
			return nil, fmt.Errorf("quote bank: %w", err)
		}
		if len(q.Attest) > 0xffff || len(q.Signature) > 0xffff {
			return nil, fmt.Errorf("quote over %s too large for the envelope", q.Bank)
		}
		out = binary.BigEndian.AppendUint16(out, uint16(a))
		out = binary.BigEndian.AppendUint16(out, uint16(len(q.Attest)))
		out = append(out, q.Attest...)
		out = binary.BigEndian.AppendUint16(out, uint16(len(q.Signature)))
		out = append(out, q.Signature...)
	}
	out = append(out, byte(len(banks)))
	for _, bk := range banks {
		var mask uint32
		for i, v := range bk.vals {
			if i < 0 || i > pcrs.MaxIndex {
				return nil, fmt.Errorf("PCR %s:%d out of range", bk.alg, i)
			}
			if len(v) != bk.alg.Size() {
				return nil, fmt.Errorf("PCR %s:%d is %d bytes, want %d", bk.alg, i, len(v), bk.alg.Size())
			}
			mask |= 1 << i
		}
		out = binary.BigEndian.AppendUint16(out, uint16(bk.alg))
		out = binary.BigEndian.AppendUint32(out, mask)
		for i := 0; i <= pcrs.MaxIndex; i++ {
			if mask&(1<<i) != 0 {
				out = append(out, bk.vals[i]...)
			}
		}
	}
	out = append(out, byte(len(e.ActivationProof)))
	out = append(out, e.ActivationProof...)
	binary.BigEndian.PutUint32(out[start-4:], uint32(len(out)-start))
	out = binary.BigEndian.AppendUint32(out, uint32(len(e.EventLog)))
	return append(out, e.EventLog...), nil
}

// reader walks a bounded buffer; the first short read sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = malformed("evidence %s: %d bytes needed, %d left", what, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(what string) int {
	if v := r.take(1, what); v != nil {
		return int(v[0])
	}
	return 0
}

func (r *reader) u16(what string) int {
	if v := r.take(2, what); v != nil {
		return int(binary.BigEndian.Uint16(v))
	}
	return 0
}

func (r *reader) u32(what string) uint32 {
	if v := r.take(4, what); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

// decodeEvidenceBinary parses a version 2 envelope (the caller checked the
// overall size bound). The shape is checked here; the field bounds common
// to both encodings are checked by checkEvidence.
func decodeEvidenceBinary(b []byte) (*Evidence, error) {
	r := &reader{b: b}
	r.take(len(evidenceMagic), "magic")
	e := &Evidence{Version: r.u8("version")}
	if r.err != nil {
		return nil, r.err
	}
	if e.Version != Version2 {
		return nil, fmt.Errorf("binary evidence has %w %d (the envelope is version %d)", ErrVersion, e.Version, Version2)
	}
	hlen := r.u32("header length")
	if r.err == nil && hlen > maxEvidenceHeader {
		return nil, malformed("evidence header is %d bytes, limit %d", hlen, maxEvidenceHeader)
	}
	h := &reader{b: r.take(int(hlen), "header")}
	if r.err != nil {
		return nil, r.err
	}

	nq := h.u8("quote count")
	if h.err == nil && (nq == 0 || nq > maxQuotes) {
		return nil, malformed("%d quotes, want 1..%d", nq, maxQuotes)
	}
	e.Quotes = make([]Quote, 0, nq)
	for i := 0; i < nq && h.err == nil; i++ {
		a := pcrs.Alg(h.u16("quote bank"))
		if h.err == nil && !a.Known() {
			return nil, malformed("quote %d: unknown PCR bank 0x%04x", i, uint16(a))
		}
		att := h.take(h.u16("attest length"), "attest")
		sig := h.take(h.u16("signature length"), "signature")
		e.Quotes = append(e.Quotes, Quote{Bank: a.String(), Attest: att, Signature: sig})
	}

	nb := h.u8("bank count")
	if h.err == nil && nb > maxBanks {
		return nil, malformed("%d PCR banks, limit %d", nb, maxBanks)
	}
	e.PCRs = make(map[string]map[int][]byte, nb)
	prev := -1
	for i := 0; i < nb && h.err == nil; i++ {
		a := pcrs.Alg(h.u16("PCR bank"))
		mask := h.u32("PCR mask")
		if h.err != nil {
			break
		}
		switch {
		case !a.Known():
			return nil, malformed("PCR values: unknown PCR bank 0x%04x", uint16(a))
		case int(a) <= prev:
			return nil, malformed("PCR values: bank %s out of order or repeated", a)
		case mask == 0 || mask>>(pcrs.MaxIndex+1) != 0:
			return nil, malformed("PCR values: bank %s mask 0x%08x selects no PCR or one beyond %d", a, mask, pcrs.MaxIndex)
		}
		prev = int(a)
		vals := h.take(bits.OnesCount32(mask)*a.Size(), "PCR values")
		bank := make(map[int][]byte, bits.OnesCount32(mask))
		for idx := 0; idx <= pcrs.MaxIndex && vals != nil; idx++ {
			if mask&(1<<idx) != 0 {
				bank[idx], vals = vals[:a.Size():a.Size()], vals[a.Size():]
			}
		}
		e.PCRs[a.String()] = bank
	}

	if n := h.u8("proof length"); n != 0 {
		e.ActivationProof = h.take(n, "activation proof")
	}
	if h.err != nil {
		return nil, h.err
	}
	if len(h.b) != 0 {
		return nil, malformed("%d bytes after the evidence header's fields", len(h.b))
	}
	if n := r.u32("log length"); r.err == nil && n != 0 {
		e.EventLog = r.take(int(n), "event log")
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, malformed("trailing data: %d bytes after the event log", len(r.b))
	}
	return e, nil
}
