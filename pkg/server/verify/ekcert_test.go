package verify

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testNow is the date these tests were written; every real leaf and CA used
// below is valid then (MANIFEST.md checked the chains on 2026-11-22).
var testNow = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

// allCATrust loads every vendor CA of cacerts/ as one bundle.
func allCATrust(t testing.TB) *EKTrust {
	t.Helper()
	// The vendor sets sit in one folder each: loading the top folder also
	// tests that bundle directories are walked.
	tr, err := testTrust(realPath(t, "cacerts"))
	if err != nil {
		t.Fatalf("LoadEKTrust(all cacerts): %v", err)
	}
	return tr
}

type realEK struct {
	path              string
	manufacturer      string // "" when the certificate has no TCG SAN
	model, version    string
	issuerCNHasPrefix string
	// ak: an AK certificate, which chains like an EK certificate but is
	// refused by the EK profile (ek_cert_profile).
	ak bool
	// quirk: the named EK profile quirk an EK certificate needs.
	quirk string
}

var realEKs = []realEK{
	{"quotes/lenovo-t490-stm/ek.crt", "id:53544D20", "ST33HTPHAHC0", "id:00490008", "STM TPM EK Intermediate CA 05", false, ""},
	{"ekcerts/stm-st33-keylime-tests/st33htphahb4_rsa_ek_padded.der", "id:53544D20", "ST33HTPHAHB4", "id:00490004", "STM TPM EK Intermediate CA 05", false, ""},
	{"ekcerts/stm-st33-keylime-tests/st33htphahb4_ecc_ek.der", "id:53544D20", "ST33HTPHAHB4", "id:00490004", "STM TPM ECC Intermediate CA 01", false, ""},
	{"ekcerts/gce-vtpm/uca_tpm_ecc_enc_cert.pem", "id:474F4F47", "vTPM", "id:20160511", "tpm_ek_v1_cloud_host-signer", false, ""},
	{"ekcerts/gce-vtpm/uca_tpm_ecc_sign_cert.pem", "id:474F4F47", "vTPM", "id:20160511", "tpm_ek_v1_cloud_host-signer", true, ""},
	{"ekcerts/gce-vtpm/uca_tpm_rsa_enc_cert.pem", "id:474F4F47", "vTPM", "id:20160511", "tpm_ek_v1_cloud_host-signer", false, ""},
	{"ekcerts/gce-vtpm/uca_tpm_rsa_sign_cert.pem", "id:474F4F47", "vTPM", "id:20160511", "tpm_ek_v1_cloud_host-signer", true, ""},
	{"ekcerts/gce-vtpm/pca_tpm_ecc_enc_cert.pem", "", "", "", "EK/AK CA Intermediate", false, QuirkGCEEKNoSAN},
	{"ekcerts/gce-vtpm/pca_tpm_ecc_sign_cert.pem", "", "", "", "EK/AK CA Intermediate", true, ""},
	{"ekcerts/gce-vtpm/pca_tpm_rsa_enc_cert.pem", "", "", "", "EK/AK CA Intermediate", false, QuirkGCEEKNoSAN},
	{"ekcerts/gce-vtpm/pca_tpm_rsa_sign_cert.pem", "", "", "", "EK/AK CA Intermediate", true, ""},
	{"quotes/gce-cos-85/nonce9009/ak_cert.der", "id:474F4F47", "vTPM", "id:20160511", "tpm_ek_v1_cloud_host-signer", true, ""},
}

// TestVerifyEKCertReal checks every real leaf against all real CA
// certificates, at testNow and at the leaf's NotBefore+1s: every one chains;
// the EK certificates pass VerifyEKCert (the two GCE "EK/AK CA
// Intermediate" ones through the named quirk), the AK certificates are
// refused by the EK profile.
func TestVerifyEKCertReal(t *testing.T) {
	trust := allCATrust(t)
	ok, eks, aks := 0, 0, 0
	for _, e := range realEKs {
		t.Run(filepath.Base(e.path), func(t *testing.T) {
			cert, err := ParseEKCert(readReal(t, e.path))
			if err != nil {
				t.Fatalf("ParseEKCert: %v", err)
			}
			for _, now := range []time.Time{testNow, cert.NotBefore.Add(time.Second)} {
				if e.ak {
					if _, err := verifyEKChain(cert, nil, trust, now); err != nil {
						t.Fatalf("chain at %s: %v", now, err)
					}
					if _, err := VerifyEKCert(cert, nil, trust, now); ReasonOf(err) != ReasonEKCertProfile {
						t.Fatalf("AK certificate: VerifyEKCert at %s = %v, want %s", now, err, ReasonEKCertProfile)
					}
					continue
				}
				f, err := VerifyEKCert(cert, nil, trust, now)
				if err != nil {
					t.Fatalf("VerifyEKCert at %s: %v", now, err)
				}
				if f.Quirk != e.quirk {
					t.Errorf("quirk %q, want %q", f.Quirk, e.quirk)
				}
				if f.Manufacturer != e.manufacturer || f.Model != e.model || f.Version != e.version {
					t.Errorf("attributes %q %q %q", f.Manufacturer, f.Model, f.Version)
				}
				if !strings.HasPrefix(f.Issuer, e.issuerCNHasPrefix) {
					t.Errorf("issuer %q", f.Issuer)
				}
				if f.Chain[0] != cert || len(f.Chain) < 2 {
					t.Errorf("chain %d long", len(f.Chain))
				}
				if len(cert.UnhandledCriticalExtensions) != 0 && e.manufacturer != "" && len(f.Chain) > 0 && f.Chain[0].UnhandledCriticalExtensions == nil {
					t.Errorf("caller's certificate was modified")
				}
			}
			ok++
			if e.ak {
				aks++
			} else {
				eks++
			}
		})
	}
	t.Logf("%d of %d real EK/AK leaf certificates chain to a self-signed root in cacerts/: %d EK certificates verify, %d AK certificates are refused as %s", ok, len(realEKs), eks, aks, ReasonEKCertProfile)
}

