package issuer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.step.sm/crypto/pemutil"
	"go.step.sm/crypto/x509util"

	"github.com/tpmid/tpmid/ca/akcert"
	"github.com/tpmid/tpmid/pkg/common/chaincache"
)

var (
	t0      = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	testTPM = akcert.TPM{Manufacturer: "id:53544D20", Model: "ST33HTPHAHB4", Version: "id:00490004"}
	testID  = spiffeid.RequireFromString("spiffe://example.org/spire/agent/tpmid/0123abcd")
)

func clockAt(t time.Time) func() time.Time { return func() time.Time { return t } }

// newCA inits a CA at t0 in a temporary directory and loads it.
func newCA(t testing.TB, o InitOptions) (string, *CA) {
	t.Helper()
	if o.Dir == "" {
		o.Dir = filepath.Join(t.TempDir(), "ca")
	}
	if o.Now == nil {
		o.Now = clockAt(t0)
	}
	if _, err := Init(context.Background(), o); err != nil {
		t.Fatalf("Init: %v", err)
	}
	ca, err := Load(context.Background(), o.Dir, WithClock(o.Now))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { ca.Close() })
	return o.Dir, ca
}

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func der(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// request is a valid AK request for fresh keys.
func request(t testing.TB) (AKRequest, *ecdsa.PrivateKey) {
	t.Helper()
	ak, ek := ecKey(t), ecKey(t)
	return AKRequest{AKPublic: ak.Public(), EKPublicDER: der(t, ek.Public()), TPM: testTPM, SPIFFEID: testID}, ek
}

// goVerify verifies leaf with crypto/x509 alone, the way
// pkg/server/verify does for EK certificates: the critical SAN is taken as
// handled once read (crypto/x509 leaves it unhandled when it holds no name
// type it knows), and the extended key usage is not constrained.
func goVerify(leaf *x509.Certificate, intermediates []*x509.Certificate, root *x509.Certificate, now time.Time) error {
	c := *leaf
	c.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(leaf.UnhandledCriticalExtensions),
		func(o asn1.ObjectIdentifier) bool { return o.Equal(akcert.OIDSubjectAltName) })
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, i := range intermediates {
		inter.AddCert(i)
	}
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// stepCAChecks mirrors what step-ca v0.30.2 checks of an AK certificate in
// acme/challenge.go (doTPMAttestationFormat and validateAKCertificate)
// before it looks at the attested key: x5c = [AK certificate,
// intermediates...], chain to the attestation roots at now (SAN removed
// from the unhandled critical extensions, any EKU), version 3, empty
// subject, not a CA, an EKU extension whose first OID is 2.23.133.8.3,
// TPM manufacturer, model and version in the SAN, and (in its caller) the
// order's permanent-identifier among the SAN's permanent identifiers.
func stepCAChecks(x5c []*x509.Certificate, root *x509.Certificate, now time.Time, orderValue string) error {
	ak := x5c[0]
	if err := goVerify(ak, x5c[1:], root, now.Truncate(time.Second)); err != nil {
		return err
	}
	if ak.Version != 3 {
		return errors.New("version")
	}
	if ak.Subject.String() != "" {
		return errors.New("subject must be empty")
	}
	if ak.IsCA {
		return errors.New("must not be a CA")
	}
	valid := false
	for _, ext := range ak.Extensions {
		if ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 37}) {
			var ekus []asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(ext.Value, &ekus); err != nil || len(ekus) == 0 || !ekus[0].Equal(asn1.ObjectIdentifier{2, 23, 133, 8, 3}) {
				return errors.New("EKU missing tcg-kp-AIKCertificate")
			}
			valid = true
		}
	}
	if !valid {
		return errors.New("no EKU extension")
	}
	sans, err := x509util.ParseSubjectAlternativeNames(ak)
	if err != nil {
		return err
	}
	if d := sans.TPMHardwareDetails; d.Manufacturer == "" || d.Model == "" || d.Version == "" {
		return errors.New("missing TPM details")
	}
	for _, p := range sans.PermanentIdentifiers {
		if p.Identifier == orderValue {
			return nil
		}
	}
	return errors.New("permanent identifier does not match")
}

