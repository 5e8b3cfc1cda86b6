package eventlog

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// realDir is the shared real-evidence tree; the test skips without it.
func realDir(tb testing.TB) string {
	tb.Helper()
	return realdata.Dir(tb)
}

// realLogs returns every binary event log under the real tree, keyed by its
// path relative to the tree (as in REPLAYED_PCRS.json). IMA logs are not TCG
// firmware logs and are left out.
func realLogs(tb testing.TB) map[string][]byte {
	tb.Helper()
	root := realDir(tb)
	out := map[string][]byte{}
	for _, pat := range []string{"eventlogs/*/*.bin", "eventlogs/*/fragments/*.bin", "quotes/*/eventlog*", "quotes/*/*/eventlog*"} {
		m, err := filepath.Glob(filepath.Join(root, pat))
		if err != nil {
			tb.Fatal(err)
		}
		for _, p := range m {
			if strings.Contains(p, "/ima/") {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				tb.Fatal(err)
			}
			rel, _ := filepath.Rel(root, p)
			out[filepath.ToSlash(rel)] = b
		}
	}
	if len(out) == 0 {
		tb.Skip("no real event logs found")
	}
	return out
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// knownBad are real files we reject on purpose. tpm2-tools' copy of the
// specid-vendordata fragment declares an event size 4 bytes short of its
// Spec ID structure (the 4 vendorInfo bytes sit after the record); the
// tpm2-tss copy of the same fragment is well formed and parses.
var knownBad = map[string]error{
	"eventlogs/tpm2-tools/fragments/specid-vendordata.bin": ErrBadSpecID,
}

type replayedFile struct {
	Logs map[string]struct {
		Format string    `json:"format"`
		Banks  []string  `json:"banks"`
		Events int       `json:"events"`
		PCRs   pcrs.JSON `json:"pcrs"`
	} `json:"logs"`
}

// loadReplayed reads the collector's independent replay of every real log.
func loadReplayed(t *testing.T) replayedFile {
	t.Helper()
	var ref replayedFile
	b, err := os.ReadFile(filepath.Join(realDir(t), "eventlogs", "REPLAYED_PCRS.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// TestRealLogsParse: every real log parses, with the format, banks and record
// count the collector found.
func TestRealLogsParse(t *testing.T) {
	logs := realLogs(t)
	ref := loadReplayed(t)
	for _, name := range sortedKeys(logs) {
		t.Run(name, func(t *testing.T) {
			l, err := Parse(logs[name])
			if want, bad := knownBad[name]; bad {
				if !errors.Is(err, want) {
					t.Fatalf("Parse = %v, want %v", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			r, ok := ref.Logs[name]
			if !ok {
				t.Logf("no REPLAYED_PCRS entry (%d events, %v)", len(l.Events), l.Banks)
				return
			}
			if len(l.Events) != r.Events {
				t.Errorf("events = %d, want %d", len(l.Events), r.Events)
			}
			wantFormat := CryptoAgile
			if strings.HasPrefix(r.Format, "legacy") {
				wantFormat = Legacy
			}
			if l.Format != wantFormat {
				t.Errorf("format = %v, want %v", l.Format, wantFormat)
			}
			var banks []string
			for _, a := range l.Banks {
				banks = append(banks, a.String())
			}
			if !slices.Equal(banks, r.Banks) {
				t.Errorf("banks = %v, want %v", banks, r.Banks)
			}
		})
	}
}

// TestRealLogsReplayMatchesReference: our replay equals the collector's
// independent replay (REPLAYED_PCRS.json) for every log, PCR for PCR, in
// every bank including sha384 and sm3_256.
func TestRealLogsReplayMatchesReference(t *testing.T) {
	logs := realLogs(t)
	ref := loadReplayed(t)
	matchedLogs, total, matchedPCRs, totalPCRs := 0, 0, 0, 0
	for _, name := range sortedKeys(ref.Logs) {
		data, ok := logs[name]
		if !ok {
			t.Errorf("%s: listed in REPLAYED_PCRS.json but not found", name)
			continue
		}
		if _, bad := knownBad[name]; bad {
			continue
		}
		total++
		t.Run(name, func(t *testing.T) {
			l, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := l.Replay()
			if err != nil {
				t.Fatal(err)
			}
			want, err := pcrs.FromJSON(ref.Logs[name].PCRs)
			if err != nil {
				t.Fatal(err)
			}
			ok := true
			for _, alg := range want.Banks() {
				if !slices.Equal(got.Indices(alg), want.Indices(alg)) {
					t.Errorf("%s: PCRs extended = %v, want %v", alg, got.Indices(alg), want.Indices(alg))
					ok = false
				}
				for _, i := range want.Indices(alg) {
					totalPCRs++
					g, _ := got.Get(alg, i)
					w, _ := want.Get(alg, i)
					if !bytes.Equal(g, w) {
						t.Errorf("%s PCR%d = %x, want %x", alg, i, g, w)
						ok = false
						continue
					}
					matchedPCRs++
				}
			}
			if len(got.Banks()) != len(want.Banks()) {
				t.Errorf("banks replayed %v, reference %v", got.Banks(), want.Banks())
				ok = false
			}
			if ok {
				matchedLogs++
			}
		})
	}
	t.Logf("REPLAYED_PCRS.json: %d/%d logs identical, %d/%d PCR values", matchedLogs, total, matchedPCRs, totalPCRs)
}

// companion is an expected.json next to a log, or a quote's pcrs.json.
type companion struct {
	log      string
	expected pcrs.Values
	from     string
}

func companions(t *testing.T) []companion {
	root := realDir(t)
	var out []companion
	exp, _ := filepath.Glob(filepath.Join(root, "eventlogs", "*", "*.expected.json"))
	for _, p := range exp {
		var f struct {
			LogFile  string    `json:"log_file"`
			Expected pcrs.JSON `json:"expected_pcrs"`
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		v, err := pcrs.FromJSON(f.Expected)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		rel, _ := filepath.Rel(root, filepath.Join(filepath.Dir(p), f.LogFile))
		out = append(out, companion{log: filepath.ToSlash(rel), expected: v, from: filepath.Base(p)})
	}
	quotes, _ := filepath.Glob(filepath.Join(root, "quotes", "*", "pcrs.json"))
	q2, _ := filepath.Glob(filepath.Join(root, "quotes", "*", "*", "pcrs.json"))
	for _, p := range append(quotes, q2...) {
		logs, _ := filepath.Glob(filepath.Join(filepath.Dir(p), "eventlog*"))
		if len(logs) != 1 {
			continue
		}
		var j pcrs.JSON
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &j); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		v, err := pcrs.FromJSON(j)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		rel, _ := filepath.Rel(root, logs[0])
		out = append(out, companion{log: filepath.ToSlash(rel), expected: v, from: "quoted pcrs.json"})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].log < out[j].log })
	return out
}

// TestRealLogsVerifyAgainstCompanions: every log with an expected.json or a
// quote verifies; every expected PCR is either matched or explained (PCR not
// extended by the log, or bank absent from the log).
func TestRealLogsVerifyAgainstCompanions(t *testing.T) {
	cs := companions(t)
	if len(cs) == 0 {
		t.Skip("no companions")
	}
	root := realDir(t)
	var allMatch, allTotal int
	for _, c := range cs {
		t.Run(c.log, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, c.log))
			if err != nil {
				t.Fatal(err)
			}
			l, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			r, err := VerifyAgainst(l, c.expected)
			if err != nil {
				t.Fatalf("VerifyAgainst(%s): %v", c.from, err)
			}
			matched, total := 0, 0
			var reset, unexplained, missing []string
			for _, alg := range c.expected.Banks() {
				for _, i := range c.expected.Indices(alg) {
					total++
					name := fmt.Sprintf("%s:%d", alg, i)
					switch {
					case slices.Contains(r.Verified[alg], i):
						matched++
					case slices.Contains(r.AtReset[alg], i):
						matched++
						reset = append(reset, name)
					case slices.Contains(r.Unexplained[alg], i):
						unexplained = append(unexplained, name)
					case slices.Contains(r.UncheckedBanks, alg):
						missing = append(missing, name)
					default:
						t.Errorf("%s neither verified nor explained", name)
					}
				}
			}
			allMatch += matched
			allTotal += total
			t.Logf("%s vs %s: %d/%d match (%d by replay, %d not extended and at reset value); not extended, not at reset: %v; bank absent from log: %v; quirks %v",
				c.log, c.from, matched, total, matched-len(reset), len(reset), unexplained, missing, r.Quirks)
		})
	}
	t.Logf("companions: %d logs, %d/%d expected PCR values consistent (replayed or at reset)", len(cs), allMatch, allTotal)
}

// TestRealQuirks pins the named quirks and the Secure Boot reading of the logs
// the MANIFEST singles out.
func TestRealQuirks(t *testing.T) {
	root := realDir(t)
	loc3 := uint8(3)
	tests := []struct {
		log      string
		quirks   []Quirk
		locality *uint8
		hcrtm    bool
		sb       SecureBootMode
		sbQuirks []Quirk
		pcr0sha1 string
	}{
		{log: "eventlogs/go-attestation/option_rom_eventlog.bin", quirks: []Quirk{QuirkTrailerRecord}, sb: SecureBootEnabled},
		{log: "eventlogs/go-attestation/short_no_action_eventlog.bin", quirks: []Quirk{QuirkStartupLocality}, locality: &loc3, sb: SecureBootUnknown},
		{log: "eventlogs/go-tpm-tools/glinux-alex.bin", quirks: []Quirk{QuirkStartupLocality}, locality: &loc3, sb: SecureBootDisabled},
		{log: "eventlogs/go-tpm-tools/gdc-host.bin", quirks: []Quirk{QuirkStartupLocality}, locality: &loc3, sb: SecureBootDisabled},
		{log: "eventlogs/go-tpm-tools/eventlogwithsp800155.bin", quirks: []Quirk{QuirkSP800155}, sb: SecureBootEnabled},
		{log: "eventlogs/go-tpm-tools/confidential-gke-debug-251000_eventlog.bin", quirks: []Quirk{QuirkSP800155}, sb: SecureBootEnabled},
		// A fragment: SecureBoot = 1 but no separator, so nothing tells the
		// firmware's record from one appended later.
		{log: "eventlogs/tpm2-tools/fragments/event-uefivar.bin", quirks: []Quirk{QuirkIncompleteBank}, sb: SecureBootUnknown},
		{log: "eventlogs/go-tpm-tools/arch-linux-workstation.bin", sb: SecureBootDisabled, sbQuirks: []Quirk{QuirkSecureBootEmpty}},
		{log: "eventlogs/tpm2-tools/event-arch-linux.bin", sb: SecureBootDisabled, sbQuirks: []Quirk{QuirkSecureBootEmpty}},
		{log: "eventlogs/go-tpm-tools/debian-10.bin", sb: SecureBootEnabled, sbQuirks: []Quirk{QuirkAuthorityTrailingByte}},
		{log: "eventlogs/go-attestation/coreos_36_shielded_vm_no_secure_boot_eventlog.bin", sb: SecureBootDisabled},
		{log: "eventlogs/go-attestation/sb_cert_eventlog.bin", sb: SecureBootEnabled, sbQuirks: []Quirk{QuirkAuthorityTrailingByte}},
		{log: "eventlogs/tpm2-tss/binary_measurements_hcrtm.bin", quirks: []Quirk{QuirkHCRTM}, hcrtm: true,
			pcr0sha1: "15f4e6ca457d1af6bc49511a93ba3500ad69acc5"},
	}
	for _, tc := range tests {
		t.Run(tc.log, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(root, tc.log))
			if err != nil {
				t.Fatal(err)
			}
			l, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range tc.quirks {
				if !slices.Contains(l.Quirks, q) {
					t.Errorf("quirks %v lack %s", l.Quirks, q)
				}
			}
			if (tc.locality == nil) != (l.StartupLocality == nil) || (tc.locality != nil && *tc.locality != *l.StartupLocality) {
				t.Errorf("StartupLocality = %v, want %v", l.StartupLocality, tc.locality)
			}
			if l.HCRTM != tc.hcrtm {
				t.Errorf("HCRTM = %v, want %v", l.HCRTM, tc.hcrtm)
			}
			if tc.pcr0sha1 != "" {
				v, err := l.Replay()
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := v.Get(pcrs.SHA1, 0); hex.EncodeToString(got) != tc.pcr0sha1 {
					t.Errorf("sha1 PCR0 = %x, want %s", got, tc.pcr0sha1)
				}
				return
			}
			sb, err := SecureBoot(l)
			if err != nil {
				t.Fatalf("SecureBoot: %v", err)
			}
			if sb.Mode != tc.sb {
				t.Errorf("Secure Boot = %v, want %v", sb.Mode, tc.sb)
			}
			if !slices.Equal(sb.Quirks, tc.sbQuirks) {
				t.Errorf("Secure Boot quirks = %v, want %v", sb.Quirks, tc.sbQuirks)
			}
		})
	}
}

