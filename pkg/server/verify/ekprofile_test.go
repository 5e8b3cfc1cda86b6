package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/internal/testca"
)

// profileKeys are the subject keys of the unit tests, made once.
type profileKeys struct {
	rsa *rsa.PrivateKey
	ecc *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}

func newProfileKeys(t testing.TB) *profileKeys {
	t.Helper()
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &profileKeys{r, e, ed}
}

// namedCA is a test root with the subject name given (testca.New names its
// CAs "... / tpmid tests"); the GCE quirk looks at the issuer's organization.
func namedCA(t testing.TB, name pkix.Name) *testca.CA {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: name, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testca.CA{Cert: c, Key: k}
}

// parsed returns a function that parses the (DER, error) a CA returns,
// failing t on an error.
func parsed(t testing.TB) func([]byte, error) *x509.Certificate {
	return func(der []byte, err error) *x509.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseEKCert(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// gceIdentity is an instance-identity extension shaped like Google's (a
// SEQUENCE of zone, project number, project, instance id, name).
func gceIdentity(t testing.TB) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal(struct {
		Zone          string
		ProjectNumber int64
		Project       string
		InstanceID    int64
		Name          string
	}{"us-central1-a", 117478743145, "example-project", 218557372616137117, "vm-1"})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidGCEInstanceIdentity, Value: v}
}

