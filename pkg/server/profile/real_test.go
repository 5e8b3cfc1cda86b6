package profile

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// Real logs used below, by path under the real-evidence folder.
const (
	logGDC        = "eventlogs/go-tpm-tools/gdc-host.bin" // 50430 B, Dell server, sha256, StartupLocality
	logArch       = "eventlogs/go-tpm-tools/arch-linux-workstation.bin"
	logArch2      = "eventlogs/tpm2-tools/event-arch-linux.bin" // same workstation, another vmlinuz-linux-lts
	logUbuntuNoSB = "eventlogs/go-tpm-tools/ubuntu-2104-no-secure-boot.bin"
	logUbuntuDBX  = "eventlogs/go-tpm-tools/ubuntu-2104-no-dbx.bin"
	logCentOS     = "eventlogs/keylime/mb_log.bin"
	logRHEL9Mok   = "eventlogs/tpm2-tools/event-moklisttrusted.bin"
	logRHEL8      = "eventlogs/go-tpm-tools/rhel8-uefi.bin"
	logLenovo     = "eventlogs/keylime/binary_bios_measurements.bin"
	logCOS85      = "quotes/gce-cos-85/no-nonce/eventlog.bin"
	logEBS        = "eventlogs/go-attestation/ebs_event_missing_eventlog.bin"
)

