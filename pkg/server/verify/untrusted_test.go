package verify

import (
	"strings"
	"testing"
)

// TestUntrustedEKNamesMissingCA: an EK certificate from a CA missing in
// the bundle is refused (ek_untrusted, one line) naming the issuer DN and
// its authority key ID, so the operator knows which vendor CA to add.
func TestUntrustedEKNamesMissingCA(t *testing.T) {
	t490, err := ParseEKCert(readReal(t, "quotes/lenovo-t490-stm/ek.crt"))
	if err != nil {
		t.Fatal(err)
	}
	gceTrust, err := testTrust(realPath(t, "cacerts/google-gce"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = VerifyEKCert(t490, nil, gceTrust, testNow)
	if ReasonOf(err) != ReasonEKUntrusted {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"issuer \"" + t490.Issuer.String() + "\"",
		"authority key ID " + hexColons(t490.AuthorityKeyId),
		"add that vendor CA to ek_ca_bundle",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not say %q", msg, want)
		}
	}
	if len(t490.AuthorityKeyId) == 0 || strings.Contains(msg, "\n") {
		t.Errorf("no AKI in the test certificate, or not one line: %q", msg)
	}
	t.Log(msg)

}