// TestCheckEKProfile applies the profile to certificates a test CA issues:
// the project's own EK certificates (testca.IssueEK) pass, and each rule
// has certificates that break it, and only it first.
func TestCheckEKProfile(t *testing.T) {
	k := newProfileKeys(t)
	ca, err := testca.New("tpmid test EK root")
	if err != nil {
		t.Fatal(err)
	}
	google := namedCA(t, pkix.Name{CommonName: "EK/AK CA Intermediate", OrganizationalUnit: []string{"Google Cloud"}, Organization: []string{"Google LLC"}, Country: []string{"US"}})
	san := tcgSAN(t, [][2]string{{"m", "id:54455354"}, {"n", "model"}, {"v", "id:00010002"}})
	ekEKU := []asn1.ObjectIdentifier{oidTCGKpEKCertificate}
	issue := func(c *testca.CA, tmpl x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
		return parsed(t)(c.Issue(&tmpl, pub))
	}
	// ek is a conforming EK certificate template for an RSA key; cases
	// change one thing in it.
	ek := func(change func(*x509.Certificate)) x509.Certificate {
		tmpl := x509.Certificate{BasicConstraintsValid: true, KeyUsage: x509.KeyUsageKeyEncipherment, UnknownExtKeyUsage: ekEKU, ExtraExtensions: []pkix.Extension{san}}
		if change != nil {
			change(&tmpl)
		}
		return tmpl
	}
	// gce is shaped like the real GCE "EK/AK CA Intermediate" EK
	// certificates: no SAN, no EKU, the instance-identity extension.
	gce := func(change func(*x509.Certificate)) x509.Certificate {
		tmpl := x509.Certificate{Subject: pkix.Name{CommonName: "218557372616137117", Organization: []string{"Google Compute Engine"}},
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageKeyEncipherment, ExtraExtensions: []pkix.Extension{gceIdentity(t)}}
		if change != nil {
			change(&tmpl)
		}
		return tmpl
	}
	tls := x509.Certificate{Subject: pkix.Name{CommonName: "www.example.com"}, DNSNames: []string{"www.example.com"}, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}

	for _, c := range []struct {
		name  string
		cert  *x509.Certificate
		rule  string // "" passes
		quirk string
		say   string // a fragment of the violation's detail
	}{
		// The project's own EK certificates, and tolerated variations.
		{name: "testca.IssueEK, RSA", cert: parsed(t)(ca.IssueEK(&k.rsa.PublicKey, "id:53494D55", "id:00000001", "id:00020000"))},
		{name: "testca.IssueEK, ECC P-256", cert: parsed(t)(ca.IssueEK(&k.ecc.PublicKey, "id:53494D55", "id:00000001", "id:00020000"))},
		{name: "ECC EK with keyAgreement", cert: issue(ca, ek(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyAgreement }), &k.ecc.PublicKey)},
		{name: "no key usage extension", cert: issue(ca, ek(func(c *x509.Certificate) { c.KeyUsage = 0 }), &k.rsa.PublicKey)},
		{name: "no extended key usage extension", cert: issue(ca, ek(func(c *x509.Certificate) { c.UnknownExtKeyUsage = nil }), &k.rsa.PublicKey)},
		{name: "no basicConstraints", cert: issue(ca, ek(func(c *x509.Certificate) { c.BasicConstraintsValid = false }), &k.rsa.PublicKey)},
		{name: "keyEncipherment|dataEncipherment", cert: issue(ca, ek(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageDataEncipherment }), &k.rsa.PublicKey)},
		{name: "EK purpose beside another", cert: issue(ca, ek(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} }), &k.rsa.PublicKey)},
		{name: "GCE EK without SAN, RSA", cert: issue(google, gce(nil), &k.rsa.PublicKey), quirk: QuirkGCEEKNoSAN},
		{name: "GCE EK without SAN, ECC", cert: issue(google, gce(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyAgreement }), &k.ecc.PublicKey), quirk: QuirkGCEEKNoSAN},

		// public-key (3.2.7)
		{name: "Ed25519 key", cert: issue(ca, ek(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyAgreement }), k.ed.Public()), rule: RulePublicKey, say: "Ed25519"},

		// basic-constraints (3.2.10)
		{name: "CA certificate (cA TRUE, keyCertSign)", cert: issue(ca, x509.Certificate{Subject: pkix.Name{CommonName: "sub CA"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, &k.rsa.PublicKey), rule: RuleBasicConstraints, say: "CA certificate"},
		{name: "cA TRUE on an otherwise perfect EK certificate", cert: issue(ca, ek(func(c *x509.Certificate) { c.IsCA = true }), &k.rsa.PublicKey), rule: RuleBasicConstraints},
		{name: "the root CA itself", cert: ca.Cert, rule: RuleBasicConstraints},

		// key-usage (3.2.15)
		{name: "TLS server certificate (digitalSignature|keyEncipherment, serverAuth)", cert: issue(ca, tls, &k.rsa.PublicKey), rule: RuleKeyUsage, say: "digitalSignature"},
		{name: "digitalSignature beside keyEncipherment on an EK certificate", cert: issue(ca, ek(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageDigitalSignature }), &k.rsa.PublicKey), rule: RuleKeyUsage, say: "digitalSignature"},
		{name: "contentCommitment", cert: issue(ca, ek(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageContentCommitment }), &k.rsa.PublicKey), rule: RuleKeyUsage, say: "contentCommitment"},
		{name: "keyCertSign without basicConstraints", cert: issue(ca, ek(func(c *x509.Certificate) {
			c.BasicConstraintsValid = false
			c.KeyUsage |= x509.KeyUsageCertSign
		}), &k.rsa.PublicKey), rule: RuleKeyUsage, say: "keyCertSign"},
		{name: "cRLSign", cert: issue(ca, ek(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCRLSign }), &k.rsa.PublicKey), rule: RuleKeyUsage, say: "cRLSign"},
		{name: "RSA EK with keyAgreement only", cert: issue(ca, ek(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyAgreement }), &k.rsa.PublicKey), rule: RuleKeyUsage, say: "lacks keyEncipherment"},
		{name: "ECC EK with keyEncipherment only", cert: issue(ca, ek(nil), &k.ecc.PublicKey), rule: RuleKeyUsage, say: "lacks keyAgreement"},
		{name: "GCE-style AK certificate (digitalSignature, EKU 2.23.133.8.1, TCG SAN)", cert: issue(ca, ek(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }), &k.rsa.PublicKey), rule: RuleKeyUsage, say: "digitalSignature"},

		// extended-key-usage (3.2.16)
		{name: "AK certificate (2.23.133.8.3, no key usage)", cert: issue(ca, ek(func(c *x509.Certificate) {
			c.KeyUsage = 0
			c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{oidTCGKpAIKCertificate}
		}), &k.rsa.PublicKey), rule: RuleExtKeyUsage, say: "this is an AK certificate"},
		{name: "2.23.133.8.3 beside 2.23.133.8.1", cert: issue(ca, ek(func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{oidTCGKpEKCertificate, oidTCGKpAIKCertificate}
		}), &k.rsa.PublicKey), rule: RuleExtKeyUsage, say: "this is an AK certificate"},
		{name: "platform certificate purpose", cert: issue(ca, ek(func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{oidTCGKpPlatformCertificate}
		}), &k.rsa.PublicKey), rule: RuleExtKeyUsage, say: "platform certificate"},
		{name: "serverAuth only (keyEncipherment, TCG SAN)", cert: issue(ca, ek(func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = nil
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}), &k.rsa.PublicKey), rule: RuleExtKeyUsage, say: "[serverAuth] lacks 2.23.133.8.1"},
		{name: "serverAuth and clientAuth", cert: issue(ca, x509.Certificate{BasicConstraintsValid: true, KeyUsage: x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, &k.rsa.PublicKey), rule: RuleExtKeyUsage, say: "[serverAuth, clientAuth] lacks"},
		{name: "anyExtendedKeyUsage", cert: issue(ca, ek(func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = nil
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
		}), &k.rsa.PublicKey), rule: RuleExtKeyUsage, say: "anyExtendedKeyUsage"},

		// subject-alt-name (3.2.9)
		{name: "no SAN, keyEncipherment only, no EKU", cert: issue(ca, ek(func(c *x509.Certificate) {
			c.ExtraExtensions = nil
			c.UnknownExtKeyUsage = nil
		}), &k.rsa.PublicKey), rule: RuleSubjectAltName, say: "not Google LLC"},
		{name: "SAN with a DNS name only", cert: issue(ca, ek(func(c *x509.Certificate) {
			c.ExtraExtensions = nil
			c.DNSNames = []string{"node-1.example.com"}
		}), &k.rsa.PublicKey), rule: RuleSubjectAltName, say: "lacks TPM manufacturer, model, version"},
		{name: "TCG SAN without model", cert: issue(ca, ek(func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{tcgSAN(t, [][2]string{{"m", "id:54455354"}, {"v", "id:00010002"}})}
		}), &k.rsa.PublicKey), rule: RuleSubjectAltName, say: "lacks TPM model"},

		// The quirk, narrowly: each condition missing in turn.
		{name: "GCE-shaped, issuer not Google LLC", cert: issue(ca, gce(nil), &k.rsa.PublicKey), rule: RuleSubjectAltName, say: "not Google LLC"},
		{name: "GCE-shaped, no instance-identity extension", cert: issue(google, gce(func(c *x509.Certificate) { c.ExtraExtensions = nil }), &k.rsa.PublicKey), rule: RuleSubjectAltName, say: "no Google instance-identity extension"},
		{name: "GCE-shaped, critical instance-identity extension", cert: issue(google, gce(func(c *x509.Certificate) { c.ExtraExtensions[0].Critical = true }), &k.rsa.PublicKey), rule: RuleSubjectAltName, say: "critical or repeated"},
		{name: "GCE-shaped, instance-identity extension not a SEQUENCE", cert: issue(google, gce(func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: oidGCEInstanceIdentity, Value: []byte{0x04, 0x01, 0x00}}}
		}), &k.rsa.PublicKey), rule: RuleSubjectAltName, say: "not one DER SEQUENCE"},
		{name: "GCE-shaped, no key usage", cert: issue(google, gce(func(c *x509.Certificate) { c.KeyUsage = 0 }), &k.rsa.PublicKey), rule: RuleSubjectAltName, say: "not exactly keyEncipherment"},
		{name: "GCE-shaped, keyEncipherment|dataEncipherment", cert: issue(google, gce(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageDataEncipherment }), &k.rsa.PublicKey), rule: RuleSubjectAltName, say: "not exactly keyEncipherment"},
		{name: "GCE-shaped, no basicConstraints", cert: issue(google, gce(func(c *x509.Certificate) { c.BasicConstraintsValid = false }), &k.rsa.PublicKey), rule: RuleSubjectAltName, say: "no basicConstraints"},
		{name: "GCE-shaped AK certificate (digitalSignature)", cert: issue(google, gce(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }), &k.rsa.PublicKey), rule: RuleKeyUsage, say: "digitalSignature"},
		{name: "TLS certificate from a CA named Google LLC", cert: issue(google, func() x509.Certificate { c := tls; c.ExtraExtensions = []pkix.Extension{gceIdentity(t)}; return c }(), &k.rsa.PublicKey), rule: RuleKeyUsage},
		{name: "keyEncipherment-only TLS certificate from a CA named Google LLC", cert: issue(google, func() x509.Certificate {
			c := tls
			c.KeyUsage = x509.KeyUsageKeyEncipherment
			c.ExtraExtensions = []pkix.Extension{gceIdentity(t)}
			return c
		}(), &k.rsa.PublicKey), rule: RuleExtKeyUsage, say: "[serverAuth] lacks"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := CheckEKProfile(c.cert)
			if c.rule == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if p.Quirk != c.quirk {
					t.Fatalf("quirk %q, want %q", p.Quirk, c.quirk)
				}
				return
			}
			var v *ProfileViolation
			if ReasonOf(err) != ReasonEKCertProfile || !errors.As(err, &v) {
				t.Fatalf("err = %v, want %s with a ProfileViolation", err, ReasonEKCertProfile)
			}
			if v.Rule != c.rule {
				t.Fatalf("rule %s (%v), want %s", v.Rule, err, c.rule)
			}
			if !strings.Contains(v.Detail, c.say) {
				t.Errorf("detail %q, want it to say %q", v.Detail, c.say)
			}
			if !strings.Contains(err.Error(), "rule "+c.rule) || !strings.Contains(err.Error(), "3.2.") {
				t.Errorf("message %q does not name the rule and its section", err)
			}
		})
	}
	if _, err := CheckEKProfile(nil); ReasonOf(err) != ReasonInvalidArgument {
		t.Errorf("nil certificate: %v", err)
	}
}

