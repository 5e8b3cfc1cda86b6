// Package eventlog parses TCG binary event logs and replays them into PCR
// values, following the TCG PC Client Platform Firmware Profile (PFP)
// Specification, version 1.05 rev 23 / 1.06, section 10 ("Event Logging").
//
// Two formats are understood:
//   - the legacy SHA-1 format (a sequence of TCG_PCR_EVENT, PFP 10.2.1),
//     written by TPM 1.2-era firmware and still by some TPM 2.0 firmware;
//   - the crypto-agile format (PFP 10.2.2): a first TCG_PCR_EVENT carrying a
//     TCG_EfiSpecIDEvent ("Spec ID Event03") followed by TCG_PCR_EVENT2
//     records that hold one digest per active PCR bank.
//
// Security caveats: an event log is attacker-controlled input until it has
// been replayed to PCR values that a TPM signed in a quote (VerifyAgainst).
// Only digests are bound by the quote; event data (variable contents, file
// paths, strings) is trustworthy only where the digest is defined as a hash of
// that data and that has been checked (see SecureBoot). Nothing here talks to
// a TPM: bytes in, facts out.
package eventlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// Format is the encoding of an event log.
type Format int

const (
	// Legacy is the SHA-1-only TCG_PCR_EVENT format (PFP 10.2.1).
	Legacy Format = iota + 1
	// CryptoAgile is the TCG_PCR_EVENT2 format introduced by a Spec ID event (PFP 10.2.2).
	CryptoAgile
)

func (f Format) String() string {
	switch f {
	case Legacy:
		return "legacy-sha1"
	case CryptoAgile:
		return "crypto-agile"
	}
	return fmt.Sprintf("format(%d)", int(f))
}

// TrailerPCR is the PCR index Windows uses for records appended to the
// firmware log (e.g. its SIPA "Windows AIK" EV_NO_ACTION). No TPM PCR has this
// index, so such records can never be extended and are skipped by Replay.
const TrailerPCR = 0xFFFFFFFF

// Limits bounds the work and memory the parser may use. Every limit is
// checked before the corresponding allocation.
type Limits struct {
	MaxLogSize       int // whole log, bytes
	MaxEvents        int // records, including the header record
	MaxEventDataSize int // one record's event data, bytes
	MaxDigests       int // digests per record (and algorithms in the Spec ID event)
}

// DefaultLimits are generous for real firmware logs (the largest real log we
// have is 73 KB with 204 records) while keeping a hostile log cheap.
var DefaultLimits = Limits{MaxLogSize: 2 << 20, MaxEvents: 10000, MaxEventDataSize: 1 << 20, MaxDigests: 8}

// Option configures Parse.
type Option func(*config)

type config struct {
	limits Limits
	copy   bool
}

// CopyInput makes Parse work on a private copy of its input, for a caller
// that changes or reuses the buffer while it keeps the Log. Without it the
// Log aliases the input (see Log).
func CopyInput() Option { return func(c *config) { c.copy = true } }

// WithLimits replaces the default limits; zero fields keep their default.
func WithLimits(l Limits) Option {
	return func(c *config) {
		if l.MaxLogSize > 0 {
			c.limits.MaxLogSize = l.MaxLogSize
		}
		if l.MaxEvents > 0 {
			c.limits.MaxEvents = l.MaxEvents
		}
		if l.MaxEventDataSize > 0 {
			c.limits.MaxEventDataSize = l.MaxEventDataSize
		}
		if l.MaxDigests > 0 {
			c.limits.MaxDigests = l.MaxDigests
		}
	}
}

// Rejection reasons. Errors returned by Parse wrap one of these (use
// errors.Is) and say which record and offset failed.
var (
	ErrEmpty              = errors.New("event log is empty")
	ErrLogTooLarge        = errors.New("event log exceeds the size limit")
	ErrTooManyEvents      = errors.New("event log exceeds the event count limit")
	ErrEventDataTooLarge  = errors.New("event data exceeds the size limit")
	ErrTruncated          = errors.New("event log is truncated")
	ErrTooManyDigests     = errors.New("digest count exceeds the limit")
	ErrDigestCount        = errors.New("record does not carry exactly one digest per bank of the Spec ID event")
	ErrUnknownAlgorithm   = errors.New("unknown hash algorithm")
	ErrDigestSize         = errors.New("digest size does not match the algorithm")
	ErrDuplicateAlgorithm = errors.New("hash algorithm listed twice")
	ErrBadSpecID          = errors.New("malformed Spec ID event")
	ErrBadPCRIndex        = errors.New("PCR index out of range")
	ErrStartupLocality    = errors.New("invalid StartupLocality event")
	ErrHCRTM              = errors.New("invalid H-CRTM event sequence")
)