func TestInit(t *testing.T) {
	dir, ca := newCA(t, InitOptions{})
	// Files and modes.
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, %v", fi.Mode(), err)
	}
	cfg := ca.Config()
	want := map[string]os.FileMode{
		ConfigFile: 0o600, RootCertFile: 0o644, IntermediateCertFile: 0o644, IntermediatesCertFile: 0o644,
		"root.key": 0o600, cfg.Intermediate.Certificate: 0o644,
		strings.TrimSuffix(cfg.Intermediate.Certificate, ".crt") + ".key": 0o600,
	}
	for name, mode := range want {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %#o, want %#o", name, fi.Mode().Perm(), mode)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(want) {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("files %v, want %d", names, len(want))
	}

	// ca.json.
	if cfg.Format != 1 || cfg.KMS != "softkms:" || cfg.Name != "tpmid CA" || cfg.KeyAlgorithm != "ECDSA-P256" ||
		cfg.Root.Key != "softkms:path=root.key" || cfg.Root.Certificate != "root.crt" ||
		cfg.Intermediate.Key != "softkms:path=intermediate-20261125T120000Z.key" || cfg.Intermediate.Certificate != "intermediate-20261125T120000Z.crt" ||
		cfg.Root.Lifetime != Duration(10*Year) || cfg.Intermediate.Lifetime != Duration(Year) ||
		cfg.AK.Lifetime != Duration(24*time.Hour) || cfg.AK.Backdate != Duration(time.Minute) || cfg.AK.Template != "" || len(cfg.Previous) != 0 {
		t.Errorf("ca.json %+v", cfg)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	for _, s := range []string{`"lifetime": "10y"`, `"lifetime": "1y"`, `"lifetime": "24h"`, `"backdate": "1m"`} {
		if !bytes.Contains(raw, []byte(s)) {
			t.Errorf("ca.json lacks %s:\n%s", s, raw)
		}
	}

	// Root and intermediate.
	root, inter := ca.Root(), ca.Intermediate()
	if root.Subject.CommonName != "tpmid CA Root CA" || !root.IsCA || root.MaxPathLen != 1 || !bytes.Equal(root.RawIssuer, root.RawSubject) ||
		root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("root %v CA %t pathlen %d usage %v", root.Subject, root.IsCA, root.MaxPathLen, root.KeyUsage)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("root is not self-signed: %v", err)
	}
	if inter.Subject.CommonName != "tpmid CA Intermediate CA" || !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero ||
		inter.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign || !bytes.Equal(inter.AuthorityKeyId, root.SubjectKeyId) {
		t.Errorf("intermediate %v CA %t pathlen %d usage %v", inter.Subject, inter.IsCA, inter.MaxPathLen, inter.KeyUsage)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate not issued by root: %v", err)
	}
	for _, c := range []*x509.Certificate{root, inter} {
		k, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() || c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("%s: key %T, signature %v; want ECDSA P-256", c.Subject, c.PublicKey, c.SignatureAlgorithm)
		}
		if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
			t.Errorf("%s serial %v", c.Subject, c.SerialNumber)
		}
	}
	if !root.NotBefore.Equal(t0.Add(-time.Minute)) || !root.NotAfter.Equal(t0.Add(10*Year)) || !inter.NotAfter.Equal(t0.Add(Year)) {
		t.Errorf("validity root %v-%v intermediate %v", root.NotBefore, root.NotAfter, inter.NotAfter)
	}
	// The key files hold the keys of the certificates.
	for name, c := range map[string]*x509.Certificate{"root.key": root, "intermediate-20261125T120000Z.key": inter} {
		k, err := pemutil.Read(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := k.(crypto.Signer); !ok || !samePublicKey(s.Public(), c.PublicKey) {
			t.Errorf("%s does not hold the key of %s", name, c.Subject)
		}
	}
	// The outputs.
	for name, wantCerts := range map[string][]*x509.Certificate{RootCertFile: {root}, IntermediateCertFile: {inter}, IntermediatesCertFile: {inter}} {
		got, err := pemutil.ReadCertificateBundle(filepath.Join(dir, name))
		if err != nil || len(got) != len(wantCerts) || !got[0].Equal(wantCerts[0]) {
			t.Errorf("%s: %d certificates, %v", name, len(got), err)
		}
	}
}

