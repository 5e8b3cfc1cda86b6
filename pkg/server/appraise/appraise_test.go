package appraise

import (
	"errors"
	"strings"
	"testing"
)

func TestAdmitEK(t *testing.T) {
	untrusted := errors.New("x509: certificate signed by unknown authority")
	tests := []struct {
		policy      EKPolicy
		certErr     error
		allowlisted bool
		want        string // "" = admitted; else a fragment of the reason
	}{
		{EKPolicyCert, nil, false, ""},
		{EKPolicyCert, untrusted, true, "unknown authority"},
		{EKPolicyAllowlist, untrusted, true, ""},
		{EKPolicyAllowlist, nil, false, "not on the allowlist"},
		{EKPolicyCertOrAllowlist, nil, false, ""},
		{EKPolicyCertOrAllowlist, untrusted, true, ""},
		{EKPolicyCertOrAllowlist, untrusted, false, "not on the allowlist and certificate not trusted"},
		{EKPolicyCertAndAllowlist, nil, true, ""},
		{EKPolicyCertAndAllowlist, nil, false, "certificate trusted but EK hash is not on the allowlist"},
		{EKPolicyCertAndAllowlist, untrusted, true, "allowlisted but certificate not trusted"},
		{EKPolicyCertAndAllowlist, untrusted, false, "not on the allowlist and certificate not trusted"},
		{EKPolicy("bogus"), nil, true, "unknown policy"},
	}
	for _, tt := range tests {
		err := AdmitEK(tt.policy, tt.certErr, tt.allowlisted)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s cert=%v allow=%v: refused: %v", tt.policy, tt.certErr, tt.allowlisted, err)
			}
			continue
		}
		if !errors.Is(err, ErrEKNotAdmitted) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s cert=%v allow=%v: err = %v, want %q", tt.policy, tt.certErr, tt.allowlisted, err, tt.want)
		}
	}
}

func TestParseAllowlist(t *testing.T) {
	h := strings.Repeat("AB", 32)
	al, err := ParseAllowlist([]byte("# comment\n\n  " + h + "  \n"))
	if err != nil {
		t.Fatal(err)
	}
	if !al.Contains(strings.ToLower(h)) || !al.Contains(h) || al.Contains(strings.Repeat("cd", 32)) {
		t.Fatalf("allowlist lookups wrong: %v", al)
	}
	_, err = ParseAllowlist([]byte(h + "\nzz\n" + h[:10] + "\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("err = %v, want lines 2 and 3 reported", err)
	}
}

func TestSelectors(t *testing.T) {
	f := Facts{EKHash: "aa", Manufacturer: "id:53544D20", EKIssuer: "STM TPM EK Intermediate CA 05", SecureBoot: "enabled", PCRs: map[string]string{"sha256:7": "07", "sha256:0": "00"}}
	got := strings.Join(Selectors(f, false), " ")
	want := "pub_hash:aa ek_hash:aa manufacturer:id:53544D20 ek_issuer:STM TPM EK Intermediate CA 05 secureboot:enabled"
	if got != want {
		t.Errorf("selectors = %q, want %q", got, want)
	}
	got = strings.Join(Selectors(f, true), " ")
	if !strings.HasSuffix(got, "pcr:sha256:0:00 pcr:sha256:7:07") {
		t.Errorf("pcr selectors missing or unsorted: %q", got)
	}
	// An EK certificate admitted through a named quirk: no TCG attributes,
	// the quirk instead.
	gce := Facts{EKHash: "bb", EKIssuer: "EK/AK CA Intermediate", EKQuirk: "gce-ek-no-san"}
	got = strings.Join(Selectors(gce, false), " ")
	if want := "pub_hash:bb ek_hash:bb ek_issuer:EK/AK CA Intermediate ek_quirk:gce-ek-no-san"; got != want {
		t.Errorf("selectors = %q, want %q", got, want)
	}
	// A chain through defective bundle intermediates: one selector per
	// ek_chain_quirks value it needed.
	ifx := Facts{EKHash: "cc", EKIssuer: "IFX TPM EK Intermediate CA 01", EKChainQuirks: []string{"sha1-intermediates", "expired-intermediates"}}
	got = strings.Join(Selectors(ifx, false), " ")
	if want := "pub_hash:cc ek_hash:cc ek_issuer:IFX TPM EK Intermediate CA 01 ek_chain_quirk:sha1-intermediates ek_chain_quirk:expired-intermediates"; got != want {
		t.Errorf("selectors = %q, want %q", got, want)
	}
}

func FuzzParseAllowlist(f *testing.F) {
	f.Add([]byte("# fleet\n" + strings.Repeat("ab", 32) + "\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		al, err := ParseAllowlist(b)
		if err != nil {
			return
		}
		for h := range al {
			if len(h) != 64 || strings.ToLower(h) != h {
				t.Fatalf("accepted %q", h)
			}
		}
	})
}

func TestCheckQuoteStrength(t *testing.T) {
	tests := []struct {
		weak []string
		want string
	}{
		{nil, ""},
		{[]string{"pcr bank sha1"}, ""},
		{[]string{"signature hash sha1"}, "signature hash sha1"},
		{[]string{"pcr bank sha1", "signature hash sha1", "rsa key 1024 bits"}, "signature hash sha1, rsa key 1024 bits"},
	}
	for _, tt := range tests {
		err := CheckQuoteStrength(tt.weak)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%v: refused: %v", tt.weak, err)
			}
			continue
		}
		if !errors.Is(err, ErrWeakQuote) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "pcr bank") {
			t.Errorf("%v: err = %v, want %q", tt.weak, err, tt.want)
		}
	}
}