// SpecID is the decoded TCG_EfiSpecIDEvent (PFP 10.4.5.1).
type SpecID struct {
	PlatformClass uint32
	VersionMinor  uint8
	VersionMajor  uint8
	Errata        uint8
	UintnSize     uint8 // 1: UINT32, 2: UINT64
	Algorithms    []pcrs.Alg
	VendorInfo    []byte
}

// Event is one record of the log.
type Event struct {
	Index   int // position in the log; 0 is the first record (the Spec ID header in agile logs)
	Offset  int // byte offset of the record in the log
	PCR     uint32
	Type    EventType
	Digests map[pcrs.Alg][]byte
	Data    []byte
}

// Log is a parsed event log. Its byte slices (Event.Data, Event.Digests
// values, SpecID.VendorInfo) alias the buffer given to Parse, which is not
// copied (2026-11-25: the copy was over a quarter of the server's allocation per
// attestation): the caller must not modify that buffer while it uses the
// Log, or must pass CopyInput. Each slice's capacity ends where it does, so
// appending to one never writes into the buffer.
type Log struct {
	Format Format
	Banks  []pcrs.Alg // sorted by algorithm ID
	SpecID *SpecID    // nil for legacy logs
	Events []Event
	// IncompleteBanks are Spec ID banks that some extending record has no
	// digest for (QuirkIncompleteBank); Replay leaves them out.
	IncompleteBanks []pcrs.Alg
	StartupLocality *uint8 // from the EV_NO_ACTION "StartupLocality" event, if any
	HCRTM           bool   // PCR0 was started by an H-CRTM sequence (locality 4)
	Quirks          []Quirk
}

// Replayable structural facts of the log, found while parsing.
const (
	specIDSignature03  = "Spec ID Event03\x00"
	startupLocalitySig = "StartupLocality\x00"
	sp800155Sig        = "SP800-155 Event3"
	legacyHeaderSize   = 32 // PCRIndex, EventType, SHA-1 digest, EventSize
)

// Parse decodes a binary event log. It never extends anything; see Replay.
// The Log aliases data (see Log; CopyInput for a private copy).
func Parse(data []byte, opts ...Option) (*Log, error) {
	c := config{limits: DefaultLimits}
	for _, o := range opts {
		o(&c)
	}
	lim := c.limits
	if len(data) == 0 {
		return nil, ErrEmpty
	}
	if len(data) > lim.MaxLogSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrLogTooLarge, len(data), lim.MaxLogSize)
	}
	buf := data
	if c.copy {
		buf = bytes.Clone(data)
	}
	p := &parser{buf: buf, lim: lim, log: &Log{}}
	if err := p.parse(); err != nil {
		return nil, err
	}
	p.log.analyse()
	return p.log, nil
}

type parser struct {
	buf []byte
	off int
	lim Limits
	log *Log
	// algs and sizes are the Spec ID algorithms and their digest sizes; a
	// list, as a linear search of at most MaxDigests entries is cheaper
	// than hashing a key for every digest of every record.
	algs  []pcrs.Alg
	sizes []int
	// seen marks, per record, the Spec ID algorithms already read.
	seen []bool
}

// algIndex is alg's position in the Spec ID event, or -1.
func (p *parser) algIndex(alg pcrs.Alg) int {
	for i, a := range p.algs {
		if a == alg {
			return i
		}
	}
	return -1
}

func (p *parser) fail(idx int, err error, format string, a ...any) error {
	return fmt.Errorf("event %d at offset %d: %w: %s", idx, p.off, err, fmt.Sprintf(format, a...))
}

func (p *parser) need(idx, n int, what string) error {
	if n < 0 || len(p.buf)-p.off < n {
		return p.fail(idx, ErrTruncated, "%s needs %d bytes, %d left", what, n, len(p.buf)-p.off)
	}
	return nil
}

