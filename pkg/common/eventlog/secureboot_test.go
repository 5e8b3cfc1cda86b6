package eventlog

import (
	"errors"
	"slices"
	"testing"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// pcr7Boot is a firmware's PCR7 as the PFP lays it out, followed by a tail
// the test adds (what root appends after boot, or a variant firmware).
type pcr7Boot struct {
	sb      []byte // SecureBoot data; nil leaves the record out
	noSep   bool
	extra   func(b *Builder) // before the separator (firmware variants)
	after   func(b *Builder) // after the separator (root, or shim)
	relabel map[int]EventType
}

func sbVar(v []byte) []byte { return EFIVariableData(EFIGlobalVariable, "SecureBoot", v) }

func (p pcr7Boot) log(t *testing.T) *Log {
	t.Helper()
	b, _ := NewBuilder(pcrs.SHA1, pcrs.SHA256)
	if p.sb != nil {
		b.Extend(7, EvEFIVariableDriverConf, sbVar(p.sb))
	}
	b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIGlobalVariable, "PK", []byte("pk")))
	b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIGlobalVariable, "KEK", []byte("kek")))
	b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIImageSecurityDBID, "db", []byte("db")))
	b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIImageSecurityDBID, "dbx", []byte("dbx")))
	if p.extra != nil {
		p.extra(b)
	}
	if !p.noSep {
		b.Extend(7, EvSeparator, []byte{0, 0, 0, 0})
	}
	if p.after != nil {
		p.after(b)
	}
	if b.Err() != nil {
		t.Fatal(b.Err())
	}
	l, err := Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	// Relabelling changes a record's type but keeps its digests, so the
	// log still replays to the same PCRs: what root can do to a log file.
	for idx, typ := range p.relabel {
		l.Events[idx].Type = typ
	}
	return l
}

