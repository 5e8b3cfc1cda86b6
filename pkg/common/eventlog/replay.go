package eventlog

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// Replay errors.
var (
	// ErrBankNotReplayable: no hash implementation is registered for a bank.
	ErrBankNotReplayable = errors.New("PCR bank cannot be replayed: no hash implementation")
	// ErrNothingVerified: the quote and the log share no (bank, PCR) pair, so
	// the log explains nothing that the TPM signed.
	ErrNothingVerified = errors.New("event log and quote share no PCR to compare")
)

// Replay computes, for every bank of the log, the value of every PCR the log
// extends, as TPM2_PCR_Extend would (PFP 10.2, TPM 2.0 Part 1 17.2):
// PCR := H(PCR || digest).
//
// Deliberate choices, each visible in Log.Quirks:
//   - EV_NO_ACTION records are never extended (PFP 10.4.1), including those
//     that carry digests (SP800-155 Event3).
//   - PCR0 starts at 00..0N where N is the StartupLocality (PFP 10.4.5.3);
//     when the first PCR0 event is EV_EFI_HCRTM_EVENT and no StartupLocality
//     event exists, PCR0 starts at 00..04 (H-CRTM, locality 4).
//   - Records with PCR index 0xFFFFFFFF are skipped.
//   - Banks in Log.IncompleteBanks are left out.
//
// The result lists only PCRs with at least one extending record.
// VerifyAgainst replays only the quoted banks; Replay is for callers that
// want every bank (the CLI, tests, profile capture from a trusted log).
func (l *Log) Replay() (pcrs.Values, error) {
	banks := make([]pcrs.Alg, 0, len(l.Banks))
	for _, alg := range l.Banks {
		if !slices.Contains(l.IncompleteBanks, alg) {
			banks = append(banks, alg)
		}
	}
	return l.replay(banks, newBankChecker(banks))
}