// TestRealEBSWorkaround: the HP log verifies only through the named
// workaround, and a quote that the workaround does not explain still fails.
func TestRealEBSWorkaround(t *testing.T) {
	root := realDir(t)
	data, err := os.ReadFile(filepath.Join(root, "eventlogs/go-attestation/ebs_event_missing_eventlog.bin"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := hex.DecodeString("31245808d6d35849bc394f6343f2b3ff908ed5e3")
	plain, _ := hex.DecodeString("e5781a2fd49c23a33b16bf0ba5f10efa1aa5d43c")
	v, err := l.Replay()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Get(pcrs.SHA1, 5); !bytes.Equal(got, plain) {
		t.Fatalf("plain PCR5 = %x, want %x", got, plain)
	}
	q := pcrs.Values{}
	q.Set(pcrs.SHA1, 5, good)
	r, err := VerifyAgainst(l, q)
	if err != nil {
		t.Fatalf("VerifyAgainst with workaround: %v", err)
	}
	if !slices.Contains(r.Quirks, QuirkEBSMissing) || slices.Contains(l.Quirks, QuirkEBSMissing) {
		t.Errorf("quirks: replayed %v, log %v", r.Quirks, l.Quirks)
	}
	if got, _ := r.Values.Get(pcrs.SHA1, 5); !bytes.Equal(got, good) {
		t.Errorf("Replayed PCR5 = %x", got)
	}
	// The plain value verifies without the quirk.
	q.Set(pcrs.SHA1, 5, plain)
	if r, err := VerifyAgainst(l, q); err != nil || slices.Contains(r.Quirks, QuirkEBSMissing) {
		t.Errorf("plain PCR5: err %v quirks %v", err, r.Quirks)
	}
	// Anything else is a mismatch naming PCR5.
	bad := bytes.Clone(good)
	bad[0] ^= 1
	q.Set(pcrs.SHA1, 5, bad)
	_, err = VerifyAgainst(l, q)
	var me *MismatchError
	if !errors.As(err, &me) || len(me.Mismatches) != 1 || me.Mismatches[0].PCR != 5 || me.Mismatches[0].Bank != pcrs.SHA1 {
		t.Fatalf("want mismatch on sha1 PCR5, got %v", err)
	}
}

// TestRealLogsFollowThePFP: every real log passes the digest rule and the
// PCR7 grammar and keeps the Secure Boot state its source documents (the
// same state tpmid read before the grammar existed). The quirk counts are
// the figures docs/eventlog.md quotes.
func TestRealLogsFollowThePFP(t *testing.T) {
	e, d, u := SecureBootEnabled, SecureBootDisabled, SecureBootUnknown
	want := map[string]SecureBootMode{
		"eventlogs/go-attestation/coreos_36_shielded_vm_no_secure_boot_eventlog.bin": d,
		"eventlogs/go-attestation/crypto_agile_eventlog.bin":                         d,
		"eventlogs/go-attestation/ebs_event_missing_eventlog.bin":                    d,
		"eventlogs/go-attestation/option_rom_eventlog.bin":                           e,
		"eventlogs/go-attestation/sb_cert_eventlog.bin":                              e,
		"eventlogs/go-attestation/short_no_action_eventlog.bin":                      u,
		"eventlogs/go-tpm-tools/arch-linux-workstation.bin":                          d,
		"eventlogs/go-tpm-tools/confidential-gke-debug-251000_eventlog.bin":          e,
		"eventlogs/go-tpm-tools/cos-101-amd-sev.bin":                                 e,
		"eventlogs/go-tpm-tools/cos-85-amd-sev.bin":                                  e,
		"eventlogs/go-tpm-tools/cos-93-amd-sev.bin":                                  e,
		"eventlogs/go-tpm-tools/debian-10.bin":                                       e,
		"eventlogs/go-tpm-tools/eventlogwithsp800155.bin":                            e,
		"eventlogs/go-tpm-tools/gdc-host.bin":                                        d,
		"eventlogs/go-tpm-tools/glinux-alex.bin":                                     d,
		"eventlogs/go-tpm-tools/rhel8-uefi.bin":                                      e,
		"eventlogs/go-tpm-tools/ubuntu-1804-amd-sev.bin":                             d,
		"eventlogs/go-tpm-tools/ubuntu-2104-no-dbx.bin":                              d,
		"eventlogs/go-tpm-tools/ubuntu-2104-no-secure-boot.bin":                      d,
		"eventlogs/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin":                          d,
		"eventlogs/keylime/binary_bios_measurements-secureboot.bin":                  e,
		"eventlogs/keylime/binary_bios_measurements.bin":                             d,
		"eventlogs/keylime/mb_log.bin":                                               e,
		"eventlogs/tpm2-tools/event-arch-linux.bin":                                  d,
		"eventlogs/tpm2-tools/event-bootorder.bin":                                   d,
		"eventlogs/tpm2-tools/event-moklisttrusted.bin":                              e,
		"eventlogs/tpm2-tools/event-postcode.bin":                                    e,
		"eventlogs/tpm2-tools/event-sd-boot-fedora37.bin":                            d,
		"eventlogs/tpm2-tools/event-uefi-sha1-log.bin":                               d,
		"eventlogs/tpm2-tools/fragments/event-uefiaction.bin":                        u,
		"eventlogs/tpm2-tools/fragments/event-uefiservices.bin":                      u,
		"eventlogs/tpm2-tools/fragments/event-uefivar.bin":                           u, // no separator
		"eventlogs/tpm2-tools/fragments/event.bin":                                   u,
		"eventlogs/tpm2-tss/binary_measurements_hcrtm.bin":                           d,
		"eventlogs/tpm2-tss/binary_measurements_pc_client.bin":                       d,
		"eventlogs/tpm2-tss/fragments/specid-vendordata.bin":                         u,
		"quotes/gce-cos-85/no-nonce/eventlog.bin":                                    e,
		"quotes/gce-cos-85/nonce9009/eventlog.bin":                                   e,
		"quotes/gce-windows-shielded-vm/eventlog.bin":                                e,
		"quotes/lenovo-t490-stm/eventlog":                                            e,
	}
	logs := realLogs(t)
	checked := 0
	quirkLogs := map[Quirk][]string{}
	for _, name := range sortedKeys(logs) {
		l, err := Parse(logs[name])
		if err != nil {
			continue // the deliberately rejected fragment (TestRealLogsParse)
		}
		checked++
		q, err := CheckDigests(l)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		sb, err := SecureBoot(l)
		if err != nil {
			t.Errorf("%s: PCR7 grammar: %v", name, err)
			continue
		}
		for _, x := range append(q, sb.Quirks...) {
			if !slices.Contains(quirkLogs[x], name) {
				quirkLogs[x] = append(quirkLogs[x], name)
			}
		}
		w, ok := want[name]
		if !ok {
			t.Errorf("%s: no expected Secure Boot state (got %v): add it", name, sb.Mode)
		} else if sb.Mode != w {
			t.Errorf("%s: Secure Boot %v (%s), want %v", name, sb.Mode, sb.Why, w)
		}
	}
	if checked != len(want) {
		t.Errorf("checked %d logs, table has %d", checked, len(want))
	}
	wantCounts := map[Quirk]int{QuirkBootVariableDataOnly: 25, QuirkAuthorityTrailingByte: 8, QuirkSecureBootEmpty: 6}
	for q, n := range wantCounts {
		if len(quirkLogs[q]) != n {
			t.Errorf("quirk %s in %d logs, want %d: %v", q, len(quirkLogs[q]), n, quirkLogs[q])
		}
		t.Logf("quirk %s: %d logs %v", q, len(quirkLogs[q]), quirkLogs[q])
	}
	t.Logf("%d real logs pass the digest rule and the PCR7 grammar", checked)
}