// realQuote reads a quote's pcrs.json (or an expected.json's
// expected_pcrs): the values a real TPM reported.
func realQuote(t *testing.T, rel string) pcrs.Values {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(realdata.Dir(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	var j pcrs.JSON
	if strings.HasSuffix(rel, "expected.json") {
		var w struct {
			Expected pcrs.JSON `json:"expected_pcrs"`
		}
		err = json.Unmarshal(b, &w)
		j = w.Expected
	} else {
		err = json.Unmarshal(b, &j)
	}
	if err != nil {
		t.Fatal(err)
	}
	v, err := pcrs.FromJSON(j)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// only keeps the given bank and PCRs of v.
func only(v pcrs.Values, bank pcrs.Alg, list []int) pcrs.Values {
	out := pcrs.Values{}
	for _, i := range list {
		if x, ok := v.Get(bank, i); ok {
			out.Set(bank, i, x)
		}
	}
	return out
}

// TestCaptureAcceptsItsOwnLog: a profile captured from a real log allows
// the boot that log describes (quoted values = its own replay), in every
// kind of log we have: crypto-agile sha1/256/384/sm3, legacy SHA-1, a
// Windows trailer record, SP800-155 no-action records with digests.
func TestCaptureAcceptsItsOwnLog(t *testing.T) {
	tests := []struct {
		log     string
		bank    pcrs.Alg
		pcrs    []int
		digests int // distinct (PCR, digest) pairs captured
	}{
		{logGDC, pcrs.SHA256, pcrRange(0, 9), 137},
		{logLenovo, pcrs.SHA1, pcrRange(0, 9), 107},
		{logRHEL8, pcrs.SHA384, pcrRange(0, 9), 73},
		{"eventlogs/tpm2-tss/binary_measurements_hcrtm.bin", pcrs.SM3, pcrRange(0, 9), 183},
		{"eventlogs/go-tpm-tools/debian-10.bin", pcrs.SHA1, pcrRange(0, 7), 25},
		{"eventlogs/go-attestation/option_rom_eventlog.bin", pcrs.SHA1, pcrRange(0, 7), 46},
		{"eventlogs/go-tpm-tools/confidential-gke-debug-251000_eventlog.bin", pcrs.SHA256, pcrRange(0, 9), 48},
		{logArch, pcrs.SHA256, pcrRange(0, 9), 24},
		{logCOS85, pcrs.SHA256, append(pcrRange(0, 9), 14), 43},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.log)+"/"+tt.bank.String(), func(t *testing.T) {
			l := realLog(t, tt.log)
			p, err := Capture(l, "own", tt.bank, tt.pcrs, RequireSecureBootIfEnabled(), WithBootApplications())
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, e := range p.PCRs[tt.bank] {
				n += len(e.Events)
				for _, ev := range e.Events {
					if ev.Type == eventlog.EvNoAction.String() {
						t.Errorf("EV_NO_ACTION captured: %+v", ev)
					}
				}
			}
			if n != tt.digests {
				t.Errorf("captured %d digests, want %d", n, tt.digests)
			}
			p.Version = 7
			v := Appraise(selfInput(t, l, tt.bank, tt.pcrs), []Profile{*p})
			if !v.Allowed || v.Profile != "own" || v.Version != 7 {
				t.Fatalf("own log refused: %s", v)
			}
		})
	}
}

// TestRealQuotesAllowCapturedProfile: the same against what real TPMs
// quoted (GCE COS 85: 3 banks x 24 PCRs, PCR10 unexplained; GCE Windows:
// SHA-1 legacy log; Lenovo T490: sha256 PCR0-2,4).
func TestRealQuotesAllowCapturedProfile(t *testing.T) {
	tests := []struct {
		log, quote string
		bank       pcrs.Alg
		pcrs       []int
		sb         bool   // secure_boot required captured
		refused    string // a fragment of the denial, "" for allowed
	}{
		{logCOS85, "quotes/gce-cos-85/no-nonce/pcrs.json", pcrs.SHA256, pcrRange(0, 9), true, ""},
		{logCOS85, "quotes/gce-cos-85/nonce9009/pcrs.json", pcrs.SHA384, append(pcrRange(0, 9), pcrRange(11, 23)...), true, ""},
		{logCOS85, "quotes/gce-cos-85/no-nonce/pcrs.json", pcrs.SHA1, pcrRange(0, 7), true, ""},
		{"quotes/gce-windows-shielded-vm/eventlog.bin", "quotes/gce-windows-shielded-vm/pcrs.json", pcrs.SHA1, pcrRange(0, 7), true, ""},
		{"quotes/lenovo-t490-stm/eventlog", "quotes/lenovo-t490-stm/pcrs.json", pcrs.SHA256, []int{0, 1, 2, 4}, true,
			// The log says enabled, but the T490's quote has no PCR7.
			"secure_boot: Secure Boot state unknown: PCR7 was not quoted"},
	}
	for _, tt := range tests {
		t.Run(tt.quote+"/"+tt.bank.String(), func(t *testing.T) {
			l := realLog(t, tt.log)
			quoted := only(realQuote(t, tt.quote), tt.bank, tt.pcrs)
			in := inputFor(t, l, quoted)
			p, err := Capture(l, "real", tt.bank, tt.pcrs, WithValues(quoted), RequireSecureBootIfEnabled())
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Rules.SecureBoot == SecureBootRequired; got != tt.sb {
				t.Errorf("secure_boot required = %v, want %v", got, tt.sb)
			}
			v := Appraise(in, []Profile{*p})
			switch {
			case tt.refused == "" && !v.Allowed:
				t.Fatalf("refused: %s", v)
			case tt.refused != "" && (v.Allowed || !strings.HasSuffix(v.String(), tt.refused)):
				t.Fatalf("verdict %s, want refused with %q", v, tt.refused)
			}
		})
	}
}

// TestOtherMachineRefused: a profile captured on one machine refuses
// another machine's boot and names exactly the events it does not know.
func TestOtherMachineRefused(t *testing.T) {
	type ev struct {
		pcr, event int
		typ        string
	}
	tests := []struct {
		name        string
		from, other string
		pcrs        []int
		count       int
		want        []ev // when given, the exact list
	}{
		{"gce-ubuntu-2104 other VM, PCR0-7", logUbuntuNoSB, logUbuntuDBX, pcrRange(0, 7), 4, []ev{
			{1, 10, "EV_EFI_VARIABLE_BOOT"},
			{4, 23, "EV_EFI_BOOT_SERVICES_APPLICATION"},
			{5, 22, "EV_EFI_GPT_EVENT"},
			{7, 7, "EV_EFI_VARIABLE_DRIVER_CONFIG"},
		}},
		{"gce-ubuntu-2104 other VM, PCR0-9", logUbuntuNoSB, logUbuntuDBX, pcrRange(0, 9), 23, nil},
		{"centos VM vs rhel9 VM, PCR0-9", logCentOS, logRHEL9Mok, pcrRange(0, 9), 39, nil},
		{"dell server vs lenovo laptop, PCR0-9", logGDC, logLenovo, pcrRange(0, 9), 85, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Capture(realLog(t, tt.from), "from", pcrs.SHA256, tt.pcrs)
			if err != nil {
				t.Fatal(err)
			}
			other := realLog(t, tt.other)
			v := Appraise(selfInput(t, other, pcrs.SHA256, tt.pcrs), []Profile{*p})
			if v.Allowed || len(v.Denials) != 1 {
				t.Fatalf("verdict %s", v)
			}
			d := v.Denials[0]
			if len(d.Failed) != 0 {
				t.Errorf("failed checks %+v, want only unrecognised events", d.Failed)
			}
			if len(d.Unrecognised) != tt.count {
				t.Errorf("%d unrecognised events, want %d: %s", len(d.Unrecognised), tt.count, d)
			}
			for i, u := range d.Unrecognised {
				e := other.Events[u.Event]
				if int(e.PCR) != u.PCR || u.Type != e.Type.String() || u.Digest != hexLower(e.Digests[pcrs.SHA256]) || u.Bank != "sha256" {
					t.Errorf("unrecognised %+v does not describe event %d", u, u.Event)
				}
				if tt.want != nil && i < len(tt.want) && (tt.want[i] != ev{u.PCR, u.Event, u.Type}) {
					t.Errorf("unrecognised[%d] = %v, want %v", i, ev{u.PCR, u.Event, u.Type}, tt.want[i])
				}
			}
		})
	}
}

