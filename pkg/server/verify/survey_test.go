package verify

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// TestCACertSurvey validates every non-root CA certificate of cacerts/
// against the whole bundle at testNow, the way a leaf would chain through it,
// logs each failure with its reason (run with -v), and requires every
// failure to be one of the known vendor oddities (MANIFEST.md section 4):
// IFX TPM EK Intermediate CA 01 expired on 2025-10-20; old Infineon
// intermediates are signed with SHA1-RSA, which crypto/x509 refuses; three
// CAs whose roots are not in the data. The chain alone is checked
// (verifyEKChain); each CA certificate that chains is then presented to the
// EK profile as if it were an EK certificate, and must be refused by the
// basic-constraints rule: a vendor CA certificate is never an EK.
func TestCACertSurvey(t *testing.T) {
	trust := allCATrust(t)
	base := realPath(t, "cacerts")
	subs, _ := os.ReadDir(base)
	counts := map[Reason]int{}
	total, ok, refusedAsCA := 0, 0, 0
	var lines []string
	for _, s := range subs {
		files, _ := os.ReadDir(filepath.Join(base, s.Name()))
		for _, f := range files {
			rel := filepath.Join(s.Name(), f.Name())
			certs, err := testCerts(filepath.Join(base, rel))
			if err != nil {
				continue // not a certificate file (e.g. README)
			}
			for _, c := range certs {
				if selfSigned(c) {
					continue
				}
				total++
				_, err := verifyEKChain(c, nil, trust, testNow)
				if err == nil {
					ok++
					_, perr := CheckEKProfile(c)
					var v *ProfileViolation
					if ReasonOf(perr) == ReasonEKCertProfile && errors.As(perr, &v) && v.Rule == RuleBasicConstraints {
						refusedAsCA++
					} else {
						t.Errorf("%s (%s): chains, and the EK profile says %v; want it refused by %s", rel, c.Subject.CommonName, perr, RuleBasicConstraints)
					}
					continue
				}
				r := ReasonOf(err)
				switch {
				case r == ReasonEKExpired && c.Subject.CommonName == "IFX TPM EK Intermediate CA 01":
				case r == ReasonEKUntrusted && c.SignatureAlgorithm == x509.SHA1WithRSA:
				case r == ReasonEKUntrusted && rootMissing[c.Subject.CommonName]:
				default:
					t.Errorf("%s (%s): unexpected failure %s: %v", rel, c.Subject.CommonName, r, err)
				}
				counts[r]++
				lines = append(lines, string(r)+"  "+rel+"  ("+c.Subject.CommonName+"): "+err.Error())
			}
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		t.Log(l)
	}
	t.Logf("intermediate CA certificates validating at %s: %d of %d; failures by reason: %v", testNow.Format("2006-01-02"), ok, total, counts)
	t.Logf("of the %d that chain, %d are refused by the EK profile (%s) if sent as an EK certificate", ok, refusedAsCA, RuleBasicConstraints)
	// The figures of the closing note; they change only with the data.
	if ok != 111 || total != 166 || counts[ReasonEKExpired] != 3 || counts[ReasonEKUntrusted] != 52 || refusedAsCA != ok {
		t.Errorf("survey changed: %d of %d validate, failures %v; want 111 of 166, 3 expired, 52 untrusted", ok, total, counts)
	}
}

// rootMissing names CAs whose issuing root is not in cacerts/.
var rootMissing = map[string]bool{
	"Aliyun TPM EKMF CA":               true,
	"IFX TPM EK Root CA":               true,
	"Nationz TPM Manufacturing CA 001": true,
}