func TestInitOptions(t *testing.T) {
	dir, ca := newCA(t, InitOptions{
		Name: "Example", KeyAlgorithm: "ecdsa-p384",
		RootLifetime: Duration(2 * Year), IntermediateLifetime: Duration(30 * 24 * time.Hour), AKLifetime: Duration(time.Hour),
	})
	if ca.Root().Subject.CommonName != "Example Root CA" || ca.Intermediate().Subject.CommonName != "Example Intermediate CA" {
		t.Errorf("names %v %v", ca.Root().Subject, ca.Intermediate().Subject)
	}
	if k := ca.Root().PublicKey.(*ecdsa.PublicKey); k.Curve != elliptic.P384() {
		t.Errorf("root curve %v", k.Curve.Params().Name)
	}
	if !ca.Root().NotAfter.Equal(t0.Add(2*Year)) || !ca.Intermediate().NotAfter.Equal(t0.Add(30*24*time.Hour)) || ca.AKLifetime() != time.Hour {
		t.Errorf("lifetimes %v %v %v", ca.Root().NotAfter, ca.Intermediate().NotAfter, ca.AKLifetime())
	}
	req, _ := request(t)
	chain, err := ca.IssueAK(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if chain[0].NotAfter.Sub(t0) != time.Hour {
		t.Errorf("AK lifetime %v, want ak.lifetime 1h", chain[0].NotAfter.Sub(t0))
	}
	_ = dir

	for name, o := range map[string]InitOptions{
		"no dir":                       {},
		"bad algorithm":                {Dir: t.TempDir(), KeyAlgorithm: "DSA"},
		"intermediate outlives root":   {Dir: t.TempDir(), RootLifetime: Duration(Year), IntermediateLifetime: Duration(2 * Year)},
		"negative lifetime":            {Dir: t.TempDir(), AKLifetime: Duration(-time.Hour)},
		"missing template":             {Dir: t.TempDir(), AKTemplate: filepath.Join(t.TempDir(), "none.tpl")},
		"root key of another KMS":      {Dir: t.TempDir(), RootKey: "pkcs11:id=01;object=x"},
		"softkms key URI without path": {Dir: t.TempDir(), RootKey: "softkms:"},
	} {
		if _, err := Init(context.Background(), o); err == nil {
			t.Errorf("%s: accepted", name)
		} else if o.Dir != "" {
			if _, err := os.Stat(filepath.Join(o.Dir, ConfigFile)); err == nil {
				t.Errorf("%s: ca.json written", name)
			}
		}
	}
}

// TestIssueAKProfile checks every field of the AK certificate profile.
func TestIssueAKProfile(t *testing.T) {
	_, ca := newCA(t, InitOptions{})
	req, ek := request(t)
	chain, err := ca.IssueAK(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || !chain[1].Equal(ca.Intermediate()) {
		t.Fatalf("chain of %d, want [leaf, intermediate]", len(chain))
	}
	leaf := chain[0]
	// Version, subject.
	if leaf.Version != 3 {
		t.Errorf("version %d", leaf.Version)
	}
	if !bytes.Equal(leaf.RawSubject, []byte{0x30, 0x00}) || leaf.Subject.String() != "" {
		t.Errorf("subject %q (% x)", leaf.Subject, leaf.RawSubject)
	}
	// Key.
	if !samePublicKey(leaf.PublicKey, req.AKPublic) {
		t.Error("not the AK's key")
	}
	// subjectAltName: critical, TCG directoryName, permanent identifier,
	// SPIFFE ID URI.
	var sanExt *pkix.Extension
	for i, e := range leaf.Extensions {
		if e.Id.Equal(akcert.OIDSubjectAltName) {
			sanExt = &leaf.Extensions[i]
		}
	}
	if sanExt == nil || !sanExt.Critical {
		t.Fatalf("SAN %+v, want critical", sanExt)
	}
	names, err := akcert.ParseSubjectAltName(sanExt.Value)
	if err != nil {
		t.Fatal(err)
	}
	wantPID := akcert.PermanentIdentifier(req.EKPublicDER)
	if names.TPM != testTPM || names.PermanentIdentifier != wantPID || names.SPIFFEID != testID {
		t.Errorf("SAN %+v", names)
	}
	if pid, _ := akcert.PermanentIdentifierOf(ek.Public()); pid != wantPID {
		t.Errorf("permanent identifier %s, want %s", wantPID, pid)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != testID.String() || len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.IPAddresses) != 0 {
		t.Errorf("URIs %v DNS %v email %v IP %v", leaf.URIs, leaf.DNSNames, leaf.EmailAddresses, leaf.IPAddresses)
	}
	sans, err := x509util.ParseSubjectAlternativeNames(leaf)
	if err != nil || len(sans.PermanentIdentifiers) != 1 || sans.PermanentIdentifiers[0].Identifier != wantPID ||
		sans.TPMHardwareDetails.Manufacturer != testTPM.Manufacturer || sans.TPMHardwareDetails.Model != testTPM.Model || sans.TPMHardwareDetails.Version != testTPM.Version {
		t.Errorf("x509util reads %+v, %v", sans, err)
	}
	// EKU 2.23.133.8.3 only.
	var ekus []asn1.ObjectIdentifier
	for _, e := range leaf.Extensions {
		if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 37}) {
			if _, err := asn1.Unmarshal(e.Value, &ekus); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(ekus) != 1 || !ekus[0].Equal(asn1.ObjectIdentifier{2, 23, 133, 8, 3}) || len(leaf.ExtKeyUsage) != 0 {
		t.Errorf("EKU %v %v", ekus, leaf.ExtKeyUsage)
	}
	// Not a CA, digitalSignature only.
	if !leaf.BasicConstraintsValid || leaf.IsCA {
		t.Errorf("basicConstraints valid %t CA %t", leaf.BasicConstraintsValid, leaf.IsCA)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %#x", leaf.KeyUsage)
	}
	// Lifetime 24h from now, backdated a minute.
	if !leaf.NotBefore.Equal(t0.Add(-time.Minute)) || !leaf.NotAfter.Equal(t0.Add(24*time.Hour)) {
		t.Errorf("validity %v to %v", leaf.NotBefore, leaf.NotAfter)
	}
	// Serial: positive, at most 128 bits, random.
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v", leaf.SerialNumber)
	}
	serials := map[string]bool{leaf.SerialNumber.String(): true}
	long := 0
	for range 32 {
		c, err := ca.IssueAK(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if serials[c[0].SerialNumber.String()] {
			t.Fatal("repeated serial")
		}
		serials[c[0].SerialNumber.String()] = true
		if c[0].SerialNumber.BitLen() > 120 {
			long++
		}
	}
	if long < 16 { // 32 draws of 128 random bits: almost all over 120 bits
		t.Errorf("only %d of 32 serials over 120 bits: not 128 random bits", long)
	}
	// Key identifiers.
	ski, _ := x509util.GenerateSubjectKeyID(req.AKPublic)
	if !bytes.Equal(leaf.SubjectKeyId, ski) || !bytes.Equal(leaf.AuthorityKeyId, ca.Intermediate().SubjectKeyId) {
		t.Errorf("SKI % x AKI % x", leaf.SubjectKeyId, leaf.AuthorityKeyId)
	}
	// No extension beyond the profile's.
	var ids []string
	for _, e := range leaf.Extensions {
		ids = append(ids, e.Id.String())
	}
	slices.Sort(ids)
	if want := []string{"2.5.29.14", "2.5.29.15", "2.5.29.17", "2.5.29.19", "2.5.29.35", "2.5.29.37"}; !slices.Equal(ids, want) {
		t.Errorf("extensions %v, want %v", ids, want)
	}
	if leaf.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("signature %v", leaf.SignatureAlgorithm)
	}

	// The chain verifies to the root with crypto/x509 alone, and by
	// this package, and passes what step-ca checks.
	if err := goVerify(leaf, chain[1:], ca.Root(), t0); err != nil {
		t.Errorf("crypto/x509: %v", err)
	}
	if _, err := x509.ParseCertificate(leaf.Raw); err != nil {
		t.Error(err)
	}
	f, err := ca.VerifyAK(leaf, nil, t0)
	if err != nil || f.PermanentIdentifier != wantPID || len(f.Chain) != 3 {
		t.Errorf("VerifyAK: %+v, %v", f, err)
	}
	if err := stepCAChecks(chain, ca.Root(), t0, wantPID); err != nil {
		t.Errorf("step-ca's checks: %v", err)
	}
	if err := stepCAChecks(chain, ca.Root(), t0, "urn:ek:sha256:"+strings.Repeat("A", 43)+"="); err == nil {
		t.Error("step-ca's checks: another permanent identifier matched")
	}

	// An RSA 2048 AK is certified the same way.
	rsaAK, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	req.AKPublic = rsaAK.Public()
	chain, err = ca.IssueAK(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if chain[0].KeyUsage != x509.KeyUsageDigitalSignature || stepCAChecks(chain, ca.Root(), t0, wantPID) != nil {
		t.Errorf("RSA AK certificate: usage %v", chain[0].KeyUsage)
	}
}

func TestIssueAKRefuses(t *testing.T) {
	_, ca := newCA(t, InitOptions{})
	r1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for name, tc := range map[string]struct {
		mut func(*AKRequest)
		ctx context.Context
	}{
		"no AK":              {mut: func(r *AKRequest) { r.AKPublic = nil }},
		"RSA 1024 AK":        {mut: func(r *AKRequest) { r.AKPublic = r1024.Public() }},
		"P-224 AK":           {mut: func(r *AKRequest) { r.AKPublic = p224.Public() }},
		"no EK":              {mut: func(r *AKRequest) { r.EKPublicDER = nil }},
		"EK not DER":         {mut: func(r *AKRequest) { r.EKPublicDER = []byte("not a key") }},
		"AK is the EK":       {mut: func(r *AKRequest) { r.EKPublicDER = der(t, r.AKPublic) }},
		"no manufacturer":    {mut: func(r *AKRequest) { r.TPM.Manufacturer = "" }},
		"no model":           {mut: func(r *AKRequest) { r.TPM.Model = "" }},
		"no version":         {mut: func(r *AKRequest) { r.TPM.Version = "" }},
		"no SPIFFE ID":       {mut: func(r *AKRequest) { r.SPIFFEID = spiffeid.ID{} }},
		"negative lifetime":  {mut: func(r *AKRequest) { r.Lifetime = -time.Hour }},
		"cancelled":          {mut: func(*AKRequest) {}, ctx: cancelled},
		"ends before starts": {mut: func(r *AKRequest) { r.NotBefore = ca.Intermediate().NotAfter.Add(time.Hour) }},
		"already expired":    {mut: func(r *AKRequest) { r.NotBefore = t0.Add(-48 * time.Hour) }},
	} {
		req, _ := request(t)
		tc.mut(&req)
		ctx := tc.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		if c, err := ca.IssueAK(ctx, req); err == nil {
			t.Errorf("%s: issued %v", name, c[0].Subject)
		}
	}
}

// TestIssueAKConcurrent: one loaded CA serves concurrent issuances (run
// with -race).
func TestIssueAKConcurrent(t *testing.T) {
	_, ca := newCA(t, InitOptions{})
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			for range 10 {
				req, _ := request(t)
				chain, err := ca.IssueAK(context.Background(), req)
				if err == nil {
					_, err = ca.VerifyAK(chain[0], nil, t0)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestIssueAKValidity(t *testing.T) {
	dir, ca := newCA(t, InitOptions{IntermediateLifetime: Duration(48 * time.Hour)})
	req, _ := request(t)
	// A lifetime in the request.
	req.Lifetime = 2 * time.Hour
	chain, err := ca.IssueAK(context.Background(), req)
	if err != nil || !chain[0].NotAfter.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("lifetime 2h: %v, %v", chain[0].NotAfter, err)
	}
	// An explicit notBefore: exactly [NotBefore, NotBefore+lifetime].
	req.NotBefore = t0.Add(time.Hour)
	chain, err = ca.IssueAK(context.Background(), req)
	if err != nil || !chain[0].NotBefore.Equal(t0.Add(time.Hour)) || !chain[0].NotAfter.Equal(t0.Add(3*time.Hour)) {
		t.Errorf("notBefore: %v-%v, %v", chain[0].NotBefore, chain[0].NotAfter, err)
	}
	// Never past the intermediate.
	near, err := Load(context.Background(), dir, WithClock(clockAt(t0.Add(40*time.Hour))))
	if err != nil {
		t.Fatal(err)
	}
	defer near.Close()
	req.NotBefore, req.Lifetime = time.Time{}, 0
	chain, err = near.IssueAK(context.Background(), req)
	if err != nil || !chain[0].NotAfter.Equal(ca.Intermediate().NotAfter) {
		t.Errorf("near the intermediate's end: %v, %v; want %v", chain[0].NotAfter, err, ca.Intermediate().NotAfter)
	}
	// An expired intermediate loads but does not issue.
	late, err := Load(context.Background(), dir, WithClock(clockAt(t0.Add(49*time.Hour))))
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if _, err := late.IssueAK(context.Background(), req); err == nil || !strings.Contains(err.Error(), "rotate-intermediate") {
		t.Errorf("expired intermediate: %v", err)
	}
}

func TestRotateIntermediate(t *testing.T) {
	dir, ca := newCA(t, InitOptions{})
	req, _ := request(t)
	old, err := ca.IssueAK(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	oldInter := ca.Intermediate()

	t1 := t0.Add(time.Hour)
	cfg, err := RotateIntermediate(context.Background(), dir, RotateOptions{Now: clockAt(t1)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Intermediate.Certificate != "intermediate-20261125T130000Z.crt" || cfg.Intermediate.Key != "softkms:path=intermediate-20261125T130000Z.key" ||
		len(cfg.Previous) != 1 || cfg.Previous[0].Certificate != "intermediate-20261125T120000Z.crt" || cfg.Previous[0].Retired == nil || !cfg.Previous[0].Retired.Equal(t1) {
		t.Errorf("ca.json after rotation %+v", cfg)
	}
	if fi, err := os.Stat(filepath.Join(dir, "intermediate-20261125T130000Z.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("new key file: %v %v", fi, err)
	}
	ca2, err := Load(context.Background(), dir, WithClock(clockAt(t1)))
	if err != nil {
		t.Fatal(err)
	}
	defer ca2.Close()
	newInter := ca2.Intermediate()
	if newInter.Equal(oldInter) || samePublicKey(newInter.PublicKey, oldInter.PublicKey) {
		t.Fatal("the intermediate did not change")
	}
	if !ca2.Root().Equal(ca.Root()) || newInter.CheckSignatureFrom(ca.Root()) != nil {
		t.Error("the new intermediate is not under the same root")
	}
	if b := ca2.Intermediates(); len(b) != 2 || !b[0].Equal(newInter) || !b[1].Equal(oldInter) {
		t.Errorf("bundle of %d", len(b))
	}
	fresh, err := ca2.IssueAK(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !fresh[1].Equal(newInter) || !bytes.Equal(fresh[0].AuthorityKeyId, newInter.SubjectKeyId) {
		t.Error("new certificates are not issued by the new intermediate")
	}
	// Both the old and the new AK certificates verify against the bundle
	// (leaf alone: the CA brings the intermediates), and with the files a
	// relying party has (root.crt, intermediates.crt).
	bundle, err := pemutil.ReadCertificateBundle(filepath.Join(dir, IntermediatesCertFile))
	if err != nil || len(bundle) != 2 {
		t.Fatalf("intermediates.crt: %d, %v", len(bundle), err)
	}
	rootFile, err := pemutil.ReadCertificate(filepath.Join(dir, RootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := pemutil.ReadCertificate(filepath.Join(dir, IntermediateCertFile))
	if err != nil || !cur.Equal(newInter) {
		t.Errorf("intermediate.crt is not the new intermediate: %v", err)
	}
	for name, leaf := range map[string]*x509.Certificate{"old": old[0], "new": fresh[0]} {
		if _, err := ca2.VerifyAK(leaf, nil, t1); err != nil {
			t.Errorf("%s AK certificate against the bundle: %v", name, err)
		}
		if err := goVerify(leaf, bundle, rootFile, t1); err != nil {
			t.Errorf("%s AK certificate with root.crt and intermediates.crt: %v", name, err)
		}
	}
	// With only the new intermediate the old certificate does not verify:
	// the bundle is what keeps it.
	if err := goVerify(old[0], []*x509.Certificate{newInter}, rootFile, t1); err == nil {
		t.Error("old certificate verified through the new intermediate")
	}

	// A second rotation in the same second gets its own names; the first
	// intermediate is still in the bundle (not expired).
	cfg, err = RotateIntermediate(context.Background(), dir, RotateOptions{Now: clockAt(t1), Lifetime: Duration(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Intermediate.Certificate != "intermediate-20261125T130000Z-2.crt" || len(cfg.Previous) != 2 || cfg.Intermediate.Lifetime != Duration(24*time.Hour) {
		t.Errorf("second rotation %+v", cfg)
	}
	// Once expired, previous intermediates leave the bundle at the next
	// rotation: at t0+2y the first two (1y) have expired, the third (24h) too.
	t2 := t0.Add(2 * Year)
	cfg, err = RotateIntermediate(context.Background(), dir, RotateOptions{Now: clockAt(t2)})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Previous) != 0 {
		t.Errorf("expired intermediates kept: %+v", cfg.Previous)
	}
	ca3, err := Load(context.Background(), dir, WithClock(clockAt(t2)))
	if err != nil {
		t.Fatal(err)
	}
	defer ca3.Close()
	if len(ca3.Intermediates()) != 1 {
		t.Errorf("bundle of %d after expiry", len(ca3.Intermediates()))
	}

	// Rotation needs the root key.
	if err := os.Rename(filepath.Join(dir, "root.key"), filepath.Join(dir, "root.key.offline")); err != nil {
		t.Fatal(err)
	}
	if _, err := RotateIntermediate(context.Background(), dir, RotateOptions{Now: clockAt(t2)}); err == nil {
		t.Error("rotated without the root key")
	}
	if _, err := RotateIntermediate(context.Background(), t.TempDir(), RotateOptions{}); err == nil {
		t.Error("rotated a directory without CA")
	}
}

func TestTemplateOverride(t *testing.T) {
	tdir := t.TempDir()
	good := filepath.Join(tdir, "ak.tpl")
	// The built-in template plus a CRL distribution point, an OCSP server
	// and a certificate policy.
	tpl := strings.Replace(DefaultAKTemplate, `"basicConstraints": {"isCA": false}`, `"basicConstraints": {"isCA": false},
	"crlDistributionPoints": ["http://ca.example/ak.crl"],
	"ocspServer": ["http://ocsp.example"],
	"policyIdentifiers": ["1.3.6.1.4.1.99999.1"]`, 1)
	if tpl == DefaultAKTemplate {
		t.Fatal("template anchor not found")
	}
	if err := os.WriteFile(good, []byte(tpl), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, ca := newCA(t, InitOptions{AKTemplate: good})
	if ca.Config().AK.Template != good {
		t.Errorf("ca.json template %q", ca.Config().AK.Template)
	}
	req, _ := request(t)
	chain, err := ca.IssueAK(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	leaf := chain[0]
	if !slices.Equal(leaf.CRLDistributionPoints, []string{"http://ca.example/ak.crl"}) || !slices.Equal(leaf.OCSPServer, []string{"http://ocsp.example"}) ||
		len(leaf.PolicyIdentifiers) != 1 || !leaf.PolicyIdentifiers[0].Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}) {
		t.Errorf("template additions missing: CRL %v OCSP %v policies %v", leaf.CRLDistributionPoints, leaf.OCSPServer, leaf.PolicyIdentifiers)
	}
	if err := stepCAChecks(chain, ca.Root(), t0, akcert.PermanentIdentifier(req.EKPublicDER)); err != nil {
		t.Errorf("step-ca's checks: %v", err)
	}

	// Templates that break the profile: Load refuses them (its test
	// issuance), and IssueAK would too.
	for name, repl := range map[string][2]string{
		"subject":          {`"subject": {}`, `"subject": {"commonName": "ak"}`},
		"no EKU":           {`"unknownExtKeyUsage": ["2.23.133.8.3"],`, ``},
		"serverAuth":       {`"unknownExtKeyUsage": ["2.23.133.8.3"],`, `"unknownExtKeyUsage": ["2.23.133.8.3"], "extKeyUsage": ["serverAuth"],`},
		"CA":               {`"basicConstraints": {"isCA": false}`, `"basicConstraints": {"isCA": true, "maxPathLen": 0}`},
		"SAN not critical": {`"critical": true`, `"critical": false`},
		"DNS SAN instead":  {`{"id": "2.5.29.17", "critical": true, "value": {{ toJson .AK.SubjectAltName }}}`, `{"id": "1.2.3.4", "value": "AA=="}], "dnsNames": ["host.example"], "extensions": [{"id": "1.2.3.5", "value": "AA=="}`},
		"keyEncipherment":  {`"keyUsage": ["digitalSignature"]`, `"keyUsage": ["digitalSignature", "keyEncipherment"]`},
	} {
		bad := strings.Replace(DefaultAKTemplate, repl[0], repl[1], 1)
		if bad == DefaultAKTemplate {
			t.Fatalf("%s: anchor %q not found", name, repl[0])
		}
		p := filepath.Join(tdir, "bad.tpl")
		if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		setTemplate(t, dir, p)
		if c, err := Load(context.Background(), dir, WithClock(clockAt(t0))); err == nil {
			c.Close()
			t.Errorf("%s: template loaded", name)
		} else if t.Logf("%s: %v", name, err); !strings.Contains(err.Error(), "AK profile") && !strings.Contains(err.Error(), "AK certificate") {
			t.Errorf("%s: error %v does not name the profile", name, err)
		}
	}
	// A template's fail stops issuance with its message.
	p := filepath.Join(tdir, "fail.tpl")
	os.WriteFile(p, []byte(`{{ fail "no AK certificates today" }}`), 0o644)
	setTemplate(t, dir, p)
	if _, err := Load(context.Background(), dir, WithClock(clockAt(t0))); err == nil || !strings.Contains(err.Error(), "no AK certificates today") {
		t.Errorf("fail template: %v", err)
	}
	// A template that is not one.
	p = filepath.Join(tdir, "syntax.tpl")
	os.WriteFile(p, []byte(`{"subject": {{ .Nope `), 0o644)
	setTemplate(t, dir, p)
	if _, err := Load(context.Background(), dir); err == nil {
		t.Error("broken template loaded")
	}
	if _, err := Init(context.Background(), InitOptions{Dir: filepath.Join(t.TempDir(), "x"), AKTemplate: p}); err == nil {
		t.Error("Init accepted a broken template")
	}
}

// setTemplate points ca.json's ak.template at p.
func setTemplate(t *testing.T, dir, p string) {
	t.Helper()
	cfg, err := ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AK.Template = p
	if err := writeConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
}

func TestInitRefusesOverwrite(t *testing.T) {
	dir, ca := newCA(t, InitOptions{})
	rootBefore, _ := os.ReadFile(filepath.Join(dir, RootCertFile))
	cfgBefore, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	_, err := Init(context.Background(), InitOptions{Dir: dir, Now: clockAt(t0.Add(time.Hour))})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second init: %v, want ErrExists", err)
	}
	rootAfter, _ := os.ReadFile(filepath.Join(dir, RootCertFile))
	cfgAfter, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	if !bytes.Equal(rootBefore, rootAfter) || !bytes.Equal(cfgBefore, cfgAfter) {
		t.Error("a refused init changed the CA")
	}
	// Even a lone root.crt (or root.key) is a CA not to overwrite.
	lone := t.TempDir()
	os.WriteFile(filepath.Join(lone, "root.key"), []byte("x"), 0o600)
	if _, err := Init(context.Background(), InitOptions{Dir: lone}); !errors.Is(err, ErrExists) {
		t.Errorf("directory with root.key: %v", err)
	}

	// --force moves the old CA aside and makes a new one.
	t1 := t0.Add(time.Hour)
	if _, err := Init(context.Background(), InitOptions{Dir: dir, Force: true, Now: clockAt(t1)}); err != nil {
		t.Fatal(err)
	}
	ca2, err := Load(context.Background(), dir, WithClock(clockAt(t1)))
	if err != nil {
		t.Fatal(err)
	}
	defer ca2.Close()
	if ca2.Root().Equal(ca.Root()) {
		t.Error("--force kept the old root")
	}
	aside := filepath.Join(dir, "replaced-20261125T130000Z")
	for _, f := range []string{ConfigFile, RootCertFile, "root.key", ca.Config().Intermediate.Certificate, strings.TrimSuffix(ca.Config().Intermediate.Certificate, ".crt") + ".key", IntermediatesCertFile} {
		if _, err := os.Stat(filepath.Join(aside, f)); err != nil {
			t.Errorf("old %s not moved aside: %v", f, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(aside, RootCertFile)); !bytes.Equal(b, rootBefore) {
		t.Error("the old root.crt is not the one moved aside")
	}
}

func TestBadKMS(t *testing.T) {
	for name, tc := range map[string]struct{ kms, want string }{
		"unknown scheme":     {"nosuchkms:foo=bar", `unknown KMS type "nosuchkms"`},
		"not a URI":          {"::::", "KMS URI"},
		"cloud not built":    {"awskms:region=eu-west-1", "not built into this tpmid"},
		"KMS not built in":   {"sshagentkms:", "not built into"},
		"no PKCS#11 module":  {"pkcs11:module-path=/nonexistent/libp11.so;token=tpmid?pin-value=1234", "opening KMS"},
		"pin in the message": {"nosuchkms:pin-value=1234", "REDACTED"},
	} {
		dir := filepath.Join(t.TempDir(), "ca")
		_, err := Init(context.Background(), InitOptions{Dir: dir, KMS: tc.kms})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
			continue
		}
		t.Logf("%s: %v", name, err)
		if strings.Contains(err.Error(), "1234") {
			t.Errorf("%s: the PIN is in the error: %v", name, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%s: files left: %v", name, ents)
		}
	}
	// A ca.json naming a bad KMS fails to load with the same message.
	dir, _ := newCA(t, InitOptions{})
	cfg, _ := ReadConfig(dir)
	cfg.KMS = "nosuchkms:"
	writeConfig(dir, cfg)
	if _, err := Load(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "unknown KMS type") {
		t.Errorf("Load with a bad KMS: %v", err)
	}
}

func TestLoadRefuses(t *testing.T) {
	if _, err := Load(context.Background(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "tpmid ca init") {
		t.Errorf("no CA: %v", err)
	}
	dir, ca := newCA(t, InitOptions{})
	cfg := *ca.Config()
	keyFile := filepath.Join(dir, strings.TrimSuffix(cfg.Intermediate.Certificate, ".crt")+".key")
	cases := map[string]func(){
		"key readable by others": func() { os.Chmod(keyFile, 0o644) },
		"key of the root": func() {
			c := cfg
			c.Intermediate.Key = cfg.Root.Key
			writeConfig(dir, &c)
		},
		"intermediate not under the root": func() {
			c := cfg
			c.Intermediate.Certificate, c.Intermediate.Key = cfg.Root.Certificate, cfg.Root.Key
			writeConfig(dir, &c)
		},
		"missing key file": func() { os.Rename(keyFile, keyFile+".gone") },
		"unknown field":    func() { os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"format": 1, "surprise": true}`), 0o600) },
		"format 2": func() {
			c := cfg
			c.Format = 2
			writeConfig(dir, &c)
		},
		"zero AK lifetime": func() {
			c := cfg
			c.AK.Lifetime = 0
			b, _ := json.Marshal(c)
			os.WriteFile(filepath.Join(dir, ConfigFile), bytes.Replace(b, []byte(`"lifetime":"24h"`), []byte(`"lifetime":"0s"`), 1), 0o600)
		},
		"bad duration": func() {
			b, _ := json.Marshal(cfg)
			os.WriteFile(filepath.Join(dir, ConfigFile), bytes.Replace(b, []byte(`"lifetime":"24h"`), []byte(`"lifetime":"soon"`), 1), 0o600)
		},
		"two certificates in the root file": func() {
			b, _ := os.ReadFile(filepath.Join(dir, RootCertFile))
			os.WriteFile(filepath.Join(dir, RootCertFile), append(b, b...), 0o644)
		},
	}
	backup := t.TempDir()
	snapshot := func(from, to string) {
		ents, _ := os.ReadDir(from)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(from, e.Name()))
			fi, _ := e.Info()
			os.WriteFile(filepath.Join(to, e.Name()), b, fi.Mode().Perm())
			os.Chmod(filepath.Join(to, e.Name()), fi.Mode().Perm())
		}
	}
	snapshot(dir, backup)
	for name, mut := range cases {
		mut()
		if c, err := Load(context.Background(), dir, WithClock(clockAt(t0))); err == nil {
			c.Close()
			t.Errorf("%s: loaded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
		os.RemoveAll(dir)
		os.Mkdir(dir, 0o700)
		snapshot(backup, dir)
		if c, err := Load(context.Background(), dir, WithClock(clockAt(t0))); err != nil {
			t.Fatalf("after %s, restored CA does not load: %v", name, err)
		} else {
			c.Close()
		}
	}
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"10y": 10 * Year, "1y": Year, "30d": 30 * 24 * time.Hour, "24h": 24 * time.Hour, "90m": 90 * time.Minute, "1h30m": 90 * time.Minute} {
		d, err := ParseDuration(in)
		if err != nil || d.Std() != want {
			t.Errorf("%s: %v, %v", in, d, err)
		}
	}
	for d, want := range map[Duration]string{Duration(10 * Year): "10y", Duration(24 * time.Hour): "24h", Duration(time.Minute): "1m", Duration(90 * time.Second): "1m30s"} {
		if d.String() != want {
			t.Errorf("%v: %q, want %q", d.Std(), d.String(), want)
		}
	}
	for _, bad := range []string{"", "y", "0y", "-1y", "1.5y", "soon", "99999y"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSerialNumber(t *testing.T) {
	max := new(big.Int).Lsh(big.NewInt(1), 128)
	for range 100 {
		n, err := serialNumber()
		if err != nil || n.Sign() <= 0 || n.Cmp(max) >= 0 {
			t.Fatalf("%v, %v", n, err)
		}
	}
}

// BenchmarkIssueAK is the per-certificate cost of IssueAK with softkms
// ECDSA P-256 CA keys and an ECDSA P-256 AK: template, signature and the
// profile check of the result.
func BenchmarkIssueAK(b *testing.B) {
	_, ca := newCA(b, InitOptions{Now: time.Now})
	req, _ := request(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.IssueAK(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func ders(chain []*x509.Certificate) [][]byte {
	var out [][]byte
	for _, c := range chain {
		out = append(out, c.Raw)
	}
	return out
}

// issuedChain is a new CA and an AK certificate chain it issued, as DER
// (leaf first, as the agent keeps it), with the request it answered.
func issuedChain(tb testing.TB) (string, *CA, AKRequest, [][]byte) {
	tb.Helper()
	dir, ca := newCA(tb, InitOptions{})
	req, _ := request(tb)
	chain, err := ca.IssueAK(context.Background(), req)
	if err != nil {
		tb.Fatal(err)
	}
	return dir, ca, req, ders(chain)
}

// checkAKCase is one CheckAK call and the rule of its refusal.
type checkAKCase struct {
	chain [][]byte
	ak    crypto.PublicKey
	ek    []byte
	id    spiffeid.ID
	now   time.Time
	rule  string
}

func runCheckAKCases(t *testing.T, ca *CA, cases map[string]checkAKCase) {
	t.Helper()
	for name, tc := range cases {
		_, err := ca.CheckAK(tc.chain, tc.ak, tc.ek, tc.id, tc.now)
		var pe *akcert.ProfileError
		if !errors.As(err, &pe) || pe.Rule != tc.rule {
			t.Errorf("%s: %v, want rule %s", name, err, tc.rule)
		}
	}
}

// TestCheckAK: the fast path's check accepts exactly this CA's
// certificate for this AK, EK and agent, unexpired, and names the rule of
// every refusal.
func TestCheckAK(t *testing.T) {
	dir, ca, req, good := issuedChain(t)
	f, err := ca.CheckAK(good, req.AKPublic, req.EKPublicDER, testID, t0.Add(time.Hour))
	if err != nil || !f.NotAfter.Equal(t0.Add(24*time.Hour)) {
		t.Fatalf("good chain: %+v, %v", f, err)
	}
	// The CA's own intermediate is a trust anchor in VerifyAK, but the
	// chain it reports still ends at the root.
	if n := len(f.Chain); n != 3 || !f.Chain[1].Equal(ca.Intermediate()) || !f.Chain[2].Equal(ca.root) {
		t.Errorf("good chain: Facts.Chain has %d certificates, want leaf, intermediate, root", n)
	}
	// The leaf alone is enough: the CA has the intermediates.
	if _, err := ca.CheckAK(good[:1], req.AKPublic, req.EKPublicDER, testID, t0); err != nil {
		t.Errorf("leaf alone: %v", err)
	}
	// An attacker's intermediate under the real intermediate's name, and
	// the real leaf re-signed by its key, sent as the chain: the sent
	// intermediate is no anchor, and the root did not issue it.
	forgedKey := ecKey(t)
	forgedInterDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: ca.Intermediate().Subject, NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, SubjectKeyId: ca.Intermediate().SubjectKeyId,
	}, &x509.Certificate{Subject: ca.root.Subject, SubjectKeyId: ca.root.SubjectKeyId}, forgedKey.Public(), forgedKey)
	if err != nil {
		t.Fatal(err)
	}
	forgedInter, err := x509.ParseCertificate(forgedInterDER)
	if err != nil {
		t.Fatal(err)
	}
	forgedLeaf, err := x509.CreateCertificate(rand.Reader, f.Chain[0], forgedInter, req.AKPublic, forgedKey)
	if err != nil {
		t.Fatal(err)
	}
	forged := [][]byte{forgedLeaf, forgedInterDER}

	_, other := newCA(t, InitOptions{})
	foreign, err := other.IssueAK(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	otherAK, otherEK := ecKey(t), ecKey(t)
	otherID := spiffeid.RequireFromString("spiffe://example.org/spire/agent/tpmid/ffff")
	runCheckAKCases(t, ca, map[string]checkAKCase{
		"another AK":          {good, otherAK.Public(), req.EKPublicDER, testID, t0, akcert.RuleAKMismatch},
		"another EK":          {good, req.AKPublic, der(t, otherEK.Public()), testID, t0, akcert.RuleEKMismatch},
		"no EK":               {good, req.AKPublic, nil, testID, t0, akcert.RuleEKMismatch},
		"another agent":       {good, req.AKPublic, req.EKPublicDER, otherID, t0, akcert.RuleSPIFFEIDMismatch},
		"expired":             {good, req.AKPublic, req.EKPublicDER, testID, t0.Add(25 * time.Hour), akcert.RuleExpired},
		"another CA":          {ders(foreign), req.AKPublic, req.EKPublicDER, testID, t0, akcert.RuleChain},
		"forged intermediate": {forged, req.AKPublic, req.EKPublicDER, testID, t0, akcert.RuleChain},
		"root expired":        {good, req.AKPublic, req.EKPublicDER, testID, ca.root.NotAfter.Add(time.Second), akcert.RuleExpired},
		"intermediate":        {good[1:], req.AKPublic, req.EKPublicDER, testID, t0, akcert.RuleSubject},
		"empty":               {nil, req.AKPublic, req.EKPublicDER, testID, t0, akcert.RuleMalformed},
		"too long":            {[][]byte{good[0], good[1], good[1], good[1], good[1]}, req.AKPublic, req.EKPublicDER, testID, t0, akcert.RuleMalformed},
		"garbage":             {[][]byte{[]byte("not DER")}, req.AKPublic, req.EKPublicDER, testID, t0, akcert.RuleMalformed},
		"trailing bytes":      {[][]byte{append(slices.Clone(good[0]), 0)}, req.AKPublic, req.EKPublicDER, testID, t0, akcert.RuleMalformed},
		"huge":                {[][]byte{make([]byte, MaxCertSize+1)}, req.AKPublic, req.EKPublicDER, testID, t0, akcert.RuleMalformed},
		"bad intermediate":    {[][]byte{good[0], []byte{0x30, 0x00}}, req.AKPublic, req.EKPublicDER, testID, t0, akcert.RuleMalformed},
	})

	// With the intermediate as an anchor, the root's own validity is still
	// required (crypto/x509 no longer sees the root in the chain).
	if _, err := ca.VerifyAK(f.Chain[0], nil, ca.root.NotAfter.Add(time.Second)); err == nil || !strings.Contains(err.Error(), "CA root") {
		t.Errorf("after the root expired: %v, want the root named", err)
	}

	// After a rotation, a certificate of the previous intermediate still
	// passes (leaf alone or with its chain).
	if _, err := RotateIntermediate(context.Background(), dir, RotateOptions{Now: clockAt(t0.Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	ca2, err := Load(context.Background(), dir, WithClock(clockAt(t0.Add(time.Hour))))
	if err != nil {
		t.Fatal(err)
	}
	defer ca2.Close()
	for _, c := range [][][]byte{good, good[:1]} {
		if _, err := ca2.CheckAK(c, req.AKPublic, req.EKPublicDER, testID, t0.Add(2*time.Hour)); err != nil {
			t.Errorf("after rotation, %d certificates: %v", len(c), err)
		}
	}
}

func TestNeedsRenewal(t *testing.T) {
	_, ca := newCA(t, InitOptions{})
	notAfter := t0.Add(24 * time.Hour)
	for now, want := range map[time.Time]bool{
		t0: false, t0.Add(16 * time.Hour): false, t0.Add(16*time.Hour + time.Second): true, t0.Add(30 * time.Hour): true,
	} {
		if got := ca.NeedsRenewal(notAfter, now); got != want {
			t.Errorf("%v before expiry: %t, want %t", notAfter.Sub(now), got, want)
		}
	}
}

// BenchmarkCheckAK: the fast path's check of a presented chain (leaf and
// intermediate, as the agent keeps it): cold (parsed and verified, the
// first presentation of a chain) and cached (every later one).
func BenchmarkCheckAK(b *testing.B) {
	_, ca, req, good := issuedChain(b)
	for _, cold := range []bool{true, false} {
		name := "cached"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if cold {
					ca.verified = chaincache.New[akcert.Facts](1)
				}
				if _, err := ca.CheckAK(good, req.AKPublic, req.EKPublicDER, testID, t0.Add(time.Hour)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCheckAKCache: CheckAK remembers a chain it accepted, and the cache
// answers only for the same bytes inside the chain's validity, while the
// AK, EK and agent are compared on every call. The probe: once the chain
// is cached the CA's anchors are emptied, so only the cache can accept.
func TestCheckAKCache(t *testing.T) {
	_, ca, req, good := issuedChain(t)
	at := t0.Add(time.Hour)
	if _, err := ca.CheckAK(good, req.AKPublic, req.EKPublicDER, testID, at); err != nil {
		t.Fatal(err)
	}
	if ca.verified.Len() != 1 {
		t.Fatalf("%d chains cached after one acceptance", ca.verified.Len())
	}
	ca.anchors = x509.NewCertPool() // from here only the cache accepts
	if f, err := ca.CheckAK(good, req.AKPublic, req.EKPublicDER, testID, at.Add(time.Hour)); err != nil || f.SPIFFEID != testID {
		t.Fatalf("the cached chain: %+v, %v", f, err)
	}
	otherAK, otherEK := ecKey(t), ecKey(t)
	runCheckAKCases(t, ca, map[string]checkAKCase{
		"other bytes (leaf alone)": {good[:1], req.AKPublic, req.EKPublicDER, testID, at, akcert.RuleChain},
		"after the leaf expired":   {good, req.AKPublic, req.EKPublicDER, testID, t0.Add(25 * time.Hour), akcert.RuleExpired},
		"another AK, cached chain": {good, otherAK.Public(), req.EKPublicDER, testID, at, akcert.RuleAKMismatch},
		"another EK, cached chain": {good, req.AKPublic, der(t, otherEK.Public()), testID, at, akcert.RuleEKMismatch},
		"another agent, cached chain": {good, req.AKPublic, req.EKPublicDER,
			spiffeid.RequireFromString("spiffe://example.org/spire/agent/tpmid/ffff"), at, akcert.RuleSPIFFEIDMismatch},
	})
	if n := ca.verified.Len(); n != 1 {
		t.Errorf("refusals were cached: %d chains", n)
	}
}
