package eventlog

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// seedReal adds every real log (read at test time, never copied here).
// Without the shared tree the fuzz targets still run on synthetic seeds.
func seedReal(f *testing.F) map[string][]byte {
	root := os.Getenv("TPMID_REAL_TESTDATA")
	if root == "" {
		root = filepath.Join("..", "..", "..", "..", "shared", "testdata", "real")
	}
	out := map[string][]byte{}
	for _, pat := range []string{"eventlogs/*/*.bin", "eventlogs/*/fragments/*.bin", "quotes/*/eventlog*", "quotes/*/*/eventlog*"} {
		m, _ := filepath.Glob(filepath.Join(root, pat))
		for _, p := range m {
			if b, err := os.ReadFile(p); err == nil {
				out[p] = b
			}
		}
	}
	if len(out) == 0 {
		f.Logf("real TPM test data not found under %s: fuzzing from synthetic seeds only", root)
	}
	return out
}

// fuzzLimits keep each input cheap.
var fuzzLimits = Limits{MaxLogSize: 1 << 20, MaxEvents: 2000, MaxEventDataSize: 64 << 10, MaxDigests: 8}

// FuzzParse: Parse, Replay, VerifyAgainst, SecureBoot and decoding never
// panic, and a log that parses replays deterministically.
func FuzzParse(f *testing.F) {
	for _, b := range seedReal(f) {
		f.Add(b)
	}
	b, _ := NewBuilder(pcrs.SHA1, pcrs.SHA256)
	b.StartupLocality(3)
	b.Extend(0, EvSCRTMVersion, []byte("v\x00"))
	b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIGlobalVariable, "SecureBoot", []byte{1}))
	f.Add(b.Bytes())
	// A PCR7 that reads as enabled, and the same with a fake appended.
	b.Extend(7, EvSeparator, []byte{0, 0, 0, 0})
	b.Extend(7, EvEFIVariableAuthority, EFIVariableData(EFIShimLockGUID, "SbatLevel", []byte("sbat")))
	f.Add(b.Bytes())
	b.Extend(7, EvEFIVariableDriverConf, EFIVariableData(EFIGlobalVariable, "SecureBoot", []byte{1}))
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse(data, WithLimits(fuzzLimits))
		if err != nil {
			return
		}
		if len(l.Events) == 0 || len(l.Events) > fuzzLimits.MaxEvents {
			t.Fatalf("%d events", len(l.Events))
		}
		// Parse counts the records before it allocates Events: exactly.
		if cap(l.Events) != len(l.Events) {
			t.Fatalf("%d events in a slice of capacity %d", len(l.Events), cap(l.Events))
		}
		v, err := l.Replay()
		if err == nil {
			v2, _ := l.Replay()
			for _, a := range v.Banks() {
				for _, i := range v.Indices(a) {
					x, _ := v.Get(a, i)
					y, _ := v2.Get(a, i)
					if string(x) != string(y) || len(x) != a.Size() {
						t.Fatalf("replay not deterministic for %s PCR%d", a, i)
					}
				}
			}
			if _, err := VerifyAgainst(l, v); err != nil && len(v) > 0 && !errors.Is(err, ErrEventTampered) {
				// The log's own replay must verify (unless a record's
				// digest contradicts its data), except through the EBS
				// path which only ever adds matches.
				t.Fatalf("log does not verify against its own replay: %v", err)
			}
			// Quoted in one bank, only that bank is checked and replayed.
			for _, a := range v.Banks() {
				q := pcrs.Values{a: v[a]}
				r, err := VerifyAgainst(l, q)
				if err != nil && !errors.Is(err, ErrEventTampered) {
					t.Fatalf("log does not verify against its own %s replay: %v", a, err)
				}
				if err == nil && (!slices.Equal(r.Banks, []pcrs.Alg{a}) || len(r.Values) != 1) {
					t.Fatalf("quoted %s: checked %v, replayed %v", a, r.Banks, r.Values.Banks())
				}
			}
		}
		// Whatever the input, "enabled" only ever comes from a SecureBoot
		// record before the one PCR7 separator, with matching digests.
		if st, err := SecureBoot(l); err == nil && st.Mode == SecureBootEnabled {
			seps := 0
			for i := range l.Events {
				e := &l.Events[i]
				if e.PCR == 7 && e.Type == EvSeparator {
					seps++
				}
			}
			if seps != 1 || st.Event < 0 || st.Event > st.Separator {
				t.Fatalf("enabled with %d separators, SecureBoot record %d, separator %d", seps, st.Event, st.Separator)
			}
			if ok, _ := newDigestChecker().matches(&l.Events[st.Event], l.Events[st.Event].Data); !ok {
				t.Fatalf("enabled from a record whose digest does not match its data")
			}
		}
		_, _ = CheckDigests(l)
		for i := range l.Events {
			_, _ = l.Decode(&l.Events[i])
		}
	})
}

// FuzzDecodeEventData: the event-data decoders (UEFI_VARIABLE_DATA, image
// load events with device paths, strings, separators) never panic and stay
// within their bounds.
func FuzzDecodeEventData(f *testing.F) {
	for _, raw := range seedReal(f) {
		l, err := Parse(raw)
		if err != nil {
			continue
		}
		for _, e := range l.Events {
			f.Add(uint32(e.Type), e.Data)
		}
	}
	f.Add(uint32(EvEFIVariableBoot), EFIVariableData(EFIGlobalVariable, "BootOrder", []byte{0, 0}))
	f.Add(uint32(EvEFIBootServicesApp), imageLoad(`\EFI\BOOT\BOOTX64.EFI`))
	f.Add(uint32(EvSeparator), binary.LittleEndian.AppendUint32(nil, 0))
	f.Fuzz(func(t *testing.T, typ uint32, data []byte) {
		d, err := DecodeEventData(EventType(typ), data)
		if err != nil {
			return
		}
		_ = d.Summary()
		if d != nil && d.Variable != nil && len(d.Variable.Data) > len(data) {
			t.Fatal("variable data larger than input")
		}
	})
}
