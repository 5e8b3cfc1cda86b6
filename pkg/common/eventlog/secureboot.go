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
	// SecureBootUnknown: PCR7 does not measure the Secure Boot state the
	// way the PFP says (legacy boot, no separator yet, no SecureBoot
	// record), or a firmware debugger was enabled.
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

// SecureBoot errors. Each means the log contradicts itself or the PFP, so
// an attestation that carries it is refused rather than read as Unknown.
var (
	// ErrPCR7Grammar: the PCR7 records do not follow PFP 3.3.4.8: a record
	// type or EV_EFI_ACTION string the profile does not put in PCR7, a
	// second separator, a Secure Boot configuration variable measured
	// twice or after the separator, or a configuration variable dressed as
	// an authority record.
	ErrPCR7Grammar = errors.New("PCR7 does not follow the PC Client firmware profile")
	// ErrSecureBootValue: SecureBoot data is not a single byte 0 or 1.
	ErrSecureBootValue = errors.New("invalid SecureBoot variable value")
	// ErrSecureBootConflict: the log measures SecureBoot twice.
	ErrSecureBootConflict = errors.New("conflicting SecureBoot variable events")
)

// EFIShimLockGUID is shim's vendor GUID (605dab50-e046-4300-abb6-3dd810dd8b23),
// under which it measures its own authorities (Shim, MokList, SbatLevel ...).
var EFIShimLockGUID = mustGUID("605dab50-e046-4300-abb6-3dd810dd8b23")

// The EV_EFI_ACTION strings PFP 3.3.4.8 (and 1.06's DMA rule) put in PCR7.
const (
	ActionDebugMode        = "UEFI Debug Mode"
	ActionDMAProtectionOff = "DMA Protection Disabled"
	secureBootVariable     = "SecureBoot"
)

type varKey struct {
	guid GUID
	name string
}

// secureBootConfig are the Secure Boot policy variables PFP 3.3.4.8 measures
// into PCR7 as EV_EFI_VARIABLE_DRIVER_CONFIG before the separator, once
// each: SecureBoot, PK, KEK, db, dbx, and where the platform has them the
// dbt and dbr databases.
var secureBootConfig = map[varKey]bool{
	{EFIGlobalVariable, secureBootVariable}: true,
	{EFIGlobalVariable, "PK"}:               true,
	{EFIGlobalVariable, "KEK"}:              true,
	{EFIImageSecurityDBID, "db"}:            true,
	{EFIImageSecurityDBID, "dbx"}:           true,
	{EFIImageSecurityDBID, "dbt"}:           true,
	{EFIImageSecurityDBID, "dbr"}:           true,
}

// SecureBootState is the Secure Boot evidence of a log's PCR7.
type SecureBootState struct {
	Mode SecureBootMode `json:"mode"`
	// Why says, for Unknown, what PCR7 lacks.
	Why string `json:"why,omitempty"`
	// Event is the index of the SecureBoot variable record, or -1.
	Event int `json:"event"`
	// Separator is the index of PCR7's EV_SEPARATOR, or -1.
	Separator int `json:"separator"`
	// Config lists the Secure Boot configuration variables measured before
	// the separator (SecureBoot, PK, KEK, db, dbx, dbt, dbr).
	Config []string `json:"config,omitempty"`
	// OtherConfig lists other driver-config variables before the separator.
	OtherConfig []string `json:"other_config,omitempty"`
	// Authorities lists the EV_EFI_VARIABLE_AUTHORITY records (the
	// db/MOK entries that verified an image), before and after the separator.
	Authorities []int `json:"authorities,omitempty"`
	// DebugMode: EV_EFI_ACTION "UEFI Debug Mode" was measured; a firmware
	// debugger can defeat image verification, so Mode is then Unknown.
	DebugMode bool `json:"debug_mode,omitempty"`
	// DMAProtectionDisabled: EV_EFI_ACTION "DMA Protection Disabled".
	DMAProtectionDisabled bool    `json:"dma_protection_disabled,omitempty"`
	Quirks                []Quirk `json:"quirks,omitempty"`
}