// TestKernelUpdateRefused: the same Arch workstation after a kernel update
// (the two real logs differ only in PCR4's second boot application) is
// refused, naming that one event, by the PCR4 list, boot_applications and
// kernels alike.
func TestKernelUpdateRefused(t *testing.T) {
	p, err := Capture(realLog(t, logArch), "arch", pcrs.SHA256, pcrRange(0, 7), WithBootApplications(), WithKernels())
	if err != nil {
		t.Fatal(err)
	}
	l := realLog(t, logArch2)
	v := Appraise(selfInput(t, l, pcrs.SHA256, pcrRange(0, 7)), []Profile{*p})
	if v.Allowed {
		t.Fatal("allowed another kernel")
	}
	d := v.Denials[0]
	check := func(what string, refs []EventRef) {
		t.Helper()
		if len(refs) != 1 || refs[0].Event != 23 || refs[0].PCR != 4 || refs[0].Type != "EV_EFI_BOOT_SERVICES_APPLICATION" ||
			!strings.HasSuffix(refs[0].Description, `\vmlinuz-linux-lts`) {
			t.Errorf("%s: %+v, want event 23 (\\vmlinuz-linux-lts) only", what, refs)
		}
	}
	check("unrecognised", d.Unrecognised)
	var rules []string
	for _, f := range d.Failed {
		rules = append(rules, f.Rule)
		check(f.Rule, f.Events)
	}
	if !slices.Equal(rules, []string{RuleBootApplications, RuleKernels}) {
		t.Errorf("failed rules %v", rules)
	}
	// Rules alone (no PCR list) refuse it too.
	p.PCRs = nil
	if v := Appraise(selfInput(t, l, pcrs.SHA256, pcrRange(0, 7)), []Profile{*p}); v.Allowed || len(v.Denials[0].Failed) != 2 {
		t.Errorf("rules-only profile: %s", v)
	}
}

