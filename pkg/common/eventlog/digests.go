package eventlog

import (
	"bytes"
	"errors"
	"fmt"
	"hash"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// ErrEventTampered: a record's digest is not the hash of its data, for an
// event type whose digest the PFP defines as that hash. Only digests are
// bound by a quote, so such a record's data says something nothing signed:
// the log contradicts itself.
var ErrEventTampered = errors.New("event digest does not match its data")

// dataDigestType reports whether t is an event type whose digest PFP 10.4.1 (Table 9) and
// 10.4.4 (Table 10) define as the hash of the event data (for variables, of
// the whole UEFI_VARIABLE_DATA). The other types measure something else
// (a firmware volume, an Authenticode hash, a GPT read from disk) and cannot
// be checked from the log alone.
func dataDigestType(t EventType) bool {
	switch t {
	case EvSeparator, EvEFIAction, EvEFIVariableDriverConf, EvEFIVariableBoot, EvEFIVariableBoot2, EvEFIVariableAuthority:
		return true
	}
	return false
}

// CheckDigests checks, for every record of a type in dataDigestType, that
// each of its digests, in every bank it carries, is the hash of its data.
// It returns the quirks it had to accept; a record no accepted encoding
// explains is ErrEventTampered, naming the record. VerifyAgainst applies
// the same rule to the quoted banks only (see there why that is enough).
//
// Accepted deviations, each a named quirk:
//   - QuirkBootVariableDataOnly: EV_EFI_VARIABLE_BOOT/BOOT2 digests over the
//     variable's data only (EDK2 and every real UEFI log we have), instead of
//     the whole UEFI_VARIABLE_DATA.
//   - QuirkAuthorityTrailingByte: an EV_EFI_VARIABLE_AUTHORITY record whose
//     digest covers all but its last byte (shim 15 and Google's COS loader:
//     the record is one byte longer than what was measured).
func CheckDigests(l *Log) ([]Quirk, error) {
	q, _, err := newDigestChecker().checkLog(l)
	return q, err
}

// digestChecker applies the data-digest rule in a set of banks, with one
// hasher per bank reused (Reset) across records and one scratch buffer for
// sums, so that checking a log costs no allocation per record.
type digestChecker struct {
	// all: check every digest a record carries (CheckDigests, SecureBoot).
	// Otherwise check banks, each of which a record must carry.
	all   bool
	banks []pcrs.Alg
	hs    []bankHasher // created on first use
	sum   [64]byte     // scratch for Sum: the largest digest (SHA-512)
}

type bankHasher struct {
	alg pcrs.Alg
	h   hash.Hash
}

// newDigestChecker checks every digest of a record.
func newDigestChecker() *digestChecker {
	return &digestChecker{all: true, hs: make([]bankHasher, 0, 4)}
}

// newBankChecker checks the digests of banks only (none: nothing).
func newBankChecker(banks []pcrs.Alg) *digestChecker {
	return &digestChecker{banks: banks, hs: make([]bankHasher, 0, len(banks))}
}

// hasher returns the bank's hasher, Reset.
func (c *digestChecker) hasher(alg pcrs.Alg) (hash.Hash, error) {
	for i := range c.hs {
		if c.hs[i].alg == alg {
			c.hs[i].h.Reset()
			return c.hs[i].h, nil
		}
	}
	h, err := alg.New()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBankNotReplayable, alg)
	}
	c.hs = append(c.hs, bankHasher{alg, h})
	return h, nil
}

// digestEquals reports whether d is alg's hash of data.
func (c *digestChecker) digestEquals(alg pcrs.Alg, d, data []byte) (bool, error) {
	h, err := c.hasher(alg)
	if err != nil {
		return false, err
	}
	if h.Size() > len(c.sum) {
		return false, fmt.Errorf("%w: %s digests are %d bytes", ErrBankNotReplayable, alg, h.Size())
	}
	h.Write(data)
	return bytes.Equal(h.Sum(c.sum[:0]), d), nil
}

// matches reports whether every checked digest of e is the hash of data.
// A bank without a hash implementation cannot be checked and fails; so does
// a checked bank the record has no digest for.
func (c *digestChecker) matches(e *Event, data []byte) (bool, error) {
	if c.all {
		if len(e.Digests) == 0 {
			return false, nil
		}
		for alg, d := range e.Digests {
			if ok, err := c.digestEquals(alg, d, data); err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	}
	for _, alg := range c.banks {
		d, ok := e.Digests[alg]
		if !ok {
			// Parse makes every complete bank present in every extending
			// record; a hand-built Log may not.
			return false, fmt.Errorf("event %d: %w: no %s digest", e.Index, ErrDigestCount, alg)
		}
		if ok, err := c.digestEquals(alg, d, data); err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// record checks one record of a dataDigestType type and returns the quirk
// its encoding needed, if any.
func (c *digestChecker) record(e *Event) (Quirk, error) {
	ok, err := c.matches(e, e.Data)
	if err != nil || ok {
		return "", err
	}
	switch e.Type {
	case EvEFIVariableBoot, EvEFIVariableBoot2:
		if v, err := ParseEFIVariable(e.Data); err == nil {
			if ok, _ := c.matches(e, v.Data); ok {
				return QuirkBootVariableDataOnly, nil
			}
		}
	case EvEFIVariableAuthority:
		if _, err := parseEFIVariableHeader(e.Data); err == nil && len(e.Data) > 32 {
			if ok, _ := c.matches(e, e.Data[:len(e.Data)-1]); ok {
				return QuirkAuthorityTrailingByte, nil
			}
		}
	}
	return "", fmt.Errorf("event %d (PCR%d %s): %w", e.Index, e.PCR, e.Type, ErrEventTampered)
}

// posQuirk is a record (by position in Log.Events) whose digest needed a
// quirk to match its data.
type posQuirk struct {
	pos   int
	quirk Quirk
}

// checkLog checks every record of a dataDigestType type. It returns the
// distinct quirks accepted and, per record that needed one, which.
func (c *digestChecker) checkLog(l *Log) ([]Quirk, []posQuirk, error) {
	var (
		quirks []Quirk
		at     []posQuirk
	)
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR == TrailerPCR || !dataDigestType(e.Type) {
			continue
		}
		q, err := c.record(e)
		if err != nil {
			return quirks, nil, err
		}
		if q != "" {
			at = append(at, posQuirk{i, q})
			if !contains(quirks, q) {
				quirks = append(quirks, q)
			}
		}
	}
	return quirks, at, nil
}

func contains(qs []Quirk, q Quirk) bool {
	for _, x := range qs {
		if x == q {
			return true
		}
	}
	return false
}
