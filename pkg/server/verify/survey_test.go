package verify

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"
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

// quirkSets are the ek_chain_quirks settings the chain quirk survey
// compares.
var quirkSets = []struct {
	name   string
	quirks []ChainQuirk
}{
	{"none", nil},
	{"sha1-intermediates", []ChainQuirk{ChainQuirkSHA1Intermediates}},
	{"expired-intermediates", []ChainQuirk{ChainQuirkExpiredIntermediates}},
	{"both", []ChainQuirk{ChainQuirkSHA1Intermediates, ChainQuirkExpiredIntermediates}},
}

// validatesAsIntermediate reports whether a bundle intermediate c leads
// to a bundle root at now under quirks: what an EK certificate c issued
// would chain through. crypto/x509 first, then the quirk walk; c's own
// validity counts, since it is an intermediate here, not a leaf.
func validatesAsIntermediate(c *x509.Certificate, trust *EKTrust, now time.Time, quirks []ChainQuirk) bool {
	if _, err := verifyEKChain(c, nil, trust, now); err == nil {
		return true
	}
	w := &quirkWalk{trust: trust, now: now}
	for _, p := range w.up(c, nil, nil) {
		if p.admitted(quirks) {
			return true
		}
	}
	return false
}

// withAnchor returns trust with the bundle intermediate a made a trust
// anchor: what an operator gets by adding a's missing root. tpmid itself
// takes only self-signed roots as anchors.
func withAnchor(t *testing.T, trust *EKTrust, a *x509.Certificate) *EKTrust {
	t.Helper()
	cp := *trust
	cp.Roots = trust.Roots.Clone()
	cp.Roots.AddCert(a)
	cp.roots = append(slices.Clone(trust.roots), a)
	cp.inters = slices.DeleteFunc(slices.Clone(trust.inters), func(c *x509.Certificate) bool { return c.Equal(a) })
	if len(cp.inters) != len(trust.inters)-1 {
		t.Fatalf("%q is not a bundle intermediate", a.Subject)
	}
	return &cp
}

// TestChainQuirkSurvey counts, per ek_chain_quirks setting, the real
// vendor intermediates of cacerts/ that lead to a root of the whole bundle
// at testNow, and the real EK certificates that verify. The old Infineon
// SHA-1 chain ends at "IFX TPM EK Root CA", itself issued by a VeriSign
// root absent from the data, so with the bundle as it is no quirk adds an
// intermediate; with that CA as an anchor (had the operator the VeriSign
// root) sha1-intermediates adds the Infineon intermediates and
// expired-intermediates then also the expired IFX Intermediate CA 01.
// Every real EK certificate verifies with no quirk, so none needs one.
func TestChainQuirkSurvey(t *testing.T) {
	trust := allCATrust(t)
	base := realPath(t, "cacerts")
	var inters []*x509.Certificate
	var ifxRoot *x509.Certificate
	subs, _ := os.ReadDir(base)
	for _, s := range subs {
		certs, err := testCerts(filepath.Join(base, s.Name()))
		if err != nil {
			continue
		}
		for _, c := range certs {
			if selfSigned(c) {
				continue
			}
			inters = append(inters, c)
			if c.Subject.CommonName == "IFX TPM EK Root CA" {
				ifxRoot = c
			}
		}
	}
	if ifxRoot == nil {
		t.Fatal("no IFX TPM EK Root CA in cacerts/")
	}
	anchored := withAnchor(t, trust, ifxRoot)
	// Files repeat certificates (keylime and safeboot share many): count
	// both files and distinct certificates.
	distinct := map[string]bool{}
	for _, c := range inters {
		distinct[string(c.Raw)] = true
	}
	type row struct{ bundle, bundleDistinct, ifxAnchor, ifxAnchorDistinct, eks int }
	got := map[string]row{}
	for _, qs := range quirkSets {
		var r row
		seen, seenA := map[string]bool{}, map[string]bool{}
		for _, c := range inters {
			if validatesAsIntermediate(c, trust, testNow, qs.quirks) {
				r.bundle++
				seen[string(c.Raw)] = true
			}
			if validatesAsIntermediate(c, anchored, testNow, qs.quirks) {
				r.ifxAnchor++
				seenA[string(c.Raw)] = true
			}
		}
		r.bundleDistinct, r.ifxAnchorDistinct = len(seen), len(seenA)
		for _, e := range realEKs {
			if e.ak {
				continue
			}
			cert, err := ParseEKCert(readReal(t, e.path))
			if err != nil {
				t.Fatal(err)
			}
			cp := *trust
			cp.ChainQuirks = qs.quirks
			f, err := VerifyEKCert(cert, nil, &cp, testNow)
			if err != nil {
				t.Errorf("%s under %s: %v", e.path, qs.name, err)
				continue
			}
			if len(f.ChainQuirks) != 0 {
				t.Errorf("%s needed %v", e.path, f.ChainQuirks)
			}
			r.eks++
		}
		got[qs.name] = r
		t.Logf("ek_chain_quirks %-22s: %d of %d real intermediate files (%d of %d distinct) lead to a root; with IFX TPM EK Root CA as an anchor %d (%d distinct); %d of 7 real EK certificates verify",
			qs.name, r.bundle, len(inters), r.bundleDistinct, len(distinct), r.ifxAnchor, r.ifxAnchorDistinct, r.eks)
	}
	// The figures of the closing note; they change only with the data.
	want := map[string]row{
		"none":                  {111, 93, 112, 94, 7},
		"sha1-intermediates":    {111, 93, 161, 128, 7},
		"expired-intermediates": {111, 93, 112, 94, 7},
		"both":                  {111, 93, 164, 129, 7},
	}
	if len(inters) != 166 || len(distinct) != 131 {
		t.Errorf("%d intermediates (%d distinct), want 166 (131)", len(inters), len(distinct))
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %+v, want %+v", k, got[k], w)
		}
	}
}