func (p *parser) u32() uint32 {
	v := binary.LittleEndian.Uint32(p.buf[p.off:])
	p.off += 4
	return v
}

func (p *parser) u16() uint16 {
	v := binary.LittleEndian.Uint16(p.buf[p.off:])
	p.off += 2
	return v
}

func (p *parser) take(n int) []byte {
	b := p.buf[p.off : p.off+n : p.off+n]
	p.off += n
	return b
}

func (p *parser) addEvent(e Event) error {
	if len(p.log.Events) >= p.lim.MaxEvents {
		return fmt.Errorf("%w: more than %d records", ErrTooManyEvents, p.lim.MaxEvents)
	}
	p.log.Events = append(p.log.Events, e)
	return nil
}

func checkPCR(pcr uint32) bool { return pcr <= pcrs.MaxIndex || pcr == TrailerPCR }

// legacyRecord reads one TCG_PCR_EVENT (PFP 10.2.1).
func (p *parser) legacyRecord(idx int) (Event, error) {
	start := p.off
	if err := p.need(idx, legacyHeaderSize, "TCG_PCR_EVENT header"); err != nil {
		return Event{}, err
	}
	pcr := p.u32()
	typ := EventType(p.u32())
	digest := p.take(20)
	size := p.u32()
	if !checkPCR(pcr) {
		return Event{}, p.fail(idx, ErrBadPCRIndex, "PCR %d", pcr)
	}
	if uint64(size) > uint64(p.lim.MaxEventDataSize) {
		return Event{}, p.fail(idx, ErrEventDataTooLarge, "%d bytes, limit %d", size, p.lim.MaxEventDataSize)
	}
	if err := p.need(idx, int(size), "event data"); err != nil {
		return Event{}, err
	}
	return Event{Index: idx, Offset: start, PCR: pcr, Type: typ,
		Digests: map[pcrs.Alg][]byte{pcrs.SHA1: digest}, Data: p.take(int(size))}, nil
}

func (p *parser) parse() error {
	first, err := p.legacyRecord(0)
	if err != nil {
		return err
	}
	if first.Type == EvNoAction && bytes.HasPrefix(first.Data, []byte(specIDSignature03)) {
		if first.PCR != 0 || !allZero(first.Digests[pcrs.SHA1]) {
			return fmt.Errorf("event 0: %w: Spec ID record must be PCR 0 with a zero digest", ErrBadSpecID)
		}
		if err := p.specID(first.Data); err != nil {
			return err
		}
		p.log.Format = CryptoAgile
		p.log.Events = make([]Event, 0, min(1+p.countRecords(true), p.lim.MaxEvents))
		if err := p.addEvent(first); err != nil {
			return err
		}
		for idx := 1; p.off < len(p.buf); idx++ {
			e, err := p.agileRecord(idx)
			if err != nil {
				return err
			}
			if err := p.addEvent(e); err != nil {
				return err
			}
		}
		return nil
	}
	p.log.Format = Legacy
	p.log.Banks = []pcrs.Alg{pcrs.SHA1}
	p.log.Events = make([]Event, 0, min(1+p.countRecords(false), p.lim.MaxEvents))
	if err := p.addEvent(first); err != nil {
		return err
	}
	for idx := 1; p.off < len(p.buf); idx++ {
		e, err := p.legacyRecord(idx)
		if err != nil {
			return err
		}
		if err := p.addEvent(e); err != nil {
			return err
		}
	}
	return nil
}