// TestKernelEvents pins how kernels are recognised in real logs.
func TestKernelEvents(t *testing.T) {
	tests := []struct {
		log    string
		pcrs   []int
		source string
		events []int
		desc   string
	}{
		{logGDC, pcrRange(0, 9), KernelsFromGRUB, []int{151}, `"/vmlinuz-6.9.0-rc7+"`},
		{logCentOS, pcrRange(0, 9), KernelsFromGRUB, []int{94}, `"(hd0,gpt2)/vmlinuz-5.14.0-183.el9.x86_64"`},
		{logRHEL8, pcrRange(0, 9), KernelsFromGRUB, []int{76}, `"grub_linuxefi Kernel"`},
		{logRHEL8, pcrRange(0, 7), KernelsFromLastPCR4, []int{77}, ""}, // shim's LoadImage of the kernel
		{logArch, pcrRange(0, 7), KernelsFromLastPCR4, []int{23}, `\vmlinuz-linux-lts`},
		{logArch, pcrRange(0, 9), KernelsFromLastPCR4, []int{23}, `\vmlinuz-linux-lts`},            // systemd-boot: no GRUB cmdline
		{logUbuntuNoSB, pcrRange(0, 7), KernelsFromLastPCR4, []int{27}, `\EFI\ubuntu\grubx64.efi`}, // Secure Boot off, PCR8/9 not quoted: GRUB
		{logUbuntuNoSB, pcrRange(0, 9), KernelsFromGRUB, []int{95}, `"/boot/vmlinuz-5.11.0-1006-gcp"`},
		{"eventlogs/tpm2-tools/event-sd-boot-fedora37.bin", pcrRange(0, 9), "", nil, ""},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.log), func(t *testing.T) {
			l := realLog(t, tt.log)
			ev, src, why := KernelEvents(l, pcrs.SHA256, func(i int) bool { return slices.Contains(tt.pcrs, i) })
			if src != tt.source || !slices.Equal(ev, tt.events) {
				t.Fatalf("kernels %v from %q (%s), want %v from %q", ev, src, why, tt.events, tt.source)
			}
			if len(ev) > 0 && !strings.HasSuffix(describe(l, &l.Events[ev[0]]), tt.desc) {
				t.Errorf("description %q, want suffix %q", describe(l, &l.Events[ev[0]]), tt.desc)
			}
			if len(ev) == 0 && why == "" {
				t.Error("no reason given")
			}
		})
	}
}

// TestSecureBootRule: secure_boot "required" allows only a verified
// enabled state.
func TestSecureBootRule(t *testing.T) {
	sb := []Profile{{Name: "sb", Version: 2, Rules: Rules{SecureBoot: SecureBootRequired}}}
	cos := realQuote(t, "quotes/gce-cos-85/no-nonce/pcrs.json")
	tests := []struct {
		name string
		in   func(t *testing.T) Input
		want string // "" allowed, else a fragment of the reason
	}{
		{"real quote, enabled", func(t *testing.T) Input {
			return inputFor(t, realLog(t, logCOS85), only(cos, pcrs.SHA256, pcrRange(0, 9)))
		}, ""},
		{"real log, PCR7 not quoted: unknown", func(t *testing.T) Input {
			return inputFor(t, realLog(t, logCOS85), only(cos, pcrs.SHA256, []int{0, 1, 2, 3, 4, 5, 6}))
		}, "Secure Boot state unknown: PCR7 was not quoted"},
		{"disabled", func(t *testing.T) Input {
			return selfInput(t, realLog(t, logUbuntuNoSB), pcrs.SHA256, pcrRange(0, 7))
		}, "Secure Boot is disabled"},
		{"disabled, empty SecureBoot variable", func(t *testing.T) Input {
			return selfInput(t, realLog(t, logArch), pcrs.SHA256, pcrRange(0, 7))
		}, "Secure Boot is disabled"},
		{"PCR7 without separator: unknown", func(t *testing.T) Input {
			return selfInput(t, realLog(t, "eventlogs/tpm2-tools/fragments/event-uefivar.bin"), pcrs.SHA256, []int{7})
		}, "Secure Boot state unknown: PCR7 has no separator"},
		{"no state given", func(t *testing.T) Input {
			in := inputFor(t, realLog(t, logCOS85), only(cos, pcrs.SHA256, pcrRange(0, 9)))
			in.SecureBoot = nil
			return in
		}, "not established"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Appraise(tt.in(t), sb)
			if tt.want == "" {
				if !v.Allowed || v.Profile != "sb" || v.Version != 2 {
					t.Fatalf("verdict %s", v)
				}
				return
			}
			if v.Allowed || len(v.Denials[0].Failed) != 1 || v.Denials[0].Failed[0].Rule != RuleSecureBoot ||
				!strings.Contains(v.Denials[0].Failed[0].Reason, tt.want) {
				t.Fatalf("verdict %s, want secure_boot failure %q", v, tt.want)
			}
		})
	}
}