func TestParseEKCertPadding(t *testing.T) {
	raw := readReal(t, "quotes/lenovo-t490-stm/ek.crt")
	if _, err := x509.ParseCertificate(raw); err == nil {
		t.Fatal("expected the untrimmed NV blob to fail in crypto/x509")
	}
	c, err := ParseEKCert(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Raw) != 1170 {
		t.Errorf("DER %d bytes, want 1170", len(c.Raw))
	}
	zeroPadded := append(bytes.Clone(c.Raw), make([]byte, 100)...)
	if _, err := ParseEKCert(zeroPadded); err != nil {
		t.Errorf("zero padding: %v", err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"too large", append(bytes.Clone(raw), make([]byte, MaxEKCertSize)...)},
		{"garbage after DER", append(bytes.Clone(c.Raw), 0xff, 0x01)},
		{"truncated", c.Raw[:len(c.Raw)-1]},
		{"not a sequence", append([]byte{0x31}, c.Raw[1:]...)},
		{"bad length form", []byte{0x30, 0x80, 0, 0}},
		{"length too long", []byte{0x30, 0x83, 1, 0, 0}},
		{"bad signature algorithm bytes", func() []byte { b := bytes.Clone(c.Raw); b[4] = 0x05; return b }()},
		{"PEM of something else", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: c.Raw})},
	} {
		if _, err := ParseEKCert(tc.b); ReasonOf(err) != ReasonEKCertMalformed {
			t.Errorf("%s: %v, want %s", tc.name, err, ReasonEKCertMalformed)
		}
	}
	if _, err := ParseEKCert(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})); err != nil {
		t.Errorf("PEM: %v", err)
	}
}

// selfCA makes a throwaway CA and issues leaf certificates shaped like real EK
// certificates, to test what real data cannot show (missing attributes,
// foreign critical extensions, expiry).
type selfCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newSelfCA(t testing.TB, notBefore, notAfter time.Time) *selfCA {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test EK root"}, NotBefore: notBefore, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &selfCA{c, k}
}

func tcgSAN(t testing.TB, attrs [][2]string) pkix.Extension {
	var rdn pkix.RDNSequence
	oids := map[string]asn1.ObjectIdentifier{"m": oidTPMManufacturer, "n": oidTPMModel, "v": oidTPMVersion, "x": {2, 5, 4, 3}}
	for _, a := range attrs {
		rdn = append(rdn, pkix.RelativeDistinguishedNameSET{{Type: oids[a[0]], Value: a[1]}})
	}
	name, err := asn1.Marshal(rdn)
	if err != nil {
		t.Fatal(err)
	}
	gns, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSubjectAltName, Critical: true, Value: gns}
}

