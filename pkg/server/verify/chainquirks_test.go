package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// qCA is a test CA for chain quirk tests: ECDSA P-256 or RSA-2048, able to
// sign with SHA-1 (crypto/x509 signs with SHA-1 when asked; it only
// refuses to verify it).
type qCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var qSerial atomic.Int64

func qKey(t testing.TB, useRSA bool) crypto.Signer {
	t.Helper()
	if useRSA {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// qSign signs tmpl for pub with parent (self-signed when parent is nil),
// with SHA-1 when sha1 is set.
func qSign(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, parent *qCA, self crypto.Signer, sha1 bool) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = big.NewInt(qSerial.Add(1))
	pc, pk := tmpl, self
	if parent != nil {
		pc, pk = parent.cert, parent.key
	}
	if sha1 {
		tmpl.SignatureAlgorithm = x509.ECDSAWithSHA1
		if _, ok := pk.(*rsa.PrivateKey); ok {
			tmpl.SignatureAlgorithm = x509.SHA1WithRSA
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pc, pub, pk)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func qRoot(t testing.TB, cn string, useRSA bool, nb, na time.Time) *qCA {
	k := qKey(t, useRSA)
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	return &qCA{qSign(t, tmpl, k.Public(), nil, k, false), k}
}

// sub issues an intermediate CA named cn.
func (ca *qCA) sub(t testing.TB, cn string, nb, na time.Time, sha1 bool) *qCA {
	k := qKey(t, false)
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	return &qCA{qSign(t, tmpl, k.Public(), ca, nil, sha1), k}
}

// ek issues an EK certificate shaped like a real one (TCG SAN, EK EKU).
func (ca *qCA) ek(t testing.TB, nb, na time.Time, sha1 bool) *x509.Certificate {
	k := qKey(t, false)
	tmpl := &x509.Certificate{NotBefore: nb, NotAfter: na, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageKeyAgreement,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{2, 23, 133, 8, 1}},
		ExtraExtensions:    []pkix.Extension{tcgSAN(t, [][2]string{{"m", "id:54455354"}, {"n", "model"}, {"v", "id:00010002"}})}}
	c := qSign(t, tmpl, k.Public(), ca, nil, sha1)
	c2, err := ParseEKCert(c.Raw)
	if err != nil {
		t.Fatal(err)
	}
	return c2
}

func mustTrust(t testing.TB, certs ...*x509.Certificate) *EKTrust {
	t.Helper()
	tr, err := NewEKTrust(certs, "test bundle")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

var (
	qSHA1    = []ChainQuirk{ChainQuirkSHA1Intermediates}
	qExpired = []ChainQuirk{ChainQuirkExpiredIntermediates}
	qBoth    = []ChainQuirk{ChainQuirkSHA1Intermediates, ChainQuirkExpiredIntermediates}
)

// TestChainQuirks: a chain through a SHA-1-signed or an expired bundle
// intermediate is refused by default with the reason naming the
// intermediate and the setting, and admitted only with its quirk, which
// EKFacts.ChainQuirks then names; the same defect on the EK certificate,
// on an intermediate the agent sent, on the root, or above an agent-sent
// intermediate is refused with every quirk on.
func TestChainQuirks(t *testing.T) {
	y := 365 * 24 * time.Hour
	now := testNow
	rootE := qRoot(t, "quirk root ECC", false, now.Add(-20*y), now.Add(20*y))
	rootR := qRoot(t, "quirk root RSA", true, now.Add(-20*y), now.Add(20*y))
	okI := rootE.sub(t, "good intermediate", now.Add(-5*y), now.Add(5*y), false)
	sha1E := rootE.sub(t, "SHA-1 ECC intermediate", now.Add(-5*y), now.Add(5*y), true)
	sha1R := rootR.sub(t, "SHA-1 RSA intermediate", now.Add(-5*y), now.Add(5*y), true)
	expI := rootE.sub(t, "expired intermediate", now.Add(-5*y), now.Add(-y), false)
	bothI := rootE.sub(t, "expired SHA-1 intermediate", now.Add(-5*y), now.Add(-y), true)
	sha1Mid := rootE.sub(t, "SHA-1 upper intermediate", now.Add(-5*y), now.Add(5*y), true)
	lowI := sha1Mid.sub(t, "lower intermediate (sent by the agent)", now.Add(-4*y), now.Add(4*y), false)
	agentSHA1 := rootE.sub(t, "SHA-1 intermediate sent by the agent", now.Add(-5*y), now.Add(5*y), true)
	agentExp := rootE.sub(t, "expired intermediate sent by the agent", now.Add(-5*y), now.Add(-y), false)
	agentMid := rootE.sub(t, "upper intermediate sent by the agent", now.Add(-5*y), now.Add(5*y), false)
	sha1Low := agentMid.sub(t, "SHA-1 intermediate below an agent-sent one", now.Add(-4*y), now.Add(4*y), true)
	bundle := mustTrust(t, rootE.cert, rootR.cert, okI.cert, sha1E.cert, sha1R.cert, expI.cert, bothI.cert, sha1Mid.cert, sha1Low.cert)

	// A SHA-1 intermediate whose signature was tampered with.
	badDER := slices.Clone(sha1E.cert.Raw)
	badDER[len(badDER)-3] ^= 1
	sha1Bad, err := x509.ParseCertificate(badDER)
	if err != nil {
		t.Fatal(err)
	}
	tampered := mustTrust(t, rootE.cert, sha1Bad)
	// An expired root above a SHA-1 intermediate: roots are never excused.
	oldRoot := qRoot(t, "expired root", false, now.Add(-20*y), now.Add(-y))
	underOld := oldRoot.sub(t, "SHA-1 intermediate of an expired root", now.Add(-5*y), now.Add(5*y), true)
	expiredRoot := mustTrust(t, oldRoot.cert, underOld.cert)
	// An EKTrust not made by NewEKTrust knows no bundle intermediate.
	literal := &EKTrust{Roots: bundle.Roots, Intermediates: bundle.Intermediates}

	leafValid := func(ca *qCA) *x509.Certificate { return ca.ek(t, now.Add(-2*y), now.Add(3*y), false) }
	type tc struct {
		name   string
		leaf   *x509.Certificate
		extra  []*x509.Certificate
		trust  *EKTrust // nil: bundle
		quirks []ChainQuirk
		want   Reason // "" admits
		needed []ChainQuirk
		msg    []string
	}
	var cases []tc
	// The same chain under every quirk setting.
	each := func(name string, leaf *x509.Certificate, extra []*x509.Certificate, want map[string]Reason, needed []ChainQuirk, msg ...string) {
		for _, qs := range []struct {
			n string
			q []ChainQuirk
		}{{"no quirk", nil}, {"sha1", qSHA1}, {"expired", qExpired}, {"both", qBoth}} {
			c := tc{name: name + "/" + qs.n, leaf: leaf, extra: extra, quirks: qs.q, want: want[qs.n]}
			if c.want == "" {
				c.needed = needed
			} else {
				c.msg = msg
			}
			cases = append(cases, c)
		}
	}
	ok := Reason("")
	each("good chain", leafValid(okI), nil, map[string]Reason{}, nil)
	each("SHA-1 ECC intermediate", leafValid(sha1E), nil,
		map[string]Reason{"no quirk": ReasonEKUntrusted, "sha1": ok, "expired": ReasonEKUntrusted, "both": ok}, qSHA1,
		`"CN=SHA-1 ECC intermediate" from the EK CA bundle is signed with ECDSA-SHA1`, `ek_chain_quirks = ["sha1-intermediates"] would accept it`)
	each("SHA-1 RSA intermediate", leafValid(sha1R), nil,
		map[string]Reason{"no quirk": ReasonEKUntrusted, "sha1": ok, "expired": ReasonEKUntrusted, "both": ok}, qSHA1,
		`"CN=SHA-1 RSA intermediate" from the EK CA bundle is signed with SHA1-RSA`, `ek_chain_quirks = ["sha1-intermediates"]`)
	each("expired intermediate", leafValid(expI), nil,
		map[string]Reason{"no quirk": ReasonEKExpired, "sha1": ReasonEKExpired, "expired": ok, "both": ok}, qExpired,
		`"CN=expired intermediate" from the EK CA bundle expired on `+expI.cert.NotAfter.UTC().Format(time.RFC3339), `ek_chain_quirks = ["expired-intermediates"] would accept it`)
	each("expired SHA-1 intermediate", leafValid(bothI), nil,
		map[string]Reason{"no quirk": ReasonEKUntrusted, "sha1": ReasonEKExpired, "expired": ReasonEKUntrusted, "both": ok}, qBoth,
		`is signed with ECDSA-SHA1`, `expired on`, `ek_chain_quirks = ["sha1-intermediates", "expired-intermediates"] would accept it`)
	each("SHA-1 bundle intermediate above an agent-sent one", leafValid(lowI), []*x509.Certificate{lowI.cert},
		map[string]Reason{"no quirk": ReasonEKUntrusted, "sha1": ok, "expired": ReasonEKUntrusted, "both": ok}, qSHA1,
		`"CN=SHA-1 upper intermediate"`, `ek_chain_quirks = ["sha1-intermediates"]`)
	attack := map[string]Reason{"no quirk": ReasonEKUntrusted, "sha1": ReasonEKUntrusted, "expired": ReasonEKUntrusted, "both": ReasonEKUntrusted}
	attackExp := map[string]Reason{"no quirk": ReasonEKExpired, "sha1": ReasonEKExpired, "expired": ReasonEKExpired, "both": ReasonEKExpired}
	each("SHA-1-signed EK certificate", okI.ek(t, now.Add(-2*y), now.Add(3*y), true), nil, attack, nil,
		"the EK certificate itself is signed with ECDSA-SHA1")
	each("expired EK certificate", okI.ek(t, now.Add(-3*y), now.Add(-y), false), nil, attackExp, nil, "current time")
	each("expired EK certificate under an expired intermediate", expI.ek(t, now.Add(-3*y), now.Add(-y), false), nil, attackExp, nil, "current time")
	each("SHA-1 intermediate sent by the agent", leafValid(agentSHA1), []*x509.Certificate{agentSHA1.cert}, attack, nil,
		`intermediate "CN=SHA-1 intermediate sent by the agent" sent by the agent is signed with ECDSA-SHA1`, "only on intermediates from the EK CA bundle")
	each("expired intermediate sent by the agent", leafValid(agentExp), []*x509.Certificate{agentExp.cert}, attackExp, nil,
		`intermediate "CN=expired intermediate sent by the agent" sent by the agent expired on`, "only on intermediates from the EK CA bundle")
	each("expired intermediate neither in the bundle nor sent", leafValid(agentExp), nil, attack, nil, `no trusted CA for issuer "CN=expired intermediate sent by the agent"`)
	each("SHA-1 bundle intermediate below an agent-sent one", leafValid(sha1Low), []*x509.Certificate{agentMid.cert}, attack, nil, "ECDSA-SHA1")
	// Issued a year after its expired intermediate expired: not a
	// certificate the vendor made while the CA was in service.
	each("EK issued after its intermediate expired", expI.ek(t, now.Add(-y/2), now.Add(y), false), nil, attackExp, nil, "is after "+expI.cert.NotAfter.UTC().Format(time.RFC3339))
	for _, c := range []tc{
		{name: "tampered SHA-1 signature", leaf: leafValid(sha1E), trust: tampered, quirks: qBoth, want: ReasonEKUntrusted},
		{name: "expired root above a SHA-1 intermediate", leaf: leafValid(underOld), trust: expiredRoot, quirks: qBoth, want: ReasonEKUntrusted},
		{name: "EKTrust not from NewEKTrust", leaf: leafValid(sha1E), trust: literal, quirks: qBoth, want: ReasonEKUntrusted},
	} {
		cases = append(cases, c)
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := bundle
			if c.trust != nil {
				tr = c.trust
			}
			cp := *tr
			cp.ChainQuirks = c.quirks
			f, err := VerifyEKCert(c.leaf, c.extra, &cp, now)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason %q (%v), want %q", got, err, c.want)
			}
			if err != nil {
				for _, m := range c.msg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("refusal %q does not say %q", err, m)
					}
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("refusal is not one line: %q", err)
				}
				return
			}
			if !slices.Equal(f.ChainQuirks, c.needed) {
				t.Errorf("ChainQuirks %v, want %v", f.ChainQuirks, c.needed)
			}
			if f.Chain[0] != c.leaf || !f.Chain[len(f.Chain)-1].Equal(rootOf(t, tr, f.Chain)) {
				t.Errorf("chain does not run from the leaf to a bundle root")
			}
			if f.Manufacturer != "id:54455354" {
				t.Errorf("manufacturer %q", f.Manufacturer)
			}
		})
	}
}

