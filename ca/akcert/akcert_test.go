package akcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/x509util"
)

var (
	testTPM = TPM{Manufacturer: "id:53544D20", Model: "ST33HTPHAHB4", Version: "id:00490004"}
	testID  = spiffeid.RequireFromString("spiffe://example.org/spire/agent/tpmid/0123abcd")
	testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
)

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pkix1(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPermanentIdentifier(t *testing.T) {
	ek := ecKey(t)
	der := pkix1(t, ek.Public())
	sum := sha256.Sum256(der)
	want := "urn:ek:sha256:" + base64.StdEncoding.EncodeToString(sum[:])
	if got := PermanentIdentifier(der); got != want {
		t.Errorf("PermanentIdentifier = %q, want %q", got, want)
	}
	if got, err := PermanentIdentifierOf(ek.Public()); err != nil || got != want {
		t.Errorf("PermanentIdentifierOf = %q, %v", got, err)
	}
	if !validPermanentIdentifier(want) {
		t.Errorf("%q not valid", want)
	}
	for _, bad := range []string{"", "urn:ek:sha256:", "urn:ek:sha1:" + want[14:], "urn:ek:sha256:" + want[14:len(want)-1], want + "A", "urn:ek:sha256:" + strings.Repeat("!", 44)} {
		if validPermanentIdentifier(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := PermanentIdentifierOf(struct{}{}); err == nil {
		t.Error("a non-key accepted")
	}
}

func TestVendorIDs(t *testing.T) {
	if got := VendorID(0x53544D20); got != "id:53544D20" {
		t.Errorf("VendorID = %q", got)
	}
	if got := FirmwareVersion(0x00490004_0012_3456); got != "id:00490004" {
		t.Errorf("FirmwareVersion = %q", got)
	}
}

// TestSubjectAltNameEncoding pins the DER: a critical SAN holding, in
// order, [4] a Name of three one-attribute RDNs (UTF8String), [0] an
// otherName permanentIdentifier { identifierValue UTF8String } without
// assigner, [6] the SPIFFE ID. go.step.sm/crypto's own parser (which
// step-ca uses) reads the same values.
func TestSubjectAltNameEncoding(t *testing.T) {
	pid := PermanentIdentifier([]byte("ek"))
	ext, err := SubjectAltName(Names{TPM: testTPM, PermanentIdentifier: pid, SPIFFEID: testID})
	if err != nil {
		t.Fatal(err)
	}
	if !ext.Id.Equal(OIDSubjectAltName) || !ext.Critical {
		t.Fatalf("extension %v critical %t", ext.Id, ext.Critical)
	}
	var gns []asn1.RawValue
	if rest, err := asn1.Unmarshal(ext.Value, &gns); err != nil || len(rest) != 0 || len(gns) != 3 {
		t.Fatalf("GeneralNames: %v, %d names", err, len(gns))
	}
	// directoryName
	dn := gns[0]
	if dn.Class != asn1.ClassContextSpecific || dn.Tag != 4 || !dn.IsCompound {
		t.Fatalf("first name is not a directoryName: %+v", dn)
	}
	var rdns []asn1.RawValue
	if _, err := asn1.Unmarshal(dn.Bytes, &rdns); err != nil || len(rdns) != 3 {
		t.Fatalf("Name: %v, %d RDNs", err, len(rdns))
	}
	for i, want := range []struct {
		oid asn1.ObjectIdentifier
		v   string
	}{{OIDTPMManufacturer, testTPM.Manufacturer}, {OIDTPMModel, testTPM.Model}, {OIDTPMVersion, testTPM.Version}} {
		if rdns[i].Tag != asn1.TagSet {
			t.Errorf("RDN %d is not a SET", i)
		}
		var atvs []struct {
			Type  asn1.ObjectIdentifier
			Value asn1.RawValue
		}
		if _, err := asn1.UnmarshalWithParams(rdns[i].FullBytes, &atvs, "set"); err != nil || len(atvs) != 1 {
			t.Fatalf("RDN %d: %v, %d attributes", i, err, len(atvs))
		}
		if !atvs[0].Type.Equal(want.oid) || atvs[0].Value.Tag != asn1.TagUTF8String || string(atvs[0].Value.Bytes) != want.v {
			t.Errorf("RDN %d = %v tag %d %q, want %v UTF8String %q", i, atvs[0].Type, atvs[0].Value.Tag, atvs[0].Value.Bytes, want.oid, want.v)
		}
	}
	// otherName
	on := gns[1]
	if on.Class != asn1.ClassContextSpecific || on.Tag != 0 || !on.IsCompound {
		t.Fatalf("second name is not an otherName: %+v", on)
	}
	var seq struct {
		TypeID asn1.ObjectIdentifier
		Value  asn1.RawValue
	}
	if _, err := asn1.UnmarshalWithParams(on.FullBytes, &seq, "tag:0"); err != nil {
		t.Fatal(err)
	}
	if !seq.TypeID.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 3}) || seq.Value.Tag != 0 || seq.Value.Class != asn1.ClassContextSpecific {
		t.Fatalf("otherName %v %+v", seq.TypeID, seq.Value)
	}
	var fields []asn1.RawValue // PermanentIdentifier SEQUENCE: identifierValue only
	if _, err := asn1.Unmarshal(seq.Value.Bytes, &fields); err != nil || len(fields) != 1 || fields[0].Tag != asn1.TagUTF8String || string(fields[0].Bytes) != pid {
		t.Fatalf("PermanentIdentifier %v %+v, want only identifierValue %q", err, fields, pid)
	}
	// URI
	if u := gns[2]; u.Class != asn1.ClassContextSpecific || u.Tag != 6 || string(u.Bytes) != testID.String() {
		t.Errorf("third name %+v, want URI %s", u, testID)
	}

	// Read back, by this package and by go.step.sm/crypto's x509util.
	n, err := ParseSubjectAltName(ext.Value)
	if err != nil || n.TPM != testTPM || n.PermanentIdentifier != pid || n.SPIFFEID != testID {
		t.Errorf("ParseSubjectAltName = %+v, %v", n, err)
	}
	sans, err := x509util.ParseSubjectAlternativeNames(&x509.Certificate{Extensions: []pkix.Extension{ext}, URIs: nil})
	if err != nil {
		t.Fatal(err)
	}
	hw := sans.TPMHardwareDetails
	if hw.Manufacturer != testTPM.Manufacturer || hw.Model != testTPM.Model || hw.Version != testTPM.Version {
		t.Errorf("x509util TPM details %+v", hw)
	}
	if len(sans.PermanentIdentifiers) != 1 || sans.PermanentIdentifiers[0].Identifier != pid || len(sans.PermanentIdentifiers[0].Assigner) != 0 {
		t.Errorf("x509util permanent identifiers %+v", sans.PermanentIdentifiers)
	}
}

func TestSubjectAltNameRefuses(t *testing.T) {
	pid := PermanentIdentifier([]byte("ek"))
	for name, n := range map[string]Names{
		"no manufacturer":     {TPM: TPM{Model: "m", Version: "v"}, PermanentIdentifier: pid, SPIFFEID: testID},
		"no model":            {TPM: TPM{Manufacturer: "m", Version: "v"}, PermanentIdentifier: pid, SPIFFEID: testID},
		"no version":          {TPM: TPM{Manufacturer: "m", Model: "m"}, PermanentIdentifier: pid, SPIFFEID: testID},
		"long model":          {TPM: TPM{Manufacturer: "m", Model: strings.Repeat("x", MaxAttributeLen+1), Version: "v"}, PermanentIdentifier: pid, SPIFFEID: testID},
		"control in model":    {TPM: TPM{Manufacturer: "m", Model: "a\nb", Version: "v"}, PermanentIdentifier: pid, SPIFFEID: testID},
		"invalid UTF-8":       {TPM: TPM{Manufacturer: "\xff", Model: "m", Version: "v"}, PermanentIdentifier: pid, SPIFFEID: testID},
		"no permanent id":     {TPM: testTPM, SPIFFEID: testID},
		"bad permanent id":    {TPM: testTPM, PermanentIdentifier: "urn:ek:sha256:abc", SPIFFEID: testID},
		"permanent id as hex": {TPM: testTPM, PermanentIdentifier: "urn:ek:sha256:" + strings.Repeat("ab", 32), SPIFFEID: testID},
		"no SPIFFE ID":        {TPM: testTPM, PermanentIdentifier: pid},
	} {
		if _, err := SubjectAltName(n); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// rawSAN builds a SAN value from raw GeneralNames.
func rawSAN(t *testing.T, gns ...asn1.RawValue) []byte {
	t.Helper()
	b, err := asn1.Marshal(gns)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func goodNames(t *testing.T) (dir, other, uri asn1.RawValue) {
	t.Helper()
	ext, err := SubjectAltName(Names{TPM: testTPM, PermanentIdentifier: PermanentIdentifier([]byte("ek")), SPIFFEID: testID})
	if err != nil {
		t.Fatal(err)
	}
	var gns []asn1.RawValue
	if _, err := asn1.Unmarshal(ext.Value, &gns); err != nil {
		t.Fatal(err)
	}
	return gns[0], gns[1], gns[2]
}

func dirName(t *testing.T, atvs ...pkix.AttributeTypeAndValue) asn1.RawValue {
	t.Helper()
	var rdns pkix.RDNSequence
	for _, a := range atvs {
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{a})
	}
	b, err := asn1.Marshal(rdns)
	if err != nil {
		t.Fatal(err)
	}
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: b}
}

func otherNameOf(t *testing.T, oid asn1.ObjectIdentifier, inner any) asn1.RawValue {
	t.Helper()
	v, err := asn1.Marshal(inner)
	if err != nil {
		t.Fatal(err)
	}
	b, err := asn1.MarshalWithParams(otherName{TypeID: oid, Value: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: v}}, "tag:0")
	if err != nil {
		t.Fatal(err)
	}
	return asn1.RawValue{FullBytes: b}
}

func TestParseSubjectAltNameRefuses(t *testing.T) {
	dn, on, uri := goodNames(t)
	if _, err := ParseSubjectAltName(rawSAN(t, dn, on, uri)); err != nil {
		t.Fatalf("good SAN refused: %v", err)
	}
	atv := func(oid asn1.ObjectIdentifier, v any) pkix.AttributeTypeAndValue {
		return pkix.AttributeTypeAndValue{Type: oid, Value: v}
	}
	pid := PermanentIdentifier([]byte("ek"))
	dns := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte("host.example")}
	ip := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 7, Bytes: []byte{127, 0, 0, 1}}
	email := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, Bytes: []byte("a@b")}
	rid := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 8, Bytes: []byte{0x2a, 0x03}}
	for name, v := range map[string][]byte{
		"not a SEQUENCE":                      {0x04, 0x00},
		"trailing bytes":                      append(rawSAN(t, dn, on, uri), 0),
		"no directoryName":                    rawSAN(t, on, uri),
		"two directoryNames":                  rawSAN(t, dn, dn, on, uri),
		"no otherName":                        rawSAN(t, dn, uri),
		"two otherNames":                      rawSAN(t, dn, on, on, uri),
		"no URI":                              rawSAN(t, dn, on),
		"two URIs":                            rawSAN(t, dn, on, uri, uri),
		"a DNS name":                          rawSAN(t, dn, on, uri, dns),
		"an IP address":                       rawSAN(t, dn, on, uri, ip),
		"an email":                            rawSAN(t, dn, on, uri, email),
		"a registeredID":                      rawSAN(t, dn, on, uri, rid),
		"URI not SPIFFE":                      rawSAN(t, dn, on, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte("https://example.org/x")}),
		"universal class":                     rawSAN(t, dn, on, uri, asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte("x")}),
		"primitive dirName":                   rawSAN(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, Bytes: []byte{0x30, 0x00}}, on, uri),
		"dirName not a Name":                  rawSAN(t, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: []byte{0x04, 0x01, 0x00}}, on, uri),
		"no TPM model":                        rawSAN(t, dirName(t, atv(OIDTPMManufacturer, "id:1"), atv(OIDTPMVersion, "id:2")), on, uri),
		"empty TPM version":                   rawSAN(t, dirName(t, atv(OIDTPMManufacturer, "id:1"), atv(OIDTPMModel, "m"), atv(OIDTPMVersion, "")), on, uri),
		"manufacturer twice":                  rawSAN(t, dirName(t, atv(OIDTPMManufacturer, "id:1"), atv(OIDTPMManufacturer, "id:1"), atv(OIDTPMModel, "m"), atv(OIDTPMVersion, "v")), on, uri),
		"extra attribute":                     rawSAN(t, dirName(t, atv(OIDTPMManufacturer, "id:1"), atv(OIDTPMModel, "m"), atv(OIDTPMVersion, "v"), atv(asn1.ObjectIdentifier{2, 5, 4, 3}, "cn")), on, uri),
		"model not a string":                  rawSAN(t, dirName(t, atv(OIDTPMManufacturer, "id:1"), atv(OIDTPMModel, 7), atv(OIDTPMVersion, "v")), on, uri),
		"otherName not a permanentIdentifier": rawSAN(t, dn, otherNameOf(t, asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 4}, permanentIdentifier{IdentifierValue: pid}), uri),
		"permanentIdentifier with assigner":   rawSAN(t, dn, otherNameOf(t, OIDPermanentIdentifier, permanentIdentifier{IdentifierValue: pid, Assigner: asn1.ObjectIdentifier{1, 2, 3}}), uri),
		"permanentIdentifier not urn:ek":      rawSAN(t, dn, otherNameOf(t, OIDPermanentIdentifier, permanentIdentifier{IdentifierValue: "serial:1234"}), uri),
		"permanentIdentifier empty":           rawSAN(t, dn, otherNameOf(t, OIDPermanentIdentifier, permanentIdentifier{}), uri),
	} {
		if n, err := ParseSubjectAltName(v); err == nil {
			t.Errorf("%s: accepted as %+v", name, n)
		}
	}
}