// TestSecureBootGrammar: the PCR7 reading of PFP 3.3.4.8. Each forgery is a
// log root can produce on a machine that booted with Secure Boot off: it
// replays (root extends PCR7 with exactly the digests it logs, and
// relabelling keeps digests), so only the grammar stands between it and a
// false "enabled".
func TestSecureBootGrammar(t *testing.T) {
	fakeOn := func(b *Builder) { b.Extend(7, EvEFIVariableDriverConf, sbVar([]byte{1})) }
	wrong := func(b *Builder, data []byte) {
		d := map[pcrs.Alg][]byte{pcrs.SHA1: make([]byte, 20), pcrs.SHA256: make([]byte, 32)}
		b.ExtendDigest(7, EvEFIVariableDriverConf, d, data)
	}
	// Event indices: 0 Spec ID, 1 SecureBoot, 2 PK, 3 KEK, 4 db, 5 dbx, 6 separator.
	tests := []struct {
		name string
		boot pcr7Boot
		mode SecureBootMode
		err  error
	}{
		// What firmware writes.
		{"enabled", pcr7Boot{sb: []byte{1}}, SecureBootEnabled, nil},
		{"disabled", pcr7Boot{sb: []byte{0}}, SecureBootDisabled, nil},
		{"empty SecureBoot is disabled", pcr7Boot{sb: []byte{}}, SecureBootDisabled, nil},
		{"authorities after the separator", pcr7Boot{sb: []byte{1}, after: func(b *Builder) {
			b.Extend(7, EvEFIVariableAuthority, EFIVariableData(EFIImageSecurityDBID, "db", []byte("cert")))
			b.Extend(7, EvEFIVariableAuthority, EFIVariableData(EFIShimLockGUID, "SbatLevel", []byte("sbat")))
		}}, SecureBootEnabled, nil},
		{"driver authority before the separator", pcr7Boot{sb: []byte{1}, extra: func(b *Builder) {
			b.Extend(7, EvEFIVariableAuthority, EFIVariableData(EFIImageSecurityDBID, "db", []byte("option rom cert")))
		}}, SecureBootEnabled, nil},
		{"other config variable before the separator", pcr7Boot{sb: []byte{1}, extra: func(b *Builder) {
			b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIGlobalVariable, "AuditMode", []byte{0}))
		}}, SecureBootEnabled, nil},
		{"debug mode is never enabled", pcr7Boot{sb: []byte{1}, extra: func(b *Builder) {
			b.Extend(7, EvEFIAction, []byte(ActionDebugMode))
		}}, SecureBootUnknown, nil},
		{"legacy boot: separator only", pcr7Boot{}, SecureBootUnknown, nil},
		{"no separator: cannot tell firmware from root", pcr7Boot{sb: []byte{1}, noSep: true}, SecureBootUnknown, nil},
		{"value 2", pcr7Boot{sb: []byte{2}}, 0, ErrSecureBootValue},
		{"two bytes", pcr7Boot{sb: []byte{1, 0}}, 0, ErrSecureBootValue},

		// Forgeries: the real SecureBoot=0 disguised, a fake SecureBoot=1 appended.
		{"appended SecureBoot=1 after the separator", pcr7Boot{sb: []byte{0}, after: fakeOn}, 0, ErrPCR7Grammar},
		{"legacy boot: appended SecureBoot=1", pcr7Boot{after: fakeOn}, 0, ErrPCR7Grammar},
		{"real record renamed, fake appended", pcr7Boot{after: fakeOn, extra: func(b *Builder) {
			b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIGlobalVariable, "SecureBooX", []byte{0}))
		}}, 0, ErrPCR7Grammar},
		{"real record with another GUID, fake appended", pcr7Boot{after: fakeOn, extra: func(b *Builder) {
			b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIImageSecurityDBID, "SecureBoot", []byte{0}))
		}}, 0, ErrPCR7Grammar},
		{"real record relabelled EV_EFI_ACTION, fake appended", pcr7Boot{sb: []byte{0}, after: fakeOn,
			relabel: map[int]EventType{1: EvEFIAction}}, 0, ErrPCR7Grammar},
		{"real record relabelled authority, fake appended", pcr7Boot{sb: []byte{0}, after: fakeOn,
			relabel: map[int]EventType{1: EvEFIVariableAuthority}}, 0, ErrPCR7Grammar},
		{"real record relabelled authority alone", pcr7Boot{sb: []byte{0},
			relabel: map[int]EventType{1: EvEFIVariableAuthority}}, 0, ErrPCR7Grammar},
		{"real record relabelled boot-services app (digest not over data)", pcr7Boot{sb: []byte{0}, after: fakeOn,
			relabel: map[int]EventType{1: EvEFIBootServicesApp}}, 0, ErrPCR7Grammar},
		// The separator relabelled and a new one appended after the fake:
		// SecureBoot=1 then stands "before the separator".
		{"separator relabelled EV_EFI_ACTION, new separator after the fake", pcr7Boot{sb: []byte{0},
			after:   func(b *Builder) { fakeOn(b); b.Extend(7, EvSeparator, []byte{0, 0, 0, 0}) },
			relabel: map[int]EventType{1: EvEFIVariableAuthority, 6: EvEFIAction}}, 0, ErrPCR7Grammar},
		{"separator relabelled authority, new separator after the fake", pcr7Boot{
			after:   func(b *Builder) { fakeOn(b); b.Extend(7, EvSeparator, []byte{0, 0, 0, 0}) },
			relabel: map[int]EventType{5: EvEFIVariableAuthority}}, 0, ErrPCR7Grammar},
		{"separator relabelled post code, new separator after the fake", pcr7Boot{
			after:   func(b *Builder) { fakeOn(b); b.Extend(7, EvSeparator, []byte{0, 0, 0, 0}) },
			relabel: map[int]EventType{6: EvPostCode}}, 0, ErrPCR7Grammar},
		{"second separator", pcr7Boot{sb: []byte{1}, after: func(b *Builder) { b.Extend(7, EvSeparator, []byte{0, 0, 0, 0}) }}, 0, ErrPCR7Grammar},
		{"two SecureBoot records", pcr7Boot{sb: []byte{0}, extra: fakeOn}, 0, ErrSecureBootConflict},
		{"PK twice", pcr7Boot{sb: []byte{1}, extra: func(b *Builder) {
			b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIGlobalVariable, "PK", []byte("pk2")))
		}}, 0, ErrPCR7Grammar},
		{"unknown action", pcr7Boot{sb: []byte{1}, after: func(b *Builder) { b.Extend(7, EvEFIAction, []byte("Secure Boot is on, trust me")) }}, 0, ErrPCR7Grammar},
		{"SecureBoot data flipped 00 -> 01", pcr7Boot{extra: func(b *Builder) {
			b.ExtendDigest(7, EvEFIVariableDriverConf, digestsOf(sbVar([]byte{0}), pcrs.SHA1, pcrs.SHA256), sbVar([]byte{1}))
		}}, 0, ErrEventTampered},
		{"empty SecureBoot with a wrong digest", pcr7Boot{extra: func(b *Builder) { wrong(b, sbVar(nil)) }}, 0, ErrEventTampered},
		{"malformed variable", pcr7Boot{sb: []byte{1}, extra: func(b *Builder) { b.Extend(7, EvEFIVariableDriverConf, []byte("short")) }}, 0, ErrBadEventData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := SecureBoot(tc.boot.log(t))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if st.Mode != tc.mode {
				t.Errorf("mode %v (%s), want %v", st.Mode, st.Why, tc.mode)
			}
			if (st.Mode == SecureBootUnknown) != (st.Why != "") {
				t.Errorf("Why %q for mode %v", st.Why, st.Mode)
			}
		})
	}
}