// rootOf returns the bundle root ending chain, or fails.
func rootOf(t *testing.T, tr *EKTrust, chain []*x509.Certificate) *x509.Certificate {
	t.Helper()
	last := chain[len(chain)-1]
	for _, r := range tr.roots {
		if r.Equal(last) {
			return r
		}
	}
	t.Fatalf("chain ends at %q, not a root", last.Subject)
	return nil
}

// TestCheckSHA1Signature plays the forgeries the SHA-1 check must refuse.
func TestCheckSHA1Signature(t *testing.T) {
	y := 365 * 24 * time.Hour
	rootE := qRoot(t, "root E", false, testNow.Add(-y), testNow.Add(y))
	rootR := qRoot(t, "root R", true, testNow.Add(-y), testNow.Add(y))
	other := qRoot(t, "root E", false, testNow.Add(-y), testNow.Add(y)) // same name, other key
	iE := rootE.sub(t, "i", testNow.Add(-y), testNow.Add(y), true)
	iR := rootR.sub(t, "i", testNow.Add(-y), testNow.Add(y), true)
	i256 := rootE.sub(t, "i", testNow.Add(-y), testNow.Add(y), false)
	notCA := *rootE.cert
	notCA.IsCA = false
	noSign := *rootE.cert
	noSign.KeyUsage = x509.KeyUsageDigitalSignature
	smallKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	small := qRoot(t, "small", false, testNow.Add(-y), testNow.Add(y))
	small.key = smallKey
	small.cert = qSign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "small"}, NotBefore: testNow.Add(-y), NotAfter: testNow.Add(y), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, smallKey.Public(), nil, smallKey, false)
	iSmall := small.sub(t, "i", testNow.Add(-y), testNow.Add(y), true)
	for _, c := range []struct {
		name          string
		child, parent *x509.Certificate
		ok            bool
	}{
		{"ECDSA-SHA1", iE.cert, rootE.cert, true},
		{"SHA1-RSA", iR.cert, rootR.cert, true},
		{"other key, same name", iE.cert, other.cert, false},
		{"RSA signature, ECC issuer", iR.cert, rootE.cert, false},
		{"not SHA-1", i256.cert, rootE.cert, false},
		{"issuer not a CA", iE.cert, &notCA, false},
		{"issuer may not sign certificates", iE.cert, &noSign, false},
		{"RSA-1024 issuer", iSmall.cert, small.cert, false},
	} {
		err := checkSHA1Signature(c.child, c.parent)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v, want ok=%v", c.name, err, c.ok)
		}
		if err != nil && !errors.Is(err, errSHA1Signature) {
			t.Errorf("%s: %v is not errSHA1Signature", c.name, err)
		}
	}
}

func TestParseChainQuirks(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want []ChainQuirk
		err  []string
	}{
		{nil, nil, nil},
		{[]string{"expired-intermediates", "sha1-intermediates"}, qBoth, nil},
		{[]string{"sha1-intermediates"}, qSHA1, nil},
		{[]string{"sha1"}, nil, []string{`ek_chain_quirks`, `"sha1"`, `"sha1-intermediates", "expired-intermediates"`}},
		{[]string{"SHA1-intermediates"}, nil, []string{`"SHA1-intermediates"`}},
		{[]string{"expired-intermediates", "expired-intermediates"}, nil, []string{"listed twice"}},
		{[]string{""}, nil, []string{`""`}},
	} {
		got, err := ParseChainQuirks(c.in)
		if len(c.err) == 0 {
			if err != nil || !slices.Equal(got, c.want) {
				t.Errorf("%q: %v %v, want %v", c.in, got, err, c.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("%q accepted", c.in)
			continue
		}
		for _, w := range c.err {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %q does not say %s", c.in, err, w)
			}
		}
	}
}