// testCA signs certificates from arbitrary templates.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	k := ecKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{key: k, cert: c, pool: pool}
}

// akTemplate is a certificate meeting the profile, for mutation.
func akTemplate(t *testing.T) *x509.Certificate {
	t.Helper()
	ext, err := SubjectAltName(Names{TPM: testTPM, PermanentIdentifier: PermanentIdentifier([]byte("ek")), SPIFFEID: testID})
	if err != nil {
		t.Fatal(err)
	}
	return &x509.Certificate{
		SerialNumber: big.NewInt(42),
		NotBefore:    testNow.Add(-time.Minute), NotAfter: testNow.Add(24 * time.Hour),
		ExtraExtensions:       []pkix.Extension{ext},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{OIDTCGKpAIKCertificate},
		BasicConstraintsValid: true,
		SubjectKeyId:          []byte{1, 2, 3, 4},
	}
}

func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCheckProfile(t *testing.T) {
	ca := newTestCA(t, "AK CA")
	ak := ecKey(t)
	good := ca.issue(t, akTemplate(t), ak.Public())
	n, err := CheckProfile(good)
	if err != nil {
		t.Fatalf("good certificate refused: %v", err)
	}
	if n.TPM != testTPM || n.SPIFFEID != testID {
		t.Errorf("names %+v", n)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	sanOf := func(critical bool, gns ...asn1.RawValue) pkix.Extension {
		return pkix.Extension{Id: OIDSubjectAltName, Critical: critical, Value: rawSAN(t, gns...)}
	}
	dn, on, uri := goodNames(t)
	cases := []struct {
		name string
		rule string
		mut  func(c *x509.Certificate)
		pub  crypto.PublicKey
	}{
		{"subject CN", RuleSubject, func(c *x509.Certificate) { c.Subject = pkix.Name{CommonName: "ak"} }, nil},
		{"subject serialNumber", RuleSubject, func(c *x509.Certificate) { c.Subject = pkix.Name{SerialNumber: "1"} }, nil},
		{"no SAN", RuleSubjectAltName, func(c *x509.Certificate) { c.ExtraExtensions = nil }, nil},
		{"SAN not critical", RuleSubjectAltName, func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{sanOf(false, dn, on, uri)} }, nil},
		{"SAN without permanent identifier", RuleSubjectAltName, func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{sanOf(true, dn, uri)} }, nil},
		{"SAN without TPM attributes", RuleSubjectAltName, func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{sanOf(true, on, uri)} }, nil},
		{"SAN without SPIFFE ID", RuleSubjectAltName, func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{sanOf(true, dn, on)} }, nil},
		{"no EKU", RuleExtKeyUsage, func(c *x509.Certificate) { c.UnknownExtKeyUsage = nil }, nil},
		{"EKU serverAuth", RuleExtKeyUsage, func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = nil
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}, nil},
		{"EKU AIK and serverAuth", RuleExtKeyUsage, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }, nil},
		{"EKU AIK second", RuleExtKeyUsage, func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{{1, 2, 3}, OIDTCGKpAIKCertificate}
		}, nil},
		{"EKU EK certificate", RuleExtKeyUsage, func(c *x509.Certificate) {
			c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{{2, 23, 133, 8, 1}}
		}, nil},
		{"CA", RuleBasicConstraints, func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign }, nil},
		{"no basicConstraints", RuleBasicConstraints, func(c *x509.Certificate) { c.BasicConstraintsValid = false }, nil},
		{"keyEncipherment too", RuleKeyUsage, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageKeyEncipherment }, nil},
		{"certSign instead", RuleKeyUsage, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCertSign }, nil},
		{"no key usage", RuleKeyUsage, func(c *x509.Certificate) { c.KeyUsage = 0 }, nil},
		{"unknown critical extension", RuleCriticalExt, func(c *x509.Certificate) {
			c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}})
		}, nil},
		{"RSA 1024 AK", RulePublicKey, func(c *x509.Certificate) {}, rsa1024.Public()},
	}
	for _, tc := range cases {
		tmpl := akTemplate(t)
		tc.mut(tmpl)
		pub := tc.pub
		if pub == nil {
			pub = ak.Public()
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		_, err = CheckProfile(c)
		var pe *ProfileError
		if !errors.As(err, &pe) || pe.Rule != tc.rule {
			t.Errorf("%s: error %v, want rule %s", tc.name, err, tc.rule)
		}
	}

	// No key identifiers: x509.CreateCertificate always writes the AKI of
	// a parent with an SKI, so use a parent without one.
	noSKI := akTemplate(t)
	noSKI.SubjectKeyId = nil
	parent := *ca.cert
	parent.SubjectKeyId = nil
	der, err := x509.CreateCertificate(rand.Reader, noSKI, &parent, ak.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	var pe *ProfileError
	if _, err := CheckProfile(c); !errors.As(err, &pe) || pe.Rule != RuleKeyIdentifiers {
		t.Errorf("no key identifiers: %v", err)
	}
	// Two SANs: crypto/x509 neither writes nor parses such a certificate;
	// CheckProfile refuses it anyway.
	two := *good
	two.Extensions = append(slices.Clone(good.Extensions), sanOf(true, dn, on, uri))
	if _, err := CheckProfile(&two); !errors.As(err, &pe) || pe.Rule != RuleSubjectAltName {
		t.Errorf("two SANs: %v", err)
	}
	if _, err := CheckProfile(nil); err == nil {
		t.Error("nil accepted")
	}
	v1 := *good
	v1.Version = 1
	if _, err := CheckProfile(&v1); !errors.As(err, &pe) || pe.Rule != RuleVersion {
		t.Errorf("version 1: %v", err)
	}
}

func TestCheckAKPublicKey(t *testing.T) {
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	r2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, ok := range []crypto.PublicKey{ecKey(t).Public(), r2048.Public()} {
		if err := CheckAKPublicKey(ok); err != nil {
			t.Errorf("%T refused: %v", ok, err)
		}
	}
	for _, bad := range []crypto.PublicKey{nil, p224.Public(), &rsa.PublicKey{}, struct{}{}} {
		if err := CheckAKPublicKey(bad); err == nil {
			t.Errorf("%T accepted", bad)
		}
	}
}

func TestVerify(t *testing.T) {
	root := newTestCA(t, "root")
	ak := ecKey(t)
	good := root.issue(t, akTemplate(t), ak.Public())
	f, err := Verify(good, nil, root.pool, testNow)
	if err != nil {
		t.Fatalf("good certificate: %v", err)
	}
	if f.TPM != testTPM || f.SPIFFEID != testID || len(f.Chain) != 2 || f.Chain[0] != good || !f.NotAfter.Equal(good.NotAfter) {
		t.Errorf("facts %+v", f)
	}
	var pe *ProfileError
	other := newTestCA(t, "root")
	if _, err := Verify(good, nil, other.pool, testNow); !errors.As(err, &pe) || pe.Rule != RuleChain {
		t.Errorf("foreign root: %v", err)
	}
	if _, err := Verify(good, nil, root.pool, testNow.Add(25*time.Hour)); !errors.As(err, &pe) || pe.Rule != RuleExpired {
		t.Errorf("expired: %v", err)
	}
	if _, err := Verify(good, nil, root.pool, testNow.Add(-time.Hour)); !errors.As(err, &pe) || pe.Rule != RuleExpired {
		t.Errorf("not yet valid: %v", err)
	}
	if _, err := Verify(nil, nil, root.pool, testNow); err == nil {
		t.Error("nil certificate accepted")
	}
	if _, err := Verify(good, nil, nil, testNow); err == nil {
		t.Error("nil roots accepted")
	}
	if _, err := Verify(good, nil, root.pool, time.Time{}); err == nil {
		t.Error("zero time accepted")
	}

	// A SAN with only a directoryName and an otherName is left unhandled
	// by crypto/x509: Verify takes it as handled and the profile judges
	// it (here: no SPIFFE ID), rather than failing on the extension.
	dn, on, _ := goodNames(t)
	tmpl := akTemplate(t)
	tmpl.ExtraExtensions = []pkix.Extension{{Id: OIDSubjectAltName, Critical: true, Value: rawSAN(t, dn, on)}}
	noURI := root.issue(t, tmpl, ak.Public())
	if len(noURI.UnhandledCriticalExtensions) == 0 {
		t.Fatal("crypto/x509 handled a SAN without URI (test premise)")
	}
	if _, err := Verify(noURI, nil, root.pool, testNow); !errors.As(err, &pe) || pe.Rule != RuleSubjectAltName {
		t.Errorf("SAN without URI: %v, want rule %s", err, RuleSubjectAltName)
	}
	// Another unhandled critical extension is refused before the chain.
	tmpl = akTemplate(t)
	tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3}, Critical: true, Value: []byte{5, 0}})
	crit := root.issue(t, tmpl, ak.Public())
	if _, err := Verify(crit, nil, root.pool, testNow); !errors.As(err, &pe) || pe.Rule != RuleCriticalExt {
		t.Errorf("unknown critical extension: %v", err)
	}
	// A certificate that chains but breaks the profile names the rule.
	tmpl = akTemplate(t)
	tmpl.IsCA = true
	ca := root.issue(t, tmpl, ak.Public())
	if _, err := Verify(ca, nil, root.pool, testNow); !errors.As(err, &pe) || pe.Rule != RuleBasicConstraints {
		t.Errorf("CA: %v", err)
	}
	if !bytes.Contains([]byte(pe.Error()), []byte("basic_constraints")) {
		t.Errorf("message %q", pe.Error())
	}
}