// TestVerifyEKCertProfile: the profile runs after the chain inside
// VerifyEKCert. A non-EK certificate from a trusted CA is ek_cert_profile;
// the same certificate from a CA nobody trusts is just ek_untrusted.
func TestVerifyEKCertProfile(t *testing.T) {
	k := newProfileKeys(t)
	ca, err := testca.New("tpmid test EK root")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testca.New("someone else's root")
	if err != nil {
		t.Fatal(err)
	}
	google := namedCA(t, pkix.Name{CommonName: "EK/AK CA Intermediate", Organization: []string{"Google LLC"}})
	trustOf := func(c *testca.CA) *EKTrust {
		tr := &EKTrust{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
		tr.Roots.AddCert(c.Cert)
		return tr
	}
	now := time.Now()
	tlsTmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "www.example.com"}, DNSNames: []string{"www.example.com"}, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	tlsCert := parsed(t)(ca.Issue(tlsTmpl, &k.rsa.PublicKey))
	if _, err := VerifyEKCert(tlsCert, nil, trustOf(ca), now); ReasonOf(err) != ReasonEKCertProfile {
		t.Errorf("TLS certificate from the trusted CA: %v, want %s", err, ReasonEKCertProfile)
	}
	if _, err := VerifyEKCert(tlsCert, nil, trustOf(other), now); ReasonOf(err) != ReasonEKUntrusted {
		t.Errorf("TLS certificate from an untrusted CA: %v, want %s", err, ReasonEKUntrusted)
	}
	for _, pub := range []crypto.PublicKey{&k.rsa.PublicKey, &k.ecc.PublicKey} {
		ek := parsed(t)(ca.IssueEK(pub, "id:53494D55", "id:00000001", "id:00020000"))
		f, err := VerifyEKCert(ek, nil, trustOf(ca), now)
		if err != nil || f.Quirk != "" || f.Manufacturer != "id:53494D55" {
			t.Errorf("testca EK certificate (%T): %+v, %v", pub, f, err)
		}
	}
	gceEK := parsed(t)(google.Issue(&x509.Certificate{BasicConstraintsValid: true, KeyUsage: x509.KeyUsageKeyEncipherment, ExtraExtensions: []pkix.Extension{gceIdentity(t)}}, &k.rsa.PublicKey))
	f, err := VerifyEKCert(gceEK, nil, trustOf(google), now)
	if err != nil || f.Quirk != QuirkGCEEKNoSAN || f.Manufacturer != "" {
		t.Errorf("GCE-shaped EK certificate: %+v, %v", f, err)
	}
}

