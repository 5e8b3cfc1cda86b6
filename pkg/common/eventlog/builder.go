package eventlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf16"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// ErrBuilder: a Builder was used wrongly (bad bank, PCR or digest).
var ErrBuilder = errors.New("event log builder")

// Builder writes a crypto-agile event log (PFP 10.2.2) for tests and demos:
// a Spec ID event naming the chosen banks, then one TCG_PCR_EVENT2 per call.
// It is the measuring side of a "boot": extend a TPM with the digests that
// Extend returns, and the log will replay to that TPM's PCRs.
//
// Misuse is recorded and returned by Err (the first error only); the
// offending record is not written.
type Builder struct {
	banks []pcrs.Alg
	buf   bytes.Buffer
	err   error
}

// NewBuilder starts a log for the given banks (in that order in every record).
func NewBuilder(banks ...pcrs.Alg) (*Builder, error) {
	if len(banks) == 0 {
		return nil, fmt.Errorf("%w: no banks", ErrBuilder)
	}
	for i, a := range banks {
		if _, err := a.New(); err != nil {
			return nil, fmt.Errorf("%w: bank %s: %v", ErrBuilder, a, err)
		}
		if slices.Contains(banks[:i], a) {
			return nil, fmt.Errorf("%w: bank %s twice", ErrBuilder, a)
		}
	}
	b := &Builder{banks: slices.Clone(banks)}
	// TCG_EfiSpecIDEvent: PC Client class 0, spec 2.0 errata 0, UINTN 64-bit.
	var spec bytes.Buffer
	spec.WriteString(specIDSignature03)
	le32(&spec, 0)
	spec.Write([]byte{0, 2, 0, 2})
	le32(&spec, uint32(len(banks)))
	for _, a := range banks {
		le16(&spec, uint16(a))
		le16(&spec, uint16(a.Size()))
	}
	spec.WriteByte(0) // no vendor info
	le32(&b.buf, 0)
	le32(&b.buf, uint32(EvNoAction))
	b.buf.Write(make([]byte, 20))
	le32(&b.buf, uint32(spec.Len()))
	b.buf.Write(spec.Bytes())
	return b, nil
}

// StartupLocality records the EV_NO_ACTION StartupLocality event
// (PFP 10.4.5.3); call it before any PCR0 measurement.
func (b *Builder) StartupLocality(loc uint8) {
	b.NoAction(0, append([]byte(startupLocalitySig), loc))
}

// NoAction writes an EV_NO_ACTION record with zero digests; nothing is
// extended.
func (b *Builder) NoAction(pcr uint32, data []byte) {
	zero := map[pcrs.Alg][]byte{}
	for _, a := range b.banks {
		zero[a] = make([]byte, a.Size())
	}
	b.record(pcr, EvNoAction, zero, data)
}

// Extend measures data (digest = H(data) in every bank), writes the record,
// and returns the per-bank digests to extend into the TPM's PCR pcr. For
// EV_NO_ACTION it writes zero digests and returns nil: nothing is extended.
func (b *Builder) Extend(pcr uint32, typ EventType, data []byte) map[pcrs.Alg][]byte {
	if typ == EvNoAction {
		b.NoAction(pcr, data)
		return nil
	}
	d := map[pcrs.Alg][]byte{}
	for _, a := range b.banks {
		h, _ := a.New() // checked in NewBuilder
		h.Write(data)
		d[a] = h.Sum(nil)
	}
	if !b.record(pcr, typ, d, data) {
		return nil
	}
	return d
}

// ExtendDigest writes a record whose digests are given (e.g. the
// Authenticode hash of an EFI application, which is not a hash of the
// event data). digests must hold exactly one correctly sized digest per bank.
func (b *Builder) ExtendDigest(pcr uint32, typ EventType, digests map[pcrs.Alg][]byte, data []byte) error {
	if len(digests) != len(b.banks) {
		return b.fail(fmt.Errorf("%w: %d digests for %d banks", ErrBuilder, len(digests), len(b.banks)))
	}
	for _, a := range b.banks {
		if len(digests[a]) != a.Size() {
			return b.fail(fmt.Errorf("%w: %s digest of %d bytes, want %d", ErrBuilder, a, len(digests[a]), a.Size()))
		}
	}
	if !b.record(pcr, typ, digests, data) {
		return b.err
	}
	return nil
}

func (b *Builder) fail(err error) error {
	if b.err == nil {
		b.err = err
	}
	return err
}

func (b *Builder) record(pcr uint32, typ EventType, d map[pcrs.Alg][]byte, data []byte) bool {
	if pcr > pcrs.MaxIndex {
		b.fail(fmt.Errorf("%w: PCR %d", ErrBuilder, pcr))
		return false
	}
	le32(&b.buf, pcr)
	le32(&b.buf, uint32(typ))
	le32(&b.buf, uint32(len(b.banks)))
	for _, a := range b.banks {
		le16(&b.buf, uint16(a))
		b.buf.Write(d[a])
	}
	le32(&b.buf, uint32(len(data)))
	b.buf.Write(data)
	return true
}

// Bytes returns the log so far (a copy).
func (b *Builder) Bytes() []byte { return bytes.Clone(b.buf.Bytes()) }

// Err returns the first misuse, if any.
func (b *Builder) Err() error { return b.err }

// EFIVariableData encodes UEFI_VARIABLE_DATA (PFP 10.4.4) for Extend.
func EFIVariableData(guid GUID, name string, data []byte) []byte {
	var buf bytes.Buffer
	buf.Write(guid[:])
	var n [8]byte
	enc := utf16.Encode([]rune(name))
	binary.LittleEndian.PutUint64(n[:], uint64(len(enc)))
	buf.Write(n[:])
	binary.LittleEndian.PutUint64(n[:], uint64(len(data)))
	buf.Write(n[:])
	for _, c := range enc {
		le16(&buf, c)
	}
	buf.Write(data)
	return buf.Bytes()
}

func le32(b *bytes.Buffer, v uint32) { b.Write(binary.LittleEndian.AppendUint32(nil, v)) }
func le16(b *bytes.Buffer, v uint16) { b.Write(binary.LittleEndian.AppendUint16(nil, v)) }