// countRecords counts the records from p.off on by their headers alone,
// without allocating, so that Events is allocated once at its final size.
// It stops before the first record that would not parse (parsing then fails
// there, having used no more than the count) and past MaxEvents; each
// record counted is at least 32 bytes of input, so the count is bounded by
// the log's size as well.
func (p *parser) countRecords(agile bool) int {
	b, off, n := p.buf, p.off, 0
	for off < len(b) && n <= p.lim.MaxEvents {
		if agile {
			if len(b)-off < 12 {
				break
			}
			count := binary.LittleEndian.Uint32(b[off+8:])
			off += 12
			if count == 0 || uint64(count) > uint64(len(p.algs)) {
				break
			}
			for range count {
				if len(b)-off < 2 {
					return n
				}
				i := p.algIndex(pcrs.Alg(binary.LittleEndian.Uint16(b[off:])))
				off += 2
				if i < 0 || len(b)-off < p.sizes[i] {
					return n
				}
				off += p.sizes[i]
			}
			if len(b)-off < 4 {
				break
			}
			size := binary.LittleEndian.Uint32(b[off:])
			off += 4
			if uint64(size) > uint64(len(b)-off) {
				break
			}
			off += int(size)
		} else {
			if len(b)-off < legacyHeaderSize {
				break
			}
			size := binary.LittleEndian.Uint32(b[off+legacyHeaderSize-4:])
			off += legacyHeaderSize
			if uint64(size) > uint64(len(b)-off) {
				break
			}
			off += int(size)
		}
		n++
	}
	return n
}

// specID decodes TCG_EfiSpecIDEvent (PFP 10.4.5.1, Table 20).
func (p *parser) specID(d []byte) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("event 0: %w: %s", ErrBadSpecID, fmt.Sprintf(format, a...))
	}
	const fixed = 16 + 4 + 4 + 4 // signature, class, version/errata/uintn, numberOfAlgorithms
	if len(d) < fixed {
		return bad("%d bytes, need at least %d", len(d), fixed)
	}
	s := &SpecID{
		PlatformClass: binary.LittleEndian.Uint32(d[16:]),
		VersionMinor:  d[20], VersionMajor: d[21], Errata: d[22], UintnSize: d[23],
	}
	n := binary.LittleEndian.Uint32(d[24:])
	if n == 0 {
		return bad("no algorithms")
	}
	if uint64(n) > uint64(p.lim.MaxDigests) {
		return fmt.Errorf("event 0: %w: Spec ID lists %d algorithms, limit %d", ErrTooManyDigests, n, p.lim.MaxDigests)
	}
	rest := d[fixed:]
	if len(rest) < int(n)*4+1 {
		return bad("%d algorithms need %d bytes, %d left", n, int(n)*4+1, len(rest))
	}
	p.algs, p.sizes, p.seen = make([]pcrs.Alg, 0, n), make([]int, 0, n), make([]bool, n)
	for i := 0; i < int(n); i++ {
		alg := pcrs.Alg(binary.LittleEndian.Uint16(rest[4*i:]))
		size := int(binary.LittleEndian.Uint16(rest[4*i+2:]))
		if !alg.Known() {
			return fmt.Errorf("event 0: %w: 0x%04x in the Spec ID event", ErrUnknownAlgorithm, uint16(alg))
		}
		if size != alg.Size() {
			return fmt.Errorf("event 0: %w: Spec ID says %s is %d bytes, want %d", ErrDigestSize, alg, size, alg.Size())
		}
		if p.algIndex(alg) >= 0 {
			return fmt.Errorf("event 0: %w: %s", ErrDuplicateAlgorithm, alg)
		}
		p.algs, p.sizes = append(p.algs, alg), append(p.sizes, size)
		s.Algorithms = append(s.Algorithms, alg)
	}
	rest = rest[n*4:]
	vlen := int(rest[0])
	if len(rest)-1 != vlen {
		return bad("vendorInfoSize %d but %d bytes follow", vlen, len(rest)-1)
	}
	s.VendorInfo = rest[1:]
	p.log.SpecID = s
	p.log.Banks = slices.Clone(s.Algorithms)
	slices.Sort(p.log.Banks)
	return nil
}