// SecureBoot reads PCR7 by the grammar of the TCG PC Client Platform
// Firmware Profile (PFP 1.05/1.06, 3.3.4.8 and 10.4.4):
//
//	PCR7 := { EV_EFI_VARIABLE_DRIVER_CONFIG (SecureBoot, PK, KEK, db, dbx, dbt, dbr: once each; others listed)
//	        | EV_EFI_VARIABLE_AUTHORITY | action }
//	        EV_SEPARATOR                       (exactly one)
//	        { EV_EFI_VARIABLE_AUTHORITY | action }
//	action := EV_EFI_ACTION "UEFI Debug Mode" | EV_EFI_ACTION "DMA Protection Disabled"
//
// EV_NO_ACTION records are ignored (never extended). Every record's
// digests must equal the hash of its data (CheckDigests' rule).
//
// Why this shape: root on a running machine can extend PCR7 and append
// records, but only after the firmware's separator. So the Secure Boot
// state is taken only from the one SecureBoot configuration record before
// the one separator, and anything that could move a record across it
// (a second separator, a relabelled record, a configuration variable
// after it or disguised as an authority) is refused.
//
// Consequences: a log that contradicts itself or the profile is an error
// (ErrEventTampered, ErrPCR7Grammar, ErrSecureBootConflict,
// ErrSecureBootValue). A PCR7 that simply does not measure Secure Boot
// (no records, no separator, no SecureBoot record before it: legacy boot)
// is Unknown, never Enabled. A SecureBoot record with no data (AMI
// firmware with Secure Boot off) is Disabled with QuirkSecureBootEmpty.
//
// Security caveat: the result means something only for a log that
// VerifyAgainst has tied to a verified quote covering PCR7 (see
// VerifiedSecureBoot), and only if the firmware measures PCR7 at all:
// firmware that never extends PCR7 lets root write all of it.
func SecureBoot(l *Log) (*SecureBootState, error) {
	c := newDigestChecker()
	return secureBoot(l, func(_ int, e *Event) (Quirk, error) { return c.record(e) })
}