// replay computes the PCR values of banks, with c's hashers.
func (l *Log) replay(banks []pcrs.Alg, c *digestChecker) (pcrs.Values, error) {
	pcr0Init, err := l.pcr0Locality()
	if err != nil {
		return nil, err
	}
	out := make(pcrs.Values, len(banks))
	for _, alg := range banks {
		h, err := c.hasher(alg)
		if err != nil {
			return nil, err
		}
		if err := replayBank(l.Events, alg, h, pcr0Init, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// replayBank extends alg's PCRs with the log's digests into out. The values
// are computed in place in one buffer (one allocation per bank); each
// stored value has its own capacity, so appending to one cannot reach
// another.
func replayBank(events []Event, alg pcrs.Alg, h hash.Hash, pcr0Init uint8, out pcrs.Values) error {
	size := alg.Size()
	if size == 0 || h.Size() != size {
		return fmt.Errorf("%w: %s hash size %d", ErrBankNotReplayable, alg, h.Size())
	}
	buf := make([]byte, (pcrs.MaxIndex+1)*size)
	var extended uint32
	for i := range events {
		e := &events[i]
		if e.Type == EvNoAction || e.PCR == TrailerPCR {
			continue
		}
		if e.PCR > pcrs.MaxIndex {
			// Parse refuses these; a hand-built Log may not.
			return fmt.Errorf("event %d: %w: PCR %d", e.Index, ErrBadPCRIndex, e.PCR)
		}
		d, ok := e.Digests[alg]
		if !ok {
			// Parse guarantees one digest per bank; a hand-built Log may not.
			return fmt.Errorf("event %d: %w: no %s digest", e.Index, ErrDigestCount, alg)
		}
		idx := int(e.PCR)
		cur := buf[idx*size : (idx+1)*size : (idx+1)*size]
		if extended&(1<<idx) == 0 {
			extended |= 1 << idx
			if idx == 0 {
				cur[size-1] = pcr0Init
			}
		}
		h.Reset()
		h.Write(cur)
		h.Write(d)
		h.Sum(cur[:0]) // fits cur's capacity: the new value replaces the old in place
	}
	for idx := 0; idx <= pcrs.MaxIndex; idx++ {
		if extended&(1<<idx) != 0 {
			out.Set(alg, idx, buf[idx*size:(idx+1)*size:(idx+1)*size])
		}
	}
	return nil
}

// pcr0Locality checks the StartupLocality and H-CRTM sequence and returns the
// last byte of PCR0's initial value.
func (l *Log) pcr0Locality() (uint8, error) {
	var (
		loc        *uint8
		seenPCR0   bool
		firstIsHCR bool
	)
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR != 0 {
			continue
		}
		if v, ok := startupLocality(e); ok {
			// PFP 10.4.5.3: the event precedes every PCR0 measurement and
			// appears once; the TPM starts at locality 0, 3 or (H-CRTM) 4.
			if loc != nil {
				return 0, fmt.Errorf("event %d: %w: second StartupLocality event", e.Index, ErrStartupLocality)
			}
			if seenPCR0 {
				return 0, fmt.Errorf("event %d: %w: StartupLocality after a PCR0 measurement", e.Index, ErrStartupLocality)
			}
			if v != 0 && v != 3 && v != 4 {
				return 0, fmt.Errorf("event %d: %w: locality %d (want 0, 3 or 4)", e.Index, ErrStartupLocality, v)
			}
			loc = &v
			continue
		}
		if e.Type == EvNoAction {
			continue
		}
		if e.Type == EvEFIHCRTMEvent && seenPCR0 {
			// The H-CRTM measurement is what starts PCR0; after any other
			// PCR0 extend it cannot have come from TPM2_HashStart.
			return 0, fmt.Errorf("event %d: %w: EV_EFI_HCRTM_EVENT after another PCR0 measurement", e.Index, ErrHCRTM)
		}
		if !seenPCR0 {
			firstIsHCR = e.Type == EvEFIHCRTMEvent
		}
		seenPCR0 = true
	}
	switch {
	case loc != nil:
		if firstIsHCR && *loc != 4 {
			return 0, fmt.Errorf("%w: H-CRTM event with StartupLocality %d (want 4)", ErrHCRTM, *loc)
		}
		return *loc, nil
	case firstIsHCR:
		return 4, nil
	}
	return 0, nil
}

// Mismatch is one PCR whose replayed value differs from the quoted one,
// with the event from which the log's value can no longer match, when one
// event explains it.
type Mismatch struct {
	Bank     pcrs.Alg
	PCR      int
	Replayed []byte
	Quoted   []byte
	// Cause says how the log's events on this PCR relate to the quoted value.
	Cause MismatchCause
	// Event is the event Cause names (nil for CauseUnexplained with no
	// event on the PCR); Description is its decoded data in one line.
	Event       *Event
	Description string
	// Events is how many events the log extends this PCR with.
	Events int
}

// MismatchCause classifies a mismatched PCR.
type MismatchCause int

const (
	// CauseUnexplained: no prefix of the PCR's events, nor the events
	// without any single one, gives the quoted value (a changed digest, an
	// event the log lacks, or several changes). Event is the PCR's last
	// event: the mismatch starts at or before it.
	CauseUnexplained MismatchCause = iota
	// CauseExtraEvents: the quoted value is the replay of the PCR's events
	// before Event; Event and those after it were not measured by the TPM
	// (appended to the log, or the quote predates them).
	CauseExtraEvents
	// CauseUnmeasuredEvent: the log without Event replays to the quoted
	// value; Event was inserted (or the TPM never saw it).
	CauseUnmeasuredEvent
	// CauseOnlyEvent: Event is the PCR's only event and does not give the
	// quoted value: its digest is not what the TPM measured.
	CauseOnlyEvent
)

// maxDiagnosedEvents bounds the quadratic "without one event" search per PCR.
const maxDiagnosedEvents = 256

// diagnose finds, for a mismatched PCR, the event from which the log's
// value can no longer match the quoted one. It costs one replay of the
// PCR's events, plus, when no prefix matches and the PCR has at most
// maxDiagnosedEvents events, one partial replay per event.
func (l *Log) diagnose(m *Mismatch, pcr0Init uint8) {
	var evs []*Event
	for i := range l.Events {
		e := &l.Events[i]
		if e.Type != EvNoAction && e.PCR != TrailerPCR && int(e.PCR) == m.PCR {
			if _, ok := e.Digests[m.Bank]; ok {
				evs = append(evs, e)
			}
		}
	}
	m.Events = len(evs)
	h, err := m.Bank.New()
	if err != nil || len(evs) == 0 {
		return
	}
	extend := func(cur, d []byte) []byte {
		h.Reset()
		h.Write(cur)
		h.Write(d)
		return h.Sum(nil)
	}
	init := make([]byte, m.Bank.Size())
	if m.PCR == 0 {
		init[len(init)-1] = pcr0Init
	}
	// prefix[k] is the value after the first k events.
	prefix := make([][]byte, len(evs)+1)
	prefix[0] = init
	for k, e := range evs {
		prefix[k+1] = extend(prefix[k], e.Digests[m.Bank])
	}
	name := func(c MismatchCause, e *Event) {
		m.Cause, m.Event = c, e
		if d, err := l.Decode(e); err == nil && d != nil {
			m.Description = d.Summary()
		}
	}
	for k := len(evs) - 1; k >= 0; k-- {
		if bytes.Equal(prefix[k], m.Quoted) {
			name(CauseExtraEvents, evs[k])
			return
		}
	}
	if len(evs) == 1 {
		name(CauseOnlyEvent, evs[0])
		return
	}
	if len(evs) <= maxDiagnosedEvents {
		for j := range evs {
			cur := prefix[j]
			for _, e := range evs[j+1:] {
				cur = extend(cur, e.Digests[m.Bank])
			}
			if bytes.Equal(cur, m.Quoted) {
				name(CauseUnmeasuredEvent, evs[j])
				return
			}
		}
	}
	name(CauseUnexplained, evs[len(evs)-1])
}

// describeEvent names an event: index, type, decoded data, digest.
func (m *Mismatch) describeEvent() string {
	e := m.Event
	s := fmt.Sprintf("event %d %s", e.Index, e.Type)
	if d := m.Description; d != "" {
		if len(d) > 96 {
			d = d[:93] + "..."
		}
		s += " " + d
	}
	return s + fmt.Sprintf(" (%s digest %x)", m.Bank, e.Digests[m.Bank])
}

// String is the one-line diagnosis of the PCR.
func (m *Mismatch) String() string {
	head := fmt.Sprintf("%s PCR%d: ", m.Bank, m.PCR)
	values := fmt.Sprintf("quoted %x, replayed %x", m.Quoted, m.Replayed)
	if m.Event == nil {
		return head + fmt.Sprintf("no event of the log explains it (%d events); %s", m.Events, values)
	}
	switch m.Cause {
	case CauseExtraEvents:
		return head + "the TPM did not measure the log's events from " + m.describeEvent() + " on (the quoted value is the replay of the events before it)"
	case CauseUnmeasuredEvent:
		return head + "the TPM did not measure " + m.describeEvent() + " (the log without it replays to the quoted value)"
	case CauseOnlyEvent:
		return head + "its only event, " + m.describeEvent() + ", is not what the TPM measured; " + values
	}
	return head + fmt.Sprintf("no single event explains it: no prefix of its %d events reaches the quoted value, so the mismatch starts at or before ", m.Events) +
		m.describeEvent() + "; " + values
}

// MismatchError says which PCRs of which banks the log does not explain,
// one clause per PCR, on one line.
type MismatchError struct{ Mismatches []Mismatch }

func (e *MismatchError) Error() string {
	parts := make([]string, len(e.Mismatches))
	for i := range e.Mismatches {
		parts[i] = e.Mismatches[i].String()
	}
	return "event log does not replay to the quoted PCRs: " + strings.Join(parts, "; ")
}

// Replayed is the outcome of VerifyAgainst.
type Replayed struct {
	// Banks are the banks VerifyAgainst checked and replayed: the quoted
	// banks that the log carries in every record. Values, Verified, AtReset
	// and Unexplained are about these banks only.
	Banks []pcrs.Alg
	// Values are the replayed values, in Banks, of every PCR the log
	// extends, with any accepted workaround applied. Banks nobody quoted
	// are not replayed (Log.Replay does all).
	Values pcrs.Values
	// Verified lists, per bank, the PCR indices that equal the quote.
	Verified map[pcrs.Alg][]int
	// NotQuoted lists, per complete bank of the log (quoted or not),
	// extended PCRs the quote does not cover: the log says something about
	// them that nothing signed.
	NotQuoted map[pcrs.Alg][]int
	// AtReset lists, per bank, quoted PCRs the log never extends that hold
	// their reset value (zero; 0xFF.. for PCR17-22): consistent with the log.
	AtReset map[pcrs.Alg][]int
	// Unexplained lists quoted PCRs the log never extends that are not at
	// their reset value (PCR10 for IMA, or a log missing events): appraisal
	// must judge them; they are not an error here.
	Unexplained map[pcrs.Alg][]int
	// UncheckedBanks are quoted banks absent from the log.
	UncheckedBanks []pcrs.Alg
	// Quirks holds the log's quirks plus those applied here (QuirkEBSMissing).
	Quirks []Quirk

	// log is the Log this was computed for and quirkAt the records whose
	// data digest needed a quirk, so that VerifiedSecureBoot need not hash
	// PCR7's records again.
	log     *Log
	quirkAt []posQuirk
}

// checkedDigest is VerifyAgainst's data-digest verdict on the record at
// position pos of r.log, which it checked: only the quirk it needed.
func (r *Replayed) checkedDigest(pos int, _ *Event) (Quirk, error) {
	for _, pq := range r.quirkAt {
		if pq.pos == pos {
			return pq.quirk, nil
		}
	}
	return "", nil
}

// The ExitBootServices EV_EFI_ACTION strings (PFP 10.4.4, Table 11) that
// firmware extends into PCR5.
const (
	EBSInvocation = "Exit Boot Services Invocation"
	EBSSuccess    = "Exit Boot Services Returned with Success"
)

// VerifyAgainst checks and replays l in the banks quoted covers (Banks:
// quoted banks that every extending record of l has a digest for), and
// requires, for every PCR the log extends that quoted covers (same bank and
// index), the replayed value to equal the quoted one. A mismatch returns a
// *MismatchError naming bank and PCRs. Before replaying, every record whose
// digest is defined over its data must carry that hash in each of Banks
// (CheckDigests' rule and quirks; ErrEventTampered otherwise).
//
// Only one workaround exists: when PCR5 of a bank mismatches, the log has no
// ExitBootServices action event, and appending EV_EFI_ACTION
// "Exit Boot Services Invocation" then "... Returned with Success" to PCR5
// makes it match exactly, PCR5 is accepted and QuirkEBSMissing is reported
// (firmware bug seen on HP machines; go-attestation applies the same fix).
//
// Why only the quoted banks (2026-11-25, docs/eventlog.md): digests in a
// bank the quote does not cover are bound to nothing, so whatever we
// required of them, an attacker who edits the log could satisfy it; they
// are neither hashed nor compared, and a log whose unquoted bank is
// garbage is accepted. The data rule, however, must hold in a quoted bank:
// the Secure Boot grammar and profile appraisal read event data, and only a
// data digest in a bank the quote covers binds that data to the TPM. So it
// is checked in every quoted bank, and a record whose data does not hash to
// its quoted digest is ErrEventTampered even when its unquoted digests are
// right. Everything derived from the result (Verified, VerifiedSecureBoot,
// profile appraisal) reads quoted banks only.
//
// Security caveat: PCRs the quote covers but the log never extends are not
// checked here (PCR10 IMA, PCR17-22); appraisal must judge them. The caller
// must also make sure the quote itself was verified, and that the banks it
// relies on are in Verified (see UncheckedBanks). With no bank in common,
// nothing is checked and the result is ErrNothingVerified.
func VerifyAgainst(l *Log, quoted pcrs.Values) (*Replayed, error) {
	qbanks := quoted.Banks()
	banks := make([]pcrs.Alg, 0, len(qbanks))
	var unchecked []pcrs.Alg
	for _, alg := range qbanks {
		if !slices.Contains(l.Banks, alg) || slices.Contains(l.IncompleteBanks, alg) {
			unchecked = append(unchecked, alg)
			continue
		}
		banks = append(banks, alg)
	}
	c := newBankChecker(banks)
	digestQuirks, quirkAt, err := c.checkLog(l)
	if err != nil {
		return nil, err
	}
	vals, err := l.replay(banks, c)
	if err != nil {
		return nil, err
	}
	r := &Replayed{Banks: banks, Values: vals, Verified: map[pcrs.Alg][]int{}, NotQuoted: map[pcrs.Alg][]int{},
		AtReset: map[pcrs.Alg][]int{}, Unexplained: map[pcrs.Alg][]int{}, UncheckedBanks: unchecked,
		Quirks: append(slices.Clone(l.Quirks), digestQuirks...), log: l, quirkAt: quirkAt}
	var mm []Mismatch
	compared := 0
	for _, alg := range banks {
		for _, idx := range quoted.Indices(alg) {
			if _, ext := vals.Get(alg, idx); !ext {
				q, _ := quoted.Get(alg, idx)
				if bytes.Equal(q, alg.ResetValue(idx)) {
					r.AtReset[alg] = append(r.AtReset[alg], idx)
				} else {
					r.Unexplained[alg] = append(r.Unexplained[alg], idx)
				}
			}
		}
		for _, idx := range vals.Indices(alg) {
			q, ok := quoted.Get(alg, idx)
			if !ok {
				continue
			}
			compared++
			got, _ := vals.Get(alg, idx)
			if bytes.Equal(got, q) {
				r.Verified[alg] = append(r.Verified[alg], idx)
				continue
			}
			if idx == 5 {
				if fixed, ok := l.ebsWorkaround(alg, got, q); ok {
					vals.Set(alg, 5, fixed)
					r.Verified[alg] = append(r.Verified[alg], idx)
					if !slices.Contains(r.Quirks, QuirkEBSMissing) {
						r.Quirks = append(r.Quirks, QuirkEBSMissing)
					}
					continue
				}
			}
			mm = append(mm, Mismatch{Bank: alg, PCR: idx, Replayed: got, Quoted: q})
		}
	}
	// Which PCRs the log extends is the same in every complete bank, so
	// NotQuoted needs no replay of the unquoted ones.
	extended := l.extendedPCRs()
	for _, alg := range l.Banks {
		if slices.Contains(l.IncompleteBanks, alg) {
			continue
		}
		for idx := 0; idx <= pcrs.MaxIndex; idx++ {
			if extended&(1<<idx) == 0 {
				continue
			}
			if _, ok := quoted.Get(alg, idx); !ok {
				r.NotQuoted[alg] = append(r.NotQuoted[alg], idx)
			}
		}
	}
	if len(mm) > 0 {
		pcr0Init, _ := l.pcr0Locality() // replay succeeded, so did this
		for i := range mm {
			l.diagnose(&mm[i], pcr0Init)
		}
		return r, &MismatchError{Mismatches: mm}
	}
	if compared == 0 {
		return r, ErrNothingVerified
	}
	return r, nil
}

// extendedPCRs is the set (bit i: PCR i) of PCRs some record extends.
func (l *Log) extendedPCRs() uint32 {
	var m uint32
	for i := range l.Events {
		if e := &l.Events[i]; e.Type != EvNoAction && e.PCR <= pcrs.MaxIndex {
			m |= 1 << e.PCR
		}
	}
	return m
}

// ebsWorkaround returns PCR5 with the two ExitBootServices actions appended,
// and whether that equals quoted. It refuses when the log already measures
// ExitBootServices: then the mismatch is something else.
func (l *Log) ebsWorkaround(alg pcrs.Alg, replayed, quoted []byte) ([]byte, bool) {
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR == 5 && e.Type == EvEFIAction && strings.HasPrefix(string(e.Data), "Exit Boot Services") {
			return nil, false
		}
	}
	h, err := alg.New()
	if err != nil {
		return nil, false
	}
	cur := bytes.Clone(replayed)
	for _, s := range []string{EBSInvocation, EBSSuccess} {
		h.Reset()
		h.Write([]byte(s))
		d := h.Sum(nil)
		h.Reset()
		h.Write(cur)
		h.Write(d)
		cur = h.Sum(nil)
	}
	return cur, bytes.Equal(cur, quoted)
}
