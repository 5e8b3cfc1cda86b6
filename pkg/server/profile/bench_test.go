package profile

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// benchSetup is a ~50 KB real event log (gdc-host.bin: 50430 bytes, 159
// records, a Dell server booting Ubuntu with GRUB) quoted in sha256 PCR0-9,
// and a 10-profile policy: 9 profiles captured from other real machines
// (each refuses, with many unrecognised events), then the matching one.
func benchSetup(tb testing.TB) (Input, []Profile) {
	tb.Helper()
	bank, list := pcrs.SHA256, pcrRange(0, 9)
	others := []string{logArch, logCOS85, "eventlogs/go-tpm-tools/cos-93-amd-sev.bin", logUbuntuNoSB, logUbuntuDBX,
		logCentOS, logRHEL9Mok, logLenovo, logRHEL8}
	var profiles []Profile
	for i, name := range others {
		p, err := Capture(realLog(tb, name), fmt.Sprintf("other-%d", i), bank, list,
			RequireSecureBootIfEnabled(), WithBootApplications(), WithKernels())
		if err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		p.Version = 1
		profiles = append(profiles, *p)
	}
	l := realLog(tb, logGDC)
	p, err := Capture(l, "gdc-host", bank, list, WithBootApplications(), WithKernels())
	if err != nil {
		tb.Fatal(err)
	}
	p.Version = 3
	return selfInput(tb, l, bank, list), append(profiles, *p)
}

// BenchmarkAppraise: the 50 KB real log against the 10-profile policy, the
// matching profile last (so 9 full denials are built first).
func BenchmarkAppraise(b *testing.B) {
	in, profiles := benchSetup(b)
	if v := Appraise(in, profiles); !v.Allowed || v.Profile != "gdc-host" {
		b.Fatalf("verdict %s", v)
	}
	b.ReportAllocs()
	for b.Loop() {
		if v := Appraise(in, profiles); !v.Allowed {
			b.Fatal("denied")
		}
	}
}

// BenchmarkAppraiseAllowedFirst: the same policy with the matching profile
// first, i.e. the cost of an allowed boot (no denial built).
func BenchmarkAppraiseAllowedFirst(b *testing.B) {
	in, profiles := benchSetup(b)
	profiles = append(profiles[len(profiles)-1:], profiles[:len(profiles)-1]...)
	b.ReportAllocs()
	for b.Loop() {
		if v := Appraise(in, profiles); !v.Allowed {
			b.Fatal("denied")
		}
	}
}

// BenchmarkParseProfile: parsing one stored profile (the gdc-host capture,
// JSON as the store keeps it), which Nodes does per assigned profile on
// every attestation.
func BenchmarkParseProfile(b *testing.B) {
	_, profiles := benchSetup(b)
	body, err := json.Marshal(profiles[len(profiles)-1])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(body)), "profile-bytes")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseProfile(body); err != nil {
			b.Fatal(err)
		}
	}
}