// secureBoot is SecureBoot with the data-digest check of a PCR7 record (at
// position pos of l.Events) left to check.
func secureBoot(l *Log, check func(pos int, e *Event) (Quirk, error)) (*SecureBootState, error) {
	st := &SecureBootState{Event: -1, Separator: -1}
	var (
		value   []byte
		seen    = map[varKey]int{}
		anyPCR7 bool
	)
	for i := range l.Events {
		e := &l.Events[i]
		if e.PCR != 7 || e.Type == EvNoAction {
			continue
		}
		anyPCR7 = true
		bad := func(format string, a ...any) error {
			return fmt.Errorf("event %d (PCR7 %s): %w: %s", e.Index, e.Type, ErrPCR7Grammar, fmt.Sprintf(format, a...))
		}
		if !dataDigestType(e.Type) {
			return nil, bad("the profile does not put this event type in PCR7")
		}
		q, err := check(i, e)
		if err != nil {
			return nil, err
		}
		if q != "" && !slices.Contains(st.Quirks, q) {
			st.Quirks = append(st.Quirks, q)
		}
		before := st.Separator < 0
		switch e.Type {
		case EvSeparator:
			if !before {
				return nil, bad("second separator (the first is event %d)", st.Separator)
			}
			if len(e.Data) != 4 {
				return nil, bad("separator data of %d bytes, want 4", len(e.Data))
			}
			st.Separator = e.Index
		case EvEFIAction:
			switch string(e.Data) {
			case ActionDebugMode:
				// Only ever a downgrade, so where it stands does not matter.
				st.DebugMode = true
			case ActionDMAProtectionOff:
				st.DMAProtectionDisabled = true
			default:
				return nil, bad("action %q is not one the profile puts in PCR7", printable(e.Data))
			}
		case EvEFIVariableDriverConf:
			v, err := ParseEFIVariable(e.Data)
			if err != nil {
				return nil, fmt.Errorf("event %d (PCR7 %s): %w: %w", e.Index, e.Type, ErrPCR7Grammar, err)
			}
			k := varKey{v.VendorGUID, v.Name}
			if !before {
				return nil, bad("configuration variable %s measured after the separator (event %d)", v.Name, st.Separator)
			}
			if !secureBootConfig[k] {
				st.OtherConfig = append(st.OtherConfig, v.Name)
				continue
			}
			if prev, dup := seen[k]; dup {
				if v.Name == secureBootVariable {
					return nil, fmt.Errorf("event %d: %w: also event %d", e.Index, ErrSecureBootConflict, prev)
				}
				return nil, bad("configuration variable %s measured twice (also event %d)", v.Name, prev)
			}
			seen[k] = e.Index
			st.Config = append(st.Config, v.Name)
			if v.Name != secureBootVariable {
				continue
			}
			switch {
			case len(v.Data) == 0:
				st.Quirks = append(st.Quirks, QuirkSecureBootEmpty)
			case len(v.Data) != 1 || v.Data[0] > 1:
				return nil, fmt.Errorf("event %d: %w: %x", e.Index, ErrSecureBootValue, v.Data)
			}
			st.Event, value = e.Index, v.Data
		case EvEFIVariableAuthority:
			v, err := parseEFIVariableHeader(e.Data)
			if err != nil {
				return nil, fmt.Errorf("event %d (PCR7 %s): %w: %w", e.Index, e.Type, ErrPCR7Grammar, err)
			}
			// An authority is an entry of db (or shim's MOK lists) that
			// verified an image. A record naming a policy variable other
			// than db is a configuration record relabelled.
			if k := (varKey{v.VendorGUID, v.Name}); secureBootConfig[k] && v.Name != "db" {
				return nil, bad("authority record names the configuration variable %s", v.Name)
			}
			st.Authorities = append(st.Authorities, e.Index)
		default:
			return nil, bad("the profile does not put this event type in PCR7")
		}
	}
	switch {
	case !anyPCR7:
		st.Why = "the log does not measure PCR7"
	case st.Separator < 0:
		st.Why = "PCR7 has no separator, so the firmware's records cannot be told from later ones"
	case st.Event < 0:
		st.Why = "no SecureBoot configuration record before the PCR7 separator"
	case st.DebugMode:
		st.Why = "the firmware measured UEFI Debug Mode"
	case bytes.Equal(value, []byte{1}):
		st.Mode = SecureBootEnabled
	default:
		st.Mode = SecureBootDisabled
	}
	return st, nil
}

// VerifiedSecureBoot is SecureBoot for a log that VerifyAgainst tied to a
// quote: the state comes from PCR7 events, so it is read only when PCR7
// replayed to a quoted value in some bank; otherwise the mode is Unknown and
// PCR7 is not examined (nothing signed it).
//
// The PCR7 records' digests must match their data in the banks VerifyAgainst
// checked (r.Banks: the quoted ones), as there. When r is VerifyAgainst's
// result for this very l, that check is already done and is not repeated
// (l must not have been modified since); for any other r (built by hand)
// the records are checked in r.Banks, or in every bank when r.Banks is
// empty.
func VerifiedSecureBoot(l *Log, r *Replayed) (*SecureBootState, error) {
	for _, idx := range r.Verified {
		if !slices.Contains(idx, 7) {
			continue
		}
		if r.log == l && l != nil {
			return secureBoot(l, r.checkedDigest)
		}
		c := newDigestChecker()
		if len(r.Banks) > 0 {
			c = newBankChecker(r.Banks)
		}
		return secureBoot(l, func(_ int, e *Event) (Quirk, error) { return c.record(e) })
	}
	return &SecureBootState{Mode: SecureBootUnknown, Event: -1, Separator: -1, Why: "PCR7 was not quoted"}, nil
}