// TestExactValues: pinned PCR values are compared with the quote, not the
// log; a value-only profile needs no log at all.
func TestExactValues(t *testing.T) {
	l := realLog(t, logCOS85)
	quoted := only(realQuote(t, "quotes/gce-cos-85/no-nonce/pcrs.json"), pcrs.SHA256, pcrRange(0, 7))
	p, err := Capture(l, "values", pcrs.SHA256, pcrRange(0, 7), WithValues(quoted))
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range p.PCRs[pcrs.SHA256] { // keep the values only
		e.Events = nil
		p.PCRs[pcrs.SHA256][i] = e
	}
	changed := pcrs.Values{}
	for _, i := range pcrRange(0, 7) {
		v, _ := quoted.Get(pcrs.SHA256, i)
		if i == 4 {
			v = append([]byte{v[0] ^ 1}, v[1:]...)
		}
		changed.Set(pcrs.SHA256, i, v)
	}
	tests := []struct {
		name string
		in   Input
		rule string // "" allowed
	}{
		{"quoted values", inputFor(t, l, quoted), ""},
		{"quoted values, no log", Input{Quoted: quoted}, ""},
		{"PCR4 differs", Input{Quoted: changed}, RuleValue},
		{"PCR4 not quoted", Input{Quoted: only(quoted, pcrs.SHA256, []int{0, 1, 2, 3, 5, 6, 7})}, RulePCR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Appraise(tt.in, []Profile{*p})
			if tt.rule == "" {
				if !v.Allowed {
					t.Fatalf("refused: %s", v)
				}
				return
			}
			if v.Allowed || len(v.Denials[0].Failed) != 1 || v.Denials[0].Failed[0].Rule != tt.rule ||
				!strings.Contains(v.Denials[0].Failed[0].Reason, "sha256 PCR4") {
				t.Fatalf("verdict %s, want one %s failure on PCR4", v, tt.rule)
			}
		})
	}

	// The HP log that lacks ExitBootServices: its own replay is not what
	// the TPM quoted for PCR5, the verified replay (with the workaround) is.
	ebs := realLog(t, logEBS)
	q5 := only(realQuote(t, "eventlogs/go-attestation/ebs_event_missing_eventlog.expected.json"), pcrs.SHA1, []int{5})
	in := inputFor(t, ebs, q5)
	fromReplay, err := Capture(ebs, "replay", pcrs.SHA1, []int{5}, WithReplayedValues())
	if err != nil {
		t.Fatal(err)
	}
	if v := Appraise(in, []Profile{*fromReplay}); v.Allowed || v.Denials[0].Failed[0].Rule != RuleValue {
		t.Errorf("plain replay value allowed: %s", v)
	}
	fromVerified, err := Capture(ebs, "verified", pcrs.SHA1, []int{5}, WithValues(in.Replayed.Values))
	if err != nil {
		t.Fatal(err)
	}
	if v := Appraise(in, []Profile{*fromVerified}); !v.Allowed {
		t.Errorf("verified replay value refused: %s", v)
	}
}