func (ca *selfCA) issue(t testing.TB, notBefore, notAfter time.Time, exts ...pkix.Extension) *x509.Certificate {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: notBefore, NotAfter: notAfter, ExtraExtensions: exts,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{2, 23, 133, 8, 1}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseEKCert(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerifyEKCertRejects(t *testing.T) {
	trust := allCATrust(t)
	t490, err := ParseEKCert(readReal(t, "quotes/lenovo-t490-stm/ek.crt"))
	if err != nil {
		t.Fatal(err)
	}
	gceTrust, err := testTrust(realPath(t, "cacerts/google-gce"))
	if err != nil {
		t.Fatal(err)
	}
	y := 365 * 24 * time.Hour
	ca := newSelfCA(t, testNow.Add(-10*y), testNow.Add(10*y))
	own := &EKTrust{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
	own.Roots.AddCert(ca.cert)
	good := [][2]string{{"m", "id:54455354"}, {"n", "model"}, {"v", "id:00010002"}}
	okCert := ca.issue(t, testNow.Add(-y), testNow.Add(y), tcgSAN(t, good))
	if f, err := VerifyEKCert(okCert, nil, own, testNow); err != nil || f.Manufacturer != "id:54455354" {
		t.Fatalf("control: %v %+v", err, f)
	}

	tampered := func() *x509.Certificate {
		der := bytes.Clone(t490.Raw)
		der[len(der)-1] ^= 1 // signature byte
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}()
	for _, c := range []struct {
		name  string
		cert  *x509.Certificate
		trust *EKTrust
		now   time.Time
		want  Reason
	}{
		{"real STM EK against Google roots only", t490, gceTrust, testNow, ReasonEKUntrusted},
		{"real STM EK, signature tampered", tampered, trust, testNow, ReasonEKUntrusted},
		{"real STM EK after it expires (2028-12-14)", t490, trust, time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC), ReasonEKExpired},
		{"real STM EK before it was issued", t490, trust, time.Date(2018, 1, 1, 0, 0, 0, 0, time.UTC), ReasonEKExpired},
		{"SAN without model", ca.issue(t, testNow.Add(-y), testNow.Add(y), tcgSAN(t, [][2]string{good[0], good[2]})), own, testNow, ReasonEKCertProfile},
		{"SAN with manufacturer twice", ca.issue(t, testNow.Add(-y), testNow.Add(y), tcgSAN(t, append(good, good[0]))), own, testNow, ReasonEKCertProfile},
		{"SAN with only a CN", ca.issue(t, testNow.Add(-y), testNow.Add(y), tcgSAN(t, [][2]string{{"x", "host"}})), own, testNow, ReasonEKCertProfile},
		{"SAN directoryName not a Name", ca.issue(t, testNow.Add(-y), testNow.Add(y), pkix.Extension{Id: oidSubjectAltName, Critical: true, Value: []byte{0x30, 0x05, 0xa4, 0x03, 0x04, 0x01, 0x00}}), own, testNow, ReasonEKCertProfile},
		{"other critical extension", ca.issue(t, testNow.Add(-y), testNow.Add(y), tcgSAN(t, good), pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{0x05, 0x00}}), own, testNow, ReasonEKCriticalExtension},
		{"expired leaf", ca.issue(t, testNow.Add(-2*y), testNow.Add(-y), tcgSAN(t, good)), own, testNow, ReasonEKExpired},
		{"no trust", okCert, nil, testNow, ReasonEKTrustConfig},
		{"zero time", okCert, own, time.Time{}, ReasonInvalidArgument},
		{"nil cert", nil, own, testNow, ReasonInvalidArgument},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := VerifyEKCert(c.cert, nil, c.trust, c.now)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("reason %q (%v), want %q", got, err, c.want)
			}
		})
	}

	// Expired intermediate: a root valid now, an intermediate that expired,
	// a leaf still valid.
	inter := func() *selfCA {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "test EK intermediate"}, NotBefore: testNow.Add(-5 * y), NotAfter: testNow.Add(-y),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return &selfCA{c, k}
	}()
	leaf := inter.issue(t, testNow.Add(-4*y), testNow.Add(y), tcgSAN(t, good))
	if _, err := VerifyEKCert(leaf, []*x509.Certificate{inter.cert}, own, testNow); ReasonOf(err) != ReasonEKExpired {
		t.Errorf("expired intermediate: %v", err)
	}
	if _, err := VerifyEKCert(leaf, nil, own, testNow.Add(-2*y)); ReasonOf(err) != ReasonEKUntrusted {
		t.Errorf("missing intermediate: %v", err)
	}
	if _, err := VerifyEKCert(leaf, []*x509.Certificate{inter.cert}, own, testNow.Add(-2*y)); err != nil {
		t.Errorf("extra intermediate at a valid time: %v", err)
	}
}

func TestEKAttributes(t *testing.T) {
	c, err := ParseEKCert(readReal(t, "quotes/lenovo-t490-stm/ek.crt"))
	if err != nil {
		t.Fatal(err)
	}
	m, n, v, err := EKAttributes(c)
	if err != nil || m != "id:53544D20" || n != "ST33HTPHAHC0" || v != "id:00490008" {
		t.Fatalf("%q %q %q %v", m, n, v, err)
	}
	pca, err := ParseEKCert(readReal(t, "ekcerts/gce-vtpm/pca_tpm_rsa_enc_cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := EKAttributes(pca); ReasonOf(err) != ReasonEKSAN {
		t.Errorf("no SAN: %v", err)
	}
}

func TestEKHash(t *testing.T) {
	c, err := ParseEKCert(readReal(t, "quotes/lenovo-t490-stm/ek.crt"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := EKHash(c.PublicKey)
	if err != nil || len(h) != 64 || strings.ToLower(h) != h {
		t.Fatalf("%q %v", h, err)
	}
	if _, err := EKHash(struct{}{}); ReasonOf(err) != ReasonInvalidArgument {
		t.Errorf("bad key: %v", err)
	}
}