// realAKCerts are the real AK certificates: they chain to the same roots
// as EK certificates (the COS-85 one even carries the EK purpose
// 2.23.133.8.1 and the TCG SAN), and must never pass as EK certificates.
func realAKCerts() []string {
	var out []string
	for _, e := range realEKs {
		if e.ak {
			out = append(out, e.path)
		}
	}
	return append(out, "quotes/gce-cos-85/no-nonce/ak_cert.der")
}

// TestEKProfileRealSurvey applies every rule, one by one, to every real EK
// certificate (all must pass, the GCE "EK/AK CA Intermediate" ones through
// the named quirk) and every real AK certificate (all must be refused),
// logs the outcome per certificate and rule (-v), and pins the counts: they
// are the figures of docs/verification.md and change only with the data.
func TestEKProfileRealSurvey(t *testing.T) {
	type tally struct{ pass, quirk, fail int }
	ekRules := map[string]*tally{}
	present := map[string]int{}
	quirks := map[string][]string{}
	var lines []string
	nEK := 0
	for _, e := range realEKs {
		if e.ak {
			continue
		}
		nEK++
		c, err := ParseEKCert(readReal(t, e.path))
		if err != nil {
			t.Fatal(err)
		}
		for name, oid := range map[string]asn1.ObjectIdentifier{"basicConstraints": oidBasicConstraints, "keyUsage": oidKeyUsage, "extKeyUsage": oidExtKeyUsage, "subjectAltName": oidSubjectAltName} {
			if hasExt(c, oid) {
				present[name]++
			}
		}
		var outcome []string
		for _, r := range ekProfileRules {
			if ekRules[r.name] == nil {
				ekRules[r.name] = &tally{}
			}
			quirk, err := r.check(c)
			switch {
			case err != nil:
				ekRules[r.name].fail++
				outcome = append(outcome, r.name+"=FAIL("+err.Error()+")")
			case quirk != "":
				ekRules[r.name].quirk++
				outcome = append(outcome, r.name+"=quirk:"+quirk)
			default:
				ekRules[r.name].pass++
				outcome = append(outcome, r.name+"=ok")
			}
		}
		p, err := CheckEKProfile(c)
		if err != nil {
			t.Errorf("real EK certificate %s refused: %v", e.path, err)
			continue
		}
		if p.Quirk != e.quirk {
			t.Errorf("%s: quirk %q, want %q", e.path, p.Quirk, e.quirk)
		}
		if p.Quirk != "" {
			quirks[p.Quirk] = append(quirks[p.Quirk], filepath.Base(e.path))
		}
		lines = append(lines, "EK  "+e.path+": "+strings.Join(outcome, " "))
	}

	akRefusedBy := map[string]int{}
	akDistinct := map[[32]byte]bool{}
	akAlsoPass := map[string]int{} // rules an AK certificate would pass on its own
	paths := realAKCerts()
	for _, path := range paths {
		raw := readReal(t, path)
		c, err := ParseEKCert(raw)
		if err != nil {
			t.Fatal(err)
		}
		akDistinct[sha256.Sum256(c.Raw)] = true
		_, err = CheckEKProfile(c)
		var v *ProfileViolation
		if ReasonOf(err) != ReasonEKCertProfile || !errors.As(err, &v) {
			t.Errorf("real AK certificate %s: %v, want %s", path, err, ReasonEKCertProfile)
			continue
		}
		akRefusedBy[v.Rule]++
		var passes []string
		for _, r := range ekProfileRules {
			if _, err := r.check(c); err == nil {
				akAlsoPass[r.name]++
				passes = append(passes, r.name)
			}
		}
		lines = append(lines, fmt.Sprintf("AK  %s: refused by %s (%s); would pass %v", path, v.Rule, v.Detail, passes))
	}
	sort.Strings(lines)
	for _, l := range lines {
		t.Log(l)
	}
	for _, r := range ekProfileRules {
		tl := ekRules[r.name]
		t.Logf("rule %-18s (%s): %d of %d real EK certificates pass, %d through a quirk, %d fail", r.name, r.section, tl.pass, nEK, tl.quirk, tl.fail)
	}
	t.Logf("extensions present on the %d real EK certificates: %v", nEK, present)
	for q, certs := range quirks {
		t.Logf("quirk %s needed by %v", q, certs)
	}
	t.Logf("real AK certificates: %d files (%d distinct), refused by rule: %v; rules they would pass on their own: %v", len(paths), len(akDistinct), akRefusedBy, akAlsoPass)

	// The figures of the closing note.
	want := map[string]tally{
		RulePublicKey:        {7, 0, 0},
		RuleBasicConstraints: {7, 0, 0},
		RuleKeyUsage:         {7, 0, 0},
		RuleExtKeyUsage:      {7, 0, 0},
		RuleSubjectAltName:   {5, 2, 0},
	}
	for name, w := range want {
		if got := *ekRules[name]; got != w {
			t.Errorf("rule %s on real EK certificates: %+v, want %+v", name, got, w)
		}
	}
	if nEK != 7 || present["basicConstraints"] != 7 || present["keyUsage"] != 7 || present["extKeyUsage"] != 5 || present["subjectAltName"] != 5 {
		t.Errorf("real EK certificates: %d, extensions %v; want 7, with basicConstraints 7, keyUsage 7, extKeyUsage 5, subjectAltName 5", nEK, present)
	}
	if len(quirks[QuirkGCEEKNoSAN]) != 2 || len(quirks) != 1 {
		t.Errorf("quirks %v, want %s for the two pca_*_enc certificates only", quirks, QuirkGCEEKNoSAN)
	}
	if len(paths) != 6 || len(akDistinct) != 5 || akRefusedBy[RuleKeyUsage] != 6 || len(akRefusedBy) != 1 {
		t.Errorf("real AK certificates: %d files, %d distinct, refused by %v; want 6 files, 5 distinct, all by %s", len(paths), len(akDistinct), akRefusedBy, RuleKeyUsage)
	}
	// Key usage is the only rule that tells the GCE "cloud host signer" AK
	// certificates (and the COS-85 one) from EK certificates: they carry
	// the EK purpose and the TCG SAN.
	if akAlsoPass[RuleExtKeyUsage] != 6 || akAlsoPass[RuleSubjectAltName] != 4 || akAlsoPass[RuleKeyUsage] != 0 {
		t.Errorf("rules the AK certificates pass on their own: %v", akAlsoPass)
	}
}

