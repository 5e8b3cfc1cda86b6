package profile

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

const (
	hexA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	hexB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	hexC = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

// golden is the JSON form of goldenProfile, byte for byte: the form is
// stable (sorted keys, no spaces) and documented in docs/profiles.md.
const golden = `{"format":1,"name":"web-fleet","pcrs":{"sha256":{"0":{"value":"` + hexA + `"},` +
	`"4":{"events":{"` + hexB + `":{"type":"EV_EFI_BOOT_SERVICES_APPLICATION","description":"\\EFI\\BOOT\\BOOTX64.EFI"}}}}},` +
	`"rules":{"secure_boot":"required","kernels":{"sha256":{"` + hexC + `":{"type":"EV_IPL","description":"\"/vmlinuz-6.8.0\""}}}}}`

func goldenProfile() Profile {
	return Profile{
		Name: "web-fleet",
		PCRs: map[pcrs.Alg]map[int]PCR{pcrs.SHA256: {
			0: {Value: hexA},
			4: {Events: map[string]Event{hexB: {Type: "EV_EFI_BOOT_SERVICES_APPLICATION", Description: `\EFI\BOOT\BOOTX64.EFI`}}},
		}},
		Rules: Rules{SecureBoot: SecureBootRequired,
			Kernels: map[pcrs.Alg]map[string]Event{pcrs.SHA256: {hexC: {Type: "EV_IPL", Description: `"/vmlinuz-6.8.0"`}}}},
	}
}

func TestJSONRoundTrip(t *testing.T) {
	b, err := json.Marshal(goldenProfile())
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != golden {
		t.Fatalf("JSON form changed:\n got %s\nwant %s", b, golden)
	}
	// Every real capture, with every rule, round-trips exactly.
	for _, tt := range []struct {
		log  string
		bank pcrs.Alg
	}{{logGDC, pcrs.SHA256}, {logRHEL8, pcrs.SHA384}, {"eventlogs/go-tpm-tools/debian-10.bin", pcrs.SHA1}, {logCentOS, pcrs.SHA256}} {
		p, err := Capture(realLog(t, tt.log), "rt", tt.bank, pcrRange(0, 9), WithReplayedValues(),
			RequireSecureBootIfEnabled(), WithBootApplications(), WithKernels())
		if err != nil {
			t.Fatalf("%s: %v", tt.log, err)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseProfile(b)
		if err != nil {
			t.Fatalf("%s: %v", tt.log, err)
		}
		if !reflect.DeepEqual(back, p) {
			t.Errorf("%s: round trip differs", tt.log)
		}
		var viaUnmarshal Profile
		if err := json.Unmarshal(b, &viaUnmarshal); err != nil || !reflect.DeepEqual(&viaUnmarshal, p) {
			t.Errorf("%s: json.Unmarshal: %v", tt.log, err)
		}
		b2, _ := json.Marshal(back)
		if !bytes.Equal(b, b2) {
			t.Errorf("%s: second marshal differs", tt.log)
		}
	}
	// "events": {} is the same as no events.
	p0, err := ParseProfile([]byte(strings.Replace(golden, `{"value":"`+hexA+`"}`, `{"value":"`+hexA+`","events":{}}`, 1)))
	if err != nil || !reflect.DeepEqual(*p0, goldenProfile()) {
		t.Errorf("empty events: %v", err)
	}
	// Upper-case hex is accepted and stored lowercase.
	p, err := ParseProfile([]byte(strings.ReplaceAll(golden, hexA, strings.ToUpper(hexA))))
	if err != nil || p.PCRs[pcrs.SHA256][0].Value != hexA {
		t.Errorf("upper-case value: %v", err)
	}
}

func TestParseProfileRejects(t *testing.T) {
	big := `{"format":1,"name":"x","pcrs":{"sha256":{"0":{"value":"` + hexA + `"}}},"pad":"` + strings.Repeat("x", MaxSize) + `"}`
	tests := []struct {
		name, in, want string
	}{
		{"oversize", big, "exceeds the size limit"},
		{"unknown top-level field", `{"format":1,"name":"x","pcr":{}}`, `unknown field "pcr"`},
		{"unknown PCR field", strings.Replace(golden, `{"value":`, `{"digest":"00","value":`, 1), `unknown field "digest"`},
		{"unknown event field", strings.Replace(golden, `{"type":"EV_EFI_BOOT`, `{"pcr":4,"type":"EV_EFI_BOOT`, 1), `unknown field "pcr"`},
		{"unknown rule", strings.Replace(golden, `"secure_boot"`, `"debug":"off","secure_boot"`, 1), `unknown field "debug"`},
		{"bad hex digest", strings.Replace(golden, hexB, "z"+hexB[1:], 1), "not lowercase hex"},
		{"short digest", strings.Replace(golden, hexB, hexB[2:], 1), "62 hex digits, want 64"},
		{"sha1-sized digest in sha256", strings.Replace(golden, hexB, hexB[:40], 1), "40 hex digits, want 64"},
		{"0x prefix", strings.Replace(golden, hexA, "0x"+hexA[2:], 1), "not lowercase hex"},
		{"PCR 24", strings.Replace(golden, `"4":{`, `"24":{`, 1), `PCR index "24"`},
		{"PCR -1", strings.Replace(golden, `"4":{`, `"-1":{`, 1), `PCR index "-1"`},
		{"PCR 04", strings.Replace(golden, `"4":{`, `"04":{`, 1), `PCR index "04"`},
		{"PCR x", strings.Replace(golden, `"4":{`, `"x":{`, 1), `PCR index "x"`},
		{"bank SHA256", strings.Replace(golden, `"pcrs":{"sha256"`, `"pcrs":{"SHA256"`, 1), `bank "SHA256"`},
		{"bank md5", strings.Replace(golden, `"pcrs":{"sha256"`, `"pcrs":{"md5"`, 1), `bank "md5"`},
		{"bank in a rule", strings.Replace(golden, `"kernels":{"sha256"`, `"kernels":{"sha-256"`, 1), `bank "sha-256"`},
		{"format 2", strings.Replace(golden, `"format":1`, `"format":2`, 1), "format 2, want 1"},
		{"no format", strings.Replace(golden, `"format":1,`, ``, 1), "format 0, want 1"},
		{"no name", strings.Replace(golden, `"name":"web-fleet"`, `"name":""`, 1), "name must be"},
		{"name with @", strings.Replace(golden, `web-fleet`, `web@2`, 1), "only letters"},
		{"neither value nor events", strings.Replace(golden, `{"value":"`+hexA+`"}`, `{}`, 1), "neither a value nor events"},
		{"secure_boot maybe", strings.Replace(golden, `"required"`, `"maybe"`, 1), `"maybe"`},
		{"empty kernels list", strings.Replace(golden, `{"`+hexC+`":{"type":"EV_IPL","description":"\"/vmlinuz-6.8.0\""}}`, `{}`, 1), "empty list"},
		{"nothing to check", `{"format":1,"name":"x"}`, "checks nothing"},
		{"duplicate key", strings.Replace(golden, `"name":"web-fleet"`, `"name":"web-fleet","name":"other"`, 1), `"name" appears twice`},
		{"duplicate PCR", strings.Replace(golden, `"4":{`, `"0":{"value":"`+hexB+`"},"4":{`, 1), `"0" appears twice`},
		{"digest twice in two cases", strings.Replace(golden, `"`+hexB+`":{`, `"`+strings.ToUpper(hexB)+`":{},"`+hexB+`":{`, 1), "listed twice"},
		{"control character", strings.Replace(golden, `\\EFI\\BOOT`, `\u001b[2J`, 1), "control characters"},
		{"long description", strings.Replace(golden, `\\EFI\\BOOT`, strings.Repeat("d", MaxDescription), 1), "description longer"},
		{"trailing data", golden + ` {}`, "after the profile"},
		{"deep nesting", `{"format":1,"name":"x","pcrs":` + strings.Repeat(`[`, 100000), "nested deeper than 16"},
		{"not an object", `[1]`, "invalid profile"},
		{"truncated", golden[:len(golden)-1], "invalid profile"},
		{"empty", ``, "invalid profile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseProfile([]byte(tt.in))
			if err == nil {
				t.Fatalf("accepted: %+v", p)
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Errorf("error %v is neither ErrInvalid nor ErrTooLarge", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want %q", err, tt.want)
			}
		})
	}
}

// TestHandBuiltProfilesFailClosed: a Profile built in Go that Validate
// refuses is never marshalled, and Appraise refuses every boot with it.
func TestHandBuiltProfilesFailClosed(t *testing.T) {
	l := realLog(t, logGDC)
	in := selfInput(t, l, pcrs.SHA256, pcrRange(0, 9))
	good, err := Capture(l, "good", pcrs.SHA256, pcrRange(0, 9))
	if err != nil {
		t.Fatal(err)
	}
	upper := map[string]Event{}
	for d, e := range good.PCRs[pcrs.SHA256][4].Events {
		upper[strings.ToUpper(d)] = e
	}
	tests := []struct {
		name string
		p    Profile
	}{
		{"empty", Profile{Name: "empty"}},
		{"unknown bank", Profile{Name: "u", PCRs: map[pcrs.Alg]map[int]PCR{pcrs.Alg(0x99): {0: {Value: hexA}}}}},
		{"PCR 24", Profile{Name: "p", PCRs: map[pcrs.Alg]map[int]PCR{pcrs.SHA256: {24: {Value: hexA}}}}},
		{"empty entry", Profile{Name: "e", PCRs: map[pcrs.Alg]map[int]PCR{pcrs.SHA256: {4: {}}}}},
		{"upper-case digests", Profile{Name: "up", PCRs: map[pcrs.Alg]map[int]PCR{pcrs.SHA256: {4: {Events: upper}}}}},
		{"secure_boot typo", Profile{Name: "sb", Rules: Rules{SecureBoot: "requried"}}},
		{"empty rule list", Profile{Name: "r", Rules: Rules{BootApplications: map[pcrs.Alg]map[string]Event{pcrs.SHA256: {}}}}},
		{"rule with unknown bank", Profile{Name: "r", Rules: Rules{Kernels: map[pcrs.Alg]map[string]Event{pcrs.Alg(7): {hexA: {}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.p.Validate(); !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate = %v", err)
			}
			if _, err := json.Marshal(tt.p); err == nil {
				t.Error("marshalled")
			}
			if v := Appraise(in, []Profile{tt.p}); v.Allowed {
				t.Errorf("allowed: %s", v)
			}
		})
	}
	if v := Appraise(in, []Profile{*good}); !v.Allowed {
		t.Fatalf("good profile refused: %s", v)
	}
}

// imageLoad encodes UEFI_IMAGE_LOAD_EVENT with a file-path device path.
func imageLoad(path string) []byte {
	var dp bytes.Buffer
	name := utf16.Encode([]rune(path + "\x00"))
	dp.Write([]byte{4, 4})
	binary.Write(&dp, binary.LittleEndian, uint16(4+2*len(name)))
	binary.Write(&dp, binary.LittleEndian, name)
	dp.Write([]byte{0x7f, 0xff, 4, 0})
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, []uint64{0x1000, 0x2000, 0, uint64(dp.Len())})
	b.Write(dp.Bytes())
	return b.Bytes()
}

// syntheticBoot writes a small UEFI boot with eventlog.Builder: Secure Boot
// on, shim and GRUB in PCR4, then extra (if any) as one more PCR4 record
// labelled typ.
func syntheticBoot(t *testing.T, extra string, typ eventlog.EventType) *eventlog.Log {
	t.Helper()
	b, err := eventlog.NewBuilder(pcrs.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	app := func(name string, typ eventlog.EventType) {
		h := sha256.Sum256([]byte("authenticode of " + name))
		if err := b.ExtendDigest(4, typ, map[pcrs.Alg][]byte{pcrs.SHA256: h[:]}, imageLoad(name)); err != nil {
			t.Fatal(err)
		}
	}
	b.StartupLocality(0)
	b.Extend(0, eventlog.EvSCRTMVersion, []byte("1\x00.\x000\x00\x00\x00"))
	b.Extend(7, eventlog.EvEFIVariableDriverConf, eventlog.EFIVariableData(eventlog.EFIGlobalVariable, "SecureBoot", []byte{1}))
	b.Extend(4, eventlog.EvEFIAction, []byte("Calling EFI Application from Boot Option"))
	for pcr := uint32(0); pcr <= 7; pcr++ {
		b.Extend(pcr, eventlog.EvSeparator, []byte{0, 0, 0, 0})
	}
	app(`\EFI\BOOT\BOOTX64.EFI`, eventlog.EvEFIBootServicesApp)
	app(`\EFI\BOOT\grubx64.efi`, eventlog.EvEFIBootServicesApp)
	if extra != "" {
		app(extra, typ)
	}
	if err := b.Err(); err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestSyntheticExtraBootApplication: one unknown digest in PCR4 is refused,
// naming exactly that event, by the PCR4 list and by both rules, whatever
// the record claims to be.
func TestSyntheticExtraBootApplication(t *testing.T) {
	base := syntheticBoot(t, "", 0)
	p, err := Capture(base, "synthetic", pcrs.SHA256, pcrRange(0, 7),
		RequireSecureBootIfEnabled(), WithBootApplications(), WithKernels())
	if err != nil {
		t.Fatal(err)
	}
	if p.Rules.SecureBoot != SecureBootRequired || len(p.Rules.BootApplications[pcrs.SHA256]) != 2 {
		t.Fatalf("rules %+v", p.Rules)
	}
	if v := Appraise(selfInput(t, base, pcrs.SHA256, pcrRange(0, 7)), []Profile{*p}); !v.Allowed {
		t.Fatalf("base boot refused: %s", v)
	}
	evil := sha256.Sum256([]byte(`authenticode of \EFI\BOOT\evil.efi`))
	for _, typ := range []eventlog.EventType{eventlog.EvEFIBootServicesApp, eventlog.EvEventTag, eventlog.EvIPL} {
		t.Run(typ.String(), func(t *testing.T) {
			l := syntheticBoot(t, `\EFI\BOOT\evil.efi`, typ)
			last := len(l.Events) - 1
			want := EventRef{Bank: "sha256", PCR: 4, Event: last, Type: typ.String(), Digest: hexLower(evil[:])}
			v := Appraise(selfInput(t, l, pcrs.SHA256, pcrRange(0, 7)), []Profile{*p})
			if v.Allowed {
				t.Fatal("allowed")
			}
			d := v.Denials[0]
			strip := func(r EventRef) EventRef { r.Description = ""; return r }
			if len(d.Unrecognised) != 1 || strip(d.Unrecognised[0]) != want {
				t.Fatalf("unrecognised %+v, want exactly %+v", d.Unrecognised, want)
			}
			if typ == eventlog.EvEFIBootServicesApp && d.Unrecognised[0].Description != `\EFI\BOOT\evil.efi` {
				t.Errorf("description %q", d.Unrecognised[0].Description)
			}
			if len(d.Failed) != 2 {
				t.Fatalf("failed %+v, want boot_applications and kernels", d.Failed)
			}
			for _, f := range d.Failed {
				if len(f.Events) != 1 || strip(f.Events[0]) != want {
					t.Errorf("%s names %+v, want exactly event %d", f.Rule, f.Events, last)
				}
			}
		})
	}
}

// TestVerdictForms: a verdict is one bounded line and round-trips JSON.
func TestVerdictForms(t *testing.T) {
	in, profiles := benchSetup(t)
	v := Appraise(in, profiles[:len(profiles)-1]) // the 9 that deny
	if v.Allowed || len(v.Denials) != 9 {
		t.Fatalf("verdict %s", v)
	}
	s := v.String()
	if strings.ContainsAny(s, "\n\r") || len(s) > 4096 {
		t.Errorf("log line of %d bytes (or with a newline): %s", len(s), s)
	}
	if !strings.HasPrefix(s, `denied by 9 profile(s): "other-0" version 1: `) || !strings.HasSuffix(s, " more profile(s)") {
		t.Errorf("line %s", s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var back Verdict
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, v) {
		t.Errorf("verdict JSON round trip: %v", err)
	}
	ok := Appraise(in, profiles)
	if !ok.Allowed || ok.Profile != "gdc-host" || ok.Version != 3 || ok.String() != `allowed by profile "gdc-host" version 3` {
		t.Errorf("verdict %s", ok)
	}
	if none := Appraise(in, nil); none.Allowed || none.String() != "denied: no profile to appraise against" {
		t.Errorf("no profiles: %s", none)
	}
	// Descriptions from the log cannot break the line.
	r := EventRef{Bank: "sha256", Type: "EV_IPL", Digest: hexA, Description: "a\nb\x1b[2J" + strings.Repeat("x", 100)}
	if s := r.String(); strings.ContainsAny(s, "\n\x1b") || len(s) > 200 {
		t.Errorf("event line %q", s)
	}
}
