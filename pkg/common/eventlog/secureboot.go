package eventlog

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// SecureBootMode is what the log says about UEFI Secure Boot.
type SecureBootMode int

const (
	// SecureBootUnknown: the log has no SecureBoot variable event in PCR7.
	SecureBootUnknown SecureBootMode = iota
	// SecureBootEnabled: SecureBoot was measured as 1.
	SecureBootEnabled
	// SecureBootDisabled: SecureBoot was measured as 0, or with no data
	// (QuirkSecureBootEmpty).
	SecureBootDisabled
)

func (m SecureBootMode) String() string {
	switch m {
	case SecureBootEnabled:
		return "enabled"
	case SecureBootDisabled:
		return "disabled"
	}
	return "unknown"
}

// MarshalText makes the mode appear as its name in JSON.
func (m SecureBootMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// SecureBoot errors.
var (
	// ErrVariableDigest: the SecureBoot variable's digest is not the hash of
	// its UEFI_VARIABLE_DATA, so its data is not bound by the quote.
	ErrVariableDigest = errors.New("EFI variable digest does not match its data")
	// ErrSecureBootValue: SecureBoot data is not a single byte 0 or 1.
	ErrSecureBootValue = errors.New("invalid SecureBoot variable value")
	// ErrSecureBootConflict: the log measures SecureBoot twice, differently.
	ErrSecureBootConflict = errors.New("conflicting SecureBoot variable events")
)

// SecureBootState is the Secure Boot evidence of a log.
type SecureBootState struct {
	Mode SecureBootMode `json:"mode"`
	// Event is the index of the SecureBoot variable record, or -1.
	Event int `json:"event"`
	// VariablesVerified: every PCR7 EV_EFI_VARIABLE_DRIVER_CONFIG record's
	// digest equals the hash of its data in every bank, as PFP 10.4.4
	// requires; only then do PK/KEK/db/dbx contents mean what they say.
	VariablesVerified bool `json:"variables_verified"`
	// DigestMismatches lists PCR7 variable records (driver config and
	// authority) whose digest is not the hash of their data.
	DigestMismatches []int `json:"digest_mismatches,omitempty"`
	// Malformed lists PCR7 EV_EFI_VARIABLE_AUTHORITY records whose
	// UEFI_VARIABLE_DATA does not parse (they are not otherwise used).
	Malformed []int   `json:"malformed,omitempty"`
	Quirks    []Quirk `json:"quirks,omitempty"`
}

// SecureBoot reads the SecureBoot variable (EFI global variable GUID,
// measured as EV_EFI_VARIABLE_DRIVER_CONFIG into PCR7, PFP 3.3.4.8 and
// 10.4.4) and checks variable digests against their data.
//
// Decisions: a SecureBoot event with zero bytes of data (seen on AMI
// firmware with Secure Boot off; its digest matches no encoding of the data)
// is reported as Disabled with QuirkSecureBootEmpty: an absent value cannot
// claim enablement. Any other SecureBoot event whose digest does not match
// its data is an error, because its value would be unbound.
//
// Security caveat: the result means something only for a log that
// VerifyAgainst has tied to a verified quote covering PCR7.
func SecureBoot(l *Log) (*SecureBootState, error) {
	st := &SecureBootState{Event: -1, VariablesVerified: true}
	var value []byte
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR != 7 || (e.Type != EvEFIVariableDriverConf && e.Type != EvEFIVariableAuthority) {
			continue
		}
		v, err := ParseEFIVariable(e.Data)
		if err != nil {
			if e.Type == EvEFIVariableAuthority {
				// Old shim wrote its "Shim" authority with 6 stray bytes;
				// an authority record is not a configuration fact, so note it.
				st.Malformed = append(st.Malformed, e.Index)
				continue
			}
			return nil, fmt.Errorf("event %d: %w", e.Index, err)
		}
		ok, err := digestsMatchData(e)
		if err != nil {
			return nil, err
		}
		if !ok {
			st.DigestMismatches = append(st.DigestMismatches, e.Index)
			if e.Type == EvEFIVariableDriverConf {
				st.VariablesVerified = false
			}
		}
		if e.Type != EvEFIVariableDriverConf || v.VendorGUID != EFIGlobalVariable || v.Name != "SecureBoot" {
			continue
		}
		switch {
		case len(v.Data) == 0:
			if !slices.Contains(st.Quirks, QuirkSecureBootEmpty) {
				st.Quirks = append(st.Quirks, QuirkSecureBootEmpty)
			}
		case !ok:
			return nil, fmt.Errorf("event %d: %w: SecureBoot", e.Index, ErrVariableDigest)
		case len(v.Data) != 1 || v.Data[0] > 1:
			return nil, fmt.Errorf("event %d: %w: %x", e.Index, ErrSecureBootValue, v.Data)
		}
		if st.Event >= 0 && !bytes.Equal(value, v.Data) {
			return nil, fmt.Errorf("event %d: %w: %x then %x", e.Index, ErrSecureBootConflict, value, v.Data)
		}
		if st.Event < 0 {
			st.Event, value = e.Index, v.Data
		}
	}
	switch {
	case st.Event < 0:
		st.Mode = SecureBootUnknown
	case len(value) == 1 && value[0] == 1:
		st.Mode = SecureBootEnabled
	default:
		st.Mode = SecureBootDisabled
	}
	return st, nil
}

// digestsMatchData reports whether every digest e carries is the hash of its
// data. A bank without a hash implementation cannot be checked and fails.
func digestsMatchData(e *Event) (bool, error) {
	if len(e.Digests) == 0 {
		return false, nil
	}
	for alg, d := range e.Digests {
		h, err := alg.New()
		if err != nil {
			return false, fmt.Errorf("%w: %s", ErrBankNotReplayable, alg)
		}
		h.Write(e.Data)
		if !bytes.Equal(h.Sum(nil), d) {
			return false, nil
		}
	}
	return true, nil
}

// VerifiedSecureBoot is SecureBoot for a log that VerifyAgainst tied to a
// quote: the state comes from PCR7 events, so it is reported only when PCR7
// replayed to a quoted value in some bank; otherwise the mode is Unknown.
func VerifiedSecureBoot(l *Log, r *Replayed) (*SecureBootState, error) {
	for _, idx := range r.Verified {
		if slices.Contains(idx, 7) {
			return SecureBoot(l)
		}
	}
	return &SecureBootState{Mode: SecureBootUnknown, Event: -1}, nil
}