// FuzzCheckEKProfile feeds certificates parsed from mutated real EK and AK
// certificates to the profile: it must never panic, every refusal must be
// an ek_cert_profile *ProfileViolation naming a known rule, and a pass
// without quirk must have the TCG attributes, a pass through the quirk none.
func FuzzCheckEKProfile(f *testing.F) {
	for _, e := range realEKs {
		f.Add(readReal(f, e.path))
	}
	f.Add(readReal(f, "quotes/gce-cos-85/no-nonce/ak_cert.der"))
	rules := map[string]bool{}
	for _, r := range ekProfileRules {
		rules[r.name] = true
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseEKCert(b)
		if err != nil {
			return
		}
		p, err := CheckEKProfile(c)
		if err != nil {
			var v *ProfileViolation
			if ReasonOf(err) != ReasonEKCertProfile || !errors.As(err, &v) || !rules[v.Rule] {
				t.Fatalf("untyped refusal %v", err)
			}
			return
		}
		_, _, _, aerr := EKAttributes(c)
		switch p.Quirk {
		case "":
			if aerr != nil {
				t.Fatalf("passed without quirk, but EKAttributes: %v", aerr)
			}
		case QuirkGCEEKNoSAN:
			if hasExt(c, oidSubjectAltName) {
				t.Fatal("quirk for a certificate with a SAN")
			}
		default:
			t.Fatalf("unknown quirk %q", p.Quirk)
		}
	})
}