func digestsOf(data []byte, banks ...pcrs.Alg) map[pcrs.Alg][]byte {
	d := map[pcrs.Alg][]byte{}
	for _, a := range banks {
		h, _ := a.New()
		h.Write(data)
		d[a] = h.Sum(nil)
	}
	return d
}

// TestCheckDigests: every record whose digest the PFP defines over its data
// must match it, in every PCR; the two real-world encodings are quirks.
func TestCheckDigests(t *testing.T) {
	zero := map[pcrs.Alg][]byte{pcrs.SHA256: make([]byte, 32)}
	digest := func(data []byte) map[pcrs.Alg][]byte { return digestsOf(data, pcrs.SHA256) }
	boot := EFIVariableData(EFIGlobalVariable, "Boot0000", []byte("load option"))
	auth := EFIVariableData(EFIShimLockGUID, "Shim", []byte("cert"))
	authLong := append(auth[:len(auth):len(auth)], 0xaf)
	tests := []struct {
		name  string
		add   func(b *Builder)
		quirk Quirk
		err   error
	}{
		{"honest", func(b *Builder) { b.Extend(4, EvSeparator, []byte{0, 0, 0, 0}) }, "", nil},
		{"separator", func(b *Builder) { b.ExtendDigest(4, EvSeparator, zero, []byte{0, 0, 0, 0}) }, "", ErrEventTampered},
		{"EFI action in PCR5", func(b *Builder) { b.ExtendDigest(5, EvEFIAction, digest([]byte(EBSInvocation)), []byte(EBSSuccess)) }, "", ErrEventTampered},
		{"driver config", func(b *Builder) { b.ExtendDigest(7, EvEFIVariableDriverConf, zero, sbVar([]byte{1})) }, "", ErrEventTampered},
		{"boot variable over its data only", func(b *Builder) { b.ExtendDigest(1, EvEFIVariableBoot, digest([]byte("load option")), boot) }, QuirkBootVariableDataOnly, nil},
		{"boot variable, wrong", func(b *Builder) { b.ExtendDigest(1, EvEFIVariableBoot, zero, boot) }, "", ErrEventTampered},
		{"authority one byte longer than measured", func(b *Builder) { b.ExtendDigest(7, EvEFIVariableAuthority, digest(auth), authLong) }, QuirkAuthorityTrailingByte, nil},
		{"authority, wrong", func(b *Builder) { b.ExtendDigest(7, EvEFIVariableAuthority, zero, auth) }, "", ErrEventTampered},
		{"application digests are not over the data", func(b *Builder) { b.ExtendDigest(4, EvEFIBootServicesApp, zero, []byte("path")) }, "", nil},
		{"no-action is not extended", func(b *Builder) { b.ExtendDigest(0, EvNoAction, zero, []byte("x")) }, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := NewBuilder(pcrs.SHA256)
			tc.add(b)
			l, err := Parse(b.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			q, err := CheckDigests(l)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if (tc.quirk != "") != slices.Contains(q, tc.quirk) || (tc.quirk == "" && len(q) > 0) {
				t.Errorf("quirks %v, want %q", q, tc.quirk)
			}
			// VerifyAgainst refuses the same logs, quoted in their bank,
			// although every PCR replays to the quote.
			own, err := l.Replay()
			if err != nil {
				t.Fatal(err)
			}
			want := tc.err
			if want == nil && len(own) == 0 {
				want = ErrNothingVerified // the log extends nothing
			}
			if _, err := VerifyAgainst(l, own); !errors.Is(err, want) {
				t.Errorf("VerifyAgainst: %v, want %v", err, want)
			}
			// With no quoted bank nothing is checked, and nothing verified.
			if _, err := VerifyAgainst(l, pcrs.Values{}); !errors.Is(err, ErrNothingVerified) {
				t.Errorf("VerifyAgainst with nothing quoted: %v, want %v", err, ErrNothingVerified)
			}
		})
	}
}