// agileRecord reads one TCG_PCR_EVENT2 (PFP 10.2.2): PCRIndex, EventType,
// TPML_DIGEST_VALUES, EventSize, Event.
func (p *parser) agileRecord(idx int) (Event, error) {
	start := p.off
	if err := p.need(idx, 12, "TCG_PCR_EVENT2 header"); err != nil {
		return Event{}, err
	}
	pcr := p.u32()
	typ := EventType(p.u32())
	count := p.u32()
	if !checkPCR(pcr) {
		return Event{}, p.fail(idx, ErrBadPCRIndex, "PCR %d", pcr)
	}
	if uint64(count) > uint64(p.lim.MaxDigests) {
		return Event{}, p.fail(idx, ErrTooManyDigests, "%d digests, limit %d", count, p.lim.MaxDigests)
	}
	// PFP 10.2.2: a TCG_PCR_EVENT2 carries digests for the active banks,
	// each one listed in the Spec ID event. More than the Spec ID lists, or
	// none, cannot be right. Fewer happens (OVMF lists banks it does not
	// extend); such a bank is marked incomplete and is not replayed.
	if count == 0 || int(count) > len(p.algs) {
		return Event{}, p.fail(idx, ErrDigestCount, "%d digests, Spec ID lists %d banks", count, len(p.algs))
	}
	digests := make(map[pcrs.Alg][]byte, count)
	clear(p.seen)
	for i := 0; i < int(count); i++ {
		if err := p.need(idx, 2, "digest algorithm"); err != nil {
			return Event{}, err
		}
		alg := pcrs.Alg(p.u16())
		a := p.algIndex(alg)
		if a < 0 {
			return Event{}, p.fail(idx, ErrUnknownAlgorithm, "0x%04x is not in the Spec ID event", uint16(alg))
		}
		if p.seen[a] {
			return Event{}, p.fail(idx, ErrDuplicateAlgorithm, "%s", alg)
		}
		p.seen[a] = true
		if err := p.need(idx, p.sizes[a], "digest"); err != nil {
			return Event{}, err
		}
		digests[alg] = p.take(p.sizes[a])
	}
	if err := p.need(idx, 4, "event size"); err != nil {
		return Event{}, err
	}
	size := p.u32()
	if uint64(size) > uint64(p.lim.MaxEventDataSize) {
		return Event{}, p.fail(idx, ErrEventDataTooLarge, "%d bytes, limit %d", size, p.lim.MaxEventDataSize)
	}
	if err := p.need(idx, int(size), "event data"); err != nil {
		return Event{}, err
	}
	return Event{Index: idx, Offset: start, PCR: pcr, Type: typ, Digests: digests, Data: p.take(int(size))}, nil
}

// analyse records the StartupLocality, H-CRTM and the structural quirks.
// Errors in these sequences are reported by Replay, which needs them.
func (l *Log) analyse() {
	for i := range l.Events {
		e := &l.Events[i]
		switch {
		case e.PCR == TrailerPCR:
			l.addQuirk(QuirkTrailerRecord)
		case e.Type == EvNoAction:
			if loc, ok := startupLocality(e); ok && l.StartupLocality == nil {
				l.StartupLocality = &loc
				l.addQuirk(QuirkStartupLocality)
			}
			if i > 0 && l.Format == CryptoAgile && !digestsZero(e) {
				l.addQuirk(QuirkNoActionDigests)
			}
			if bytes.HasPrefix(e.Data, []byte(sp800155Sig)) {
				l.addQuirk(QuirkSP800155)
			}
		case e.Type == EvEFIHCRTMEvent:
			l.HCRTM = true
			l.addQuirk(QuirkHCRTM)
		case e.PCR >= 17 && e.PCR <= 22:
			l.addQuirk(QuirkDRTMPCR)
		}
		// A record has no repeated digest and only Spec ID banks (Parse),
		// so one with as many digests as banks has them all.
		if e.PCR != TrailerPCR && e.Type != EvNoAction && len(e.Digests) < len(l.Banks) {
			for _, a := range l.Banks {
				if _, ok := e.Digests[a]; !ok && !slices.Contains(l.IncompleteBanks, a) {
					l.IncompleteBanks = append(l.IncompleteBanks, a)
					l.addQuirk(QuirkIncompleteBank)
				}
			}
		}
	}
}

func startupLocality(e *Event) (uint8, bool) {
	if e.Type != EvNoAction || e.PCR != 0 || len(e.Data) != len(startupLocalitySig)+1 ||
		!bytes.HasPrefix(e.Data, []byte(startupLocalitySig)) {
		return 0, false
	}
	return e.Data[len(startupLocalitySig)], true
}

func (l *Log) addQuirk(q Quirk) {
	if !slices.Contains(l.Quirks, q) {
		l.Quirks = append(l.Quirks, q)
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func digestsZero(e *Event) bool {
	for _, d := range e.Digests {
		if !allZero(d) {
			return false
		}
	}
	return true
}
