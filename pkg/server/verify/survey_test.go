package verify

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// TestCACertSurvey validates every non-root CA certificate of cacerts/
// against the whole bundle at testNow, the way a leaf would chain through it,
// and logs each failure with its reason (run with -v). It documents the
// vendor oddities listed in MANIFEST.md section 4 rather than asserting them
// one by one; it fails only if a failure has no reason.
func TestCACertSurvey(t *testing.T) {
	trust := allCATrust(t)
	base := realPath(t, "cacerts")
	subs, _ := os.ReadDir(base)
	counts := map[Reason]int{}
	total, ok := 0, 0
	var lines []string
	for _, s := range subs {
		files, _ := os.ReadDir(filepath.Join(base, s.Name()))
		for _, f := range files {
			rel := filepath.Join(s.Name(), f.Name())
			certs, err := LoadCertificates(filepath.Join(base, rel))
			if err != nil {
				continue // not a certificate file (e.g. README)
			}
			for _, c := range certs {
				if selfSigned(c) {
					continue
				}
				total++
				_, err := VerifyEKCert(c, nil, trust, testNow)
				if err == nil {
					ok++
					continue
				}
				r := ReasonOf(err)
				if r == "" {
					t.Errorf("%s: untyped error %v", rel, err)
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
}