// TestUnverifiedPCRNotTrusted: digests are compared only in PCRs that
// replayed to the quote. A PCR whose log does not match the quote, that is
// not quoted, or that the log never explains is refused with the reason,
// even when every digest the log shows there is in the profile.
func TestUnverifiedPCRNotTrusted(t *testing.T) {
	l := realLog(t, logGDC)
	p, err := Capture(l, "gdc", pcrs.SHA256, pcrRange(0, 9))
	if err != nil {
		t.Fatal(err)
	}
	own := quoteOf(t, l, pcrs.SHA256, pcrRange(0, 9))

	// The TPM's PCR4 is not what the log says (an edited log, or a boot
	// application the log hides): the log's PCR4 events all look allowed.
	tampered := pcrs.Values{}
	for _, i := range pcrRange(0, 9) {
		v, _ := own.Get(pcrs.SHA256, i)
		if i == 4 {
			v = make([]byte, 32)
			v[0] = 0x42
		}
		tampered.Set(pcrs.SHA256, i, v)
	}
	r, err := eventlog.VerifyAgainst(l, tampered)
	var mm *eventlog.MismatchError
	if !errors.As(err, &mm) || slices.Contains(r.Verified[pcrs.SHA256], 4) {
		t.Fatalf("VerifyAgainst = %v; verified %v", err, r.Verified)
	}

	cos := realLog(t, logCOS85)
	cosQuote := only(realQuote(t, "quotes/gce-cos-85/no-nonce/pcrs.json"), pcrs.SHA256, pcrRange(0, 23))
	pcr10 := Profile{Name: "ima", PCRs: map[pcrs.Alg]map[int]PCR{pcrs.SHA256: {10: {Events: map[string]Event{strings.Repeat("ab", 32): {}}}}}}

	tests := []struct {
		name    string
		in      Input
		profile Profile
		reason  string
	}{
		{"PCR4 does not replay to the quote", Input{Log: l, Replayed: r, Quoted: tampered}, *p,
			"sha256 PCR4: the event log does not replay to the quoted value, so its events are not trusted"},
		{"PCR8,9 not quoted", selfInput(t, l, pcrs.SHA256, pcrRange(0, 7)), *p,
			"sha256 PCR8 is in the profile but was not quoted"},
		{"real quote, PCR10 (IMA) not in the log", inputFor(t, cos, cosQuote), pcr10,
			"sha256 PCR10: the event log does not replay to the quoted value"},
		{"replay without its log", Input{Replayed: r, Quoted: own}, *p,
			"sha256 PCR0: the event log does not replay"},
		{"quote only", Input{Quoted: own}, *p, "sha256 PCR0: the event log does not replay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Appraise(tt.in, []Profile{tt.profile})
			if v.Allowed {
				t.Fatal("allowed")
			}
			d := v.Denials[0]
			if len(d.Unrecognised) != 0 {
				t.Errorf("unrecognised events reported from unverified PCRs: %v", d.Unrecognised)
			}
			if len(d.Failed) == 0 || d.Failed[0].Rule != RulePCR || !strings.Contains(d.Failed[0].Reason, tt.reason) {
				t.Errorf("failures %+v, want %q", d.Failed, tt.reason)
			}
		})
	}
	// With the real quote, the profile is allowed as soon as PCR4 is right.
	if v := Appraise(Input{Log: l, Replayed: mustVerify(t, l, own), Quoted: own}, []Profile{*p}); !v.Allowed {
		t.Errorf("untampered refused: %s", v)
	}
}

func mustVerify(t *testing.T, l *eventlog.Log, q pcrs.Values) *eventlog.Replayed {
	t.Helper()
	r, err := eventlog.VerifyAgainst(l, q)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestProposedFrom: the boot just seen, as a profile, covers exactly the
// PCRs the real quote bound, allows that boot, and survives JSON.
func TestProposedFrom(t *testing.T) {
	l := realLog(t, logCOS85)
	quoted := realQuote(t, "quotes/gce-cos-85/no-nonce/pcrs.json") // 3 banks x 24 PCRs
	in := inputFor(t, l, quoted)
	p := ProposedFrom(in, "proposed-cos85")
	if p == nil {
		t.Fatal("nothing proposed")
	}
	if p.Rules.SecureBoot != SecureBootRequired {
		t.Error("secure_boot not required although the verified state is enabled")
	}
	want := append(pcrRange(0, 9), pcrRange(11, 23)...) // PCR10 (IMA) is unexplained by the log
	for _, bank := range []pcrs.Alg{pcrs.SHA1, pcrs.SHA256, pcrs.SHA384} {
		got := sortedKeys(p.PCRs[bank])
		if !slices.Equal(got, want) {
			t.Errorf("%s PCRs %v, want %v", bank, got, want)
		}
		if e := p.PCRs[bank][17]; e.Value != strings.Repeat("f", 2*bank.Size()) || len(e.Events) != 0 {
			t.Errorf("%s PCR17 = %+v, want its reset value", bank, e)
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseProfile(b)
	if err != nil {
		t.Fatal(err)
	}
	if v := Appraise(in, []Profile{*back}); !v.Allowed {
		t.Fatalf("proposal refuses the boot it came from: %s", v)
	}
	if ProposedFrom(Input{Quoted: quoted}, "x") != nil || ProposedFrom(in, "bad name") != nil {
		t.Error("proposed without a log, or with an invalid name")
	}
	// Secure Boot comes from the verified state only, never from the log.
	in.SecureBoot = nil
	if p := ProposedFrom(in, "unverified-sb"); p == nil || p.Rules.SecureBoot != "" {
		t.Errorf("secure_boot proposed without a verified state: %+v", p)
	}
}
