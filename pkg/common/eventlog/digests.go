package eventlog

import (
	"bytes"
	"errors"
	"fmt"
)

// ErrEventTampered: a record's digest is not the hash of its data, for an
// event type whose digest the PFP defines as that hash. Only digests are
// bound by a quote, so such a record's data says something nothing signed:
// the log contradicts itself.
var ErrEventTampered = errors.New("event digest does not match its data")

// dataDigestTypes are the event types whose digest PFP 10.4.1 (Table 9) and
// 10.4.4 (Table 10) define as the hash of the event data (for variables, of
// the whole UEFI_VARIABLE_DATA). The other types measure something else
// (a firmware volume, an Authenticode hash, a GPT read from disk) and cannot
// be checked from the log alone.
var dataDigestTypes = map[EventType]bool{
	EvSeparator:             true,
	EvEFIAction:             true,
	EvEFIVariableDriverConf: true,
	EvEFIVariableBoot:       true,
	EvEFIVariableBoot2:      true,
	EvEFIVariableAuthority:  true,
}

// CheckDigests checks, for every record of a type in dataDigestTypes, that
// each of its digests is the hash of its data. It returns the quirks it had
// to accept; a record no accepted encoding explains is ErrEventTampered,
// naming the record.
//
// Accepted deviations, each a named quirk:
//   - QuirkBootVariableDataOnly: EV_EFI_VARIABLE_BOOT/BOOT2 digests over the
//     variable's data only (EDK2 and every real UEFI log we have), instead of
//     the whole UEFI_VARIABLE_DATA.
//   - QuirkAuthorityTrailingByte: an EV_EFI_VARIABLE_AUTHORITY record whose
//     digest covers all but its last byte (shim 15 and Google's COS loader:
//     the record is one byte longer than what was measured).
func CheckDigests(l *Log) ([]Quirk, error) {
	var quirks []Quirk
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR == TrailerPCR || !dataDigestTypes[e.Type] {
			continue
		}
		q, err := checkRecordDigest(e)
		if err != nil {
			return quirks, err
		}
		if q != "" && !contains(quirks, q) {
			quirks = append(quirks, q)
		}
	}
	return quirks, nil
}

// checkRecordDigest checks one record of a dataDigestTypes type.
func checkRecordDigest(e *Event) (Quirk, error) {
	ok, err := digestsMatch(e, e.Data)
	if err != nil || ok {
		return "", err
	}
	switch e.Type {
	case EvEFIVariableBoot, EvEFIVariableBoot2:
		if v, err := ParseEFIVariable(e.Data); err == nil {
			if ok, _ := digestsMatch(e, v.Data); ok {
				return QuirkBootVariableDataOnly, nil
			}
		}
	case EvEFIVariableAuthority:
		if _, err := parseEFIVariableHeader(e.Data); err == nil && len(e.Data) > 32 {
			if ok, _ := digestsMatch(e, e.Data[:len(e.Data)-1]); ok {
				return QuirkAuthorityTrailingByte, nil
			}
		}
	}
	return "", fmt.Errorf("event %d (PCR%d %s): %w", e.Index, e.PCR, e.Type, ErrEventTampered)
}

// digestsMatch reports whether every digest e carries is the hash of data.
// A bank without a hash implementation cannot be checked and fails.
func digestsMatch(e *Event, data []byte) (bool, error) {
	if len(e.Digests) == 0 {
		return false, nil
	}
	for alg, d := range e.Digests {
		h, err := alg.New()
		if err != nil {
			return false, fmt.Errorf("%w: %s", ErrBankNotReplayable, alg)
		}
		h.Write(data)
		if !bytes.Equal(h.Sum(nil), d) {
			return false, nil
		}
	}
	return true, nil
}

func contains(qs []Quirk, q Quirk) bool {
	for _, x := range qs {
		if x == q {
			return true
		}
	}
	return false
}
