package session_test

import (
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
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/internal/softtpm"
	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/trustfiles"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// The attacks of this file: root on a machine, but no EK (or an EK it does
// not want to use), and a key it holds in software that a CA in the
// operator's ek_ca_bundle certified for something else. It sends that key
// and certificate as its EK, answers TPM2_MakeCredential in software
// (internal/softtpm) and lets the machine's TPM make a genuine AK and
// genuine quotes. The EK certificate profile (verify.CheckEKProfile) is what
// stops it, at Start, before any challenge.

// softwareEK is the attacker's "EK": a key it holds and a certificate for it.
type softwareEK struct {
	key  *rsa.PrivateKey
	cert []byte // DER
}

// attackOutcome is how far the malicious agent got.
type attackOutcome struct {
	challenged bool // Start answered with a challenge
	res        *session.Result
	err        error // Start's refusal, or Finish's outcome
}

// softwareEKAgent drives the real server session as the malicious agent
// does: a hello with the machine's real AK but the software EK, then, if
// challenged, the credential activated in software (softtpm), real quotes
// from the TPM bound to this forged hello, and the activation proof.
func softwareEKAgent(t *testing.T, f *fixture, p *session.Config, ek softwareEK) attackOutcome {
	t.Helper()
	return softwareEKAgentVersions(t, f, p, ek, 0, 0)
}

// softwareEKAgentVersions is softwareEKAgent with the hello's protocol
// version and the evidence's encoding set (0 keeps the agent's own); a set
// hello version must come back in the challenge.
func softwareEKAgentVersions(t *testing.T, f *fixture, p *session.Config, ek softwareEK, helloVersion, evidenceVersion int) attackOutcome {
	t.Helper()
	as, helloRaw, err := agent.BeginWith(f.TPM, f.cfg)
	if err != nil {
		t.Fatalf("agent begin: %v", err)
	}
	defer as.Close()
	var hello wire.Hello
	if err := json.Unmarshal(helloRaw, &hello); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&ek.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	hello.EK = wire.EK{Public: pub, Certificate: ek.cert}
	if helloVersion != 0 {
		hello.Version = helloVersion
	}
	if helloRaw, err = wire.Encode(hello); err != nil {
		t.Fatal(err)
	}

	ss, challenge, err := startSession(p, helloRaw)
	if err != nil {
		if ss != nil || challenge != nil {
			t.Errorf("Start refused (%v) but returned a session or a challenge", err)
		}
		return attackOutcome{err: err}
	}
	var ch wire.Challenge
	if err := json.Unmarshal(challenge, &ch); err != nil {
		t.Fatal(err)
	}
	if ch.Credential == nil {
		t.Fatal("challenge without a credential")
	}
	if helloVersion != 0 && ch.Version != helloVersion {
		t.Fatalf("challenge version %d in a version %d session", ch.Version, helloVersion)
	}
	ak, err := verify.ParseAKPublic(hello.AK.Public)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := softtpm.ActivateCredential(ek.key, ak.Name, ch.Credential.Blob, ch.Credential.Secret)
	if err != nil {
		t.Fatalf("software TPM2_ActivateCredential: %v", err)
	}

	// Real quotes from the TPM: the agent answers a copy of the challenge
	// without the credential (its TPM holds no such EK), and the quote is
	// remade over the forged hello.
	ev, err := tpmtest.RespondWithoutCredential(as, ch)
	if err != nil {
		t.Fatal(err)
	}
	requote(t, f, as, ev, wire.QuoteExtraData(ch.Nonce, hello.Nonce, helloRaw), p.Selections[0].PCRs)
	ev.ActivationProof = wire.ActivationProof(secret, helloRaw, challenge)
	if evidenceVersion != 0 {
		ev.Version = evidenceVersion
	}
	evRaw, err := wire.EncodeEvidence(ev)
	if err != nil {
		t.Fatal(err)
	}
	if evidenceVersion != 0 && wire.IsBinaryEvidence(evRaw) != (evidenceVersion >= wire.Version2) {
		t.Fatalf("version %d evidence binary = %v", evidenceVersion, wire.IsBinaryEvidence(evRaw))
	}
	res, err := finishSession(ss, evRaw)
	return attackOutcome{challenged: true, res: res, err: err}
}

func ekHashOf(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	h, err := verify.EKHash(pub)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// tcgSANExt is the TCG subjectAltName an AK certificate also carries.
func tcgSANExt(t *testing.T) pkix.Extension {
	t.Helper()
	name, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 1}, Value: "id:53494D55"}},
		{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 2}, Value: "id:00000001"}},
		{{Type: asn1.ObjectIdentifier{2, 23, 133, 2, 3}, Value: "id:00020000"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san}
}

// refusedByProfile asserts the attack was refused at Start (no challenge)
// with ek_cert_profile naming rule, not wrapped as ek_not_admitted.
func refusedByProfile(t *testing.T, o attackOutcome, rule string) {
	t.Helper()
	if o.challenged {
		if o.err == nil {
			t.Fatalf("ATTACK SUCCEEDED: admitted as %s", o.res.AgentID)
		}
		t.Fatalf("challenged (refused only at Finish: %v); want a refusal at Start", o.err)
	}
	var ve *verify.Error
	if !errors.As(o.err, &ve) || ve.Reason != verify.ReasonEKCertProfile {
		t.Fatalf("err = %v, want reason %s", o.err, verify.ReasonEKCertProfile)
	}
	var v *verify.ProfileViolation
	if !errors.As(o.err, &v) || v.Rule != rule {
		t.Fatalf("err = %v, want the profile rule %s", o.err, rule)
	}
	t.Logf("refused before any challenge: %v", o.err)
}

// attackPolicies are every ek_policy that uses the EK certificate, the
// allowlist ones listing the attacker's key: a non-EK certificate is
// hostile, and no allowlist entry rescues it.
func attackPolicies(t *testing.T, f *fixture, attackerHash string) map[string]*session.Config {
	return map[string]*session.Config{
		"cert":                             f.policy(t, appraise.EKPolicyCert, f.TrustDir),
		"cert_or_allowlist (allowlisted)":  f.policy(t, appraise.EKPolicyCertOrAllowlist, f.TrustDir, attackerHash),
		"cert_and_allowlist (allowlisted)": f.policy(t, appraise.EKPolicyCertAndAllowlist, f.TrustDir, attackerHash),
	}
}

// TestAttackNonEKCertificateSoftwareActivation: a TLS server certificate
// from a CA in ek_ca_bundle, for a key the attacker holds. The control
// shows the attack is real: a certificate for the same software key that
// does meet the EK profile takes the attacker all the way through Finish
// (the software activation recovers the server's secret, the proof and
// the quotes are accepted). The TLS certificate chains to the same root, so
// only the profile stands in the way, and it refuses at Start.
func TestAttackNonEKCertificateSoftwareActivation(t *testing.T) {
	f := newFixture(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	hash := ekHashOf(t, &key.PublicKey)

	t.Run("control: a conforming EK certificate for the software key is admitted", func(t *testing.T) {
		der, err := f.CA.IssueEK(&key.PublicKey, "id:53494D55", "id:00000001", "id:00020000")
		if err != nil {
			t.Fatal(err)
		}
		o := softwareEKAgent(t, f, f.policy(t, appraise.EKPolicyCert, f.TrustDir), softwareEK{key, der})
		if !o.challenged || o.err != nil {
			t.Fatalf("the software activation did not go through: challenged %v, %v", o.challenged, o.err)
		}
		if want := "spiffe://example.org/spire/agent/tpm/" + hash; o.res.AgentID.String() != want {
			t.Fatalf("agent ID %s, want %s", o.res.AgentID, want)
		}
	})

	for _, c := range []struct {
		name string
		tmpl x509.Certificate
		rule string
	}{
		{"TLS server certificate (digitalSignature|keyEncipherment, serverAuth, DNS SAN)", x509.Certificate{
			Subject: pkix.Name{CommonName: "www.example.com"}, DNSNames: []string{"www.example.com"}, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}, verify.RuleKeyUsage},
		{"TLS server certificate, RSA key transport only (keyEncipherment, serverAuth)", x509.Certificate{
			Subject: pkix.Name{CommonName: "www.example.com"}, DNSNames: []string{"www.example.com"}, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}, verify.RuleExtKeyUsage},
		{"bare certificate (keyEncipherment, no EKU, no SAN)", x509.Certificate{
			Subject: pkix.Name{CommonName: "host-17"}, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageKeyEncipherment,
		}, verify.RuleSubjectAltName},
	} {
		der, err := f.CA.Issue(&c.tmpl, &key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		// The certificate chains to the trusted root: VerifyEKCert checks
		// the chain first, and its only objection is the profile.
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		trust, err := trustfiles.LoadEKTrust(f.TrustDir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verify.VerifyEKCert(cert, nil, trust, cert.NotBefore.Add(1)); verify.ReasonOf(err) != verify.ReasonEKCertProfile {
			t.Fatalf("%s: VerifyEKCert = %v, want only the profile to object", c.name, err)
		}
		for pname, p := range attackPolicies(t, f, hash) {
			t.Run(c.name+"/"+pname, func(t *testing.T) {
				refusedByProfile(t, softwareEKAgent(t, f, p, softwareEK{key, der}), c.rule)
			})
		}
	}
}

// TestAttackAKCertificateAsEK: an AK certificate (tcg-kp-AIKCertificate,
// digitalSignature, the TCG SAN) from a CA in the bundle, for a key the
// attacker holds, sent as the EK certificate. Real AK certificates chain
// to EK roots (GCE's do); this one chains to the test root.
func TestAttackAKCertificateAsEK(t *testing.T) {
	f := newFixture(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	hash := ekHashOf(t, &key.PublicKey)
	aik := asn1.ObjectIdentifier{2, 23, 133, 8, 3}
	for _, c := range []struct {
		name string
		tmpl x509.Certificate
		rule string
	}{
		{"AK certificate (2.23.133.8.3, digitalSignature, TCG SAN)", x509.Certificate{
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature, UnknownExtKeyUsage: []asn1.ObjectIdentifier{aik},
			ExtraExtensions: []pkix.Extension{tcgSANExt(t)},
		}, verify.RuleKeyUsage},
		{"AK certificate without key usage (2.23.133.8.3, TCG SAN)", x509.Certificate{
			BasicConstraintsValid: true, UnknownExtKeyUsage: []asn1.ObjectIdentifier{aik}, ExtraExtensions: []pkix.Extension{tcgSANExt(t)},
		}, verify.RuleExtKeyUsage},
		{"GCE-style AK certificate (EK purpose 2.23.133.8.1, digitalSignature, TCG SAN)", x509.Certificate{
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature, UnknownExtKeyUsage: []asn1.ObjectIdentifier{{2, 23, 133, 8, 1}},
			ExtraExtensions: []pkix.Extension{tcgSANExt(t)},
		}, verify.RuleKeyUsage},
	} {
		der, err := f.CA.Issue(&c.tmpl, &key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		for pname, p := range attackPolicies(t, f, hash) {
			t.Run(c.name+"/"+pname, func(t *testing.T) {
				o := softwareEKAgent(t, f, p, softwareEK{key, der})
				refusedByProfile(t, o, c.rule)
				if c.rule == verify.RuleExtKeyUsage && !strings.Contains(o.err.Error(), "AK certificate") {
					t.Errorf("message %q does not say it is an AK certificate", o.err)
				}
			})
		}
	}
}

// TestAttackCACertificateAsEK: a CA certificate (cA TRUE, keyCertSign) sent
// as the EK certificate: a sub-CA the trusted root certified for a key the
// attacker holds, and the trusted root itself.
func TestAttackCACertificateAsEK(t *testing.T) {
	f := newFixture(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	hash := ekHashOf(t, &key.PublicKey)
	subCA, err := f.CA.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "department CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	for pname, p := range attackPolicies(t, f, hash) {
		t.Run("sub-CA certificate/"+pname, func(t *testing.T) {
			refusedByProfile(t, softwareEKAgent(t, f, p, softwareEK{key, subCA}), verify.RuleBasicConstraints)
		})
	}

	// The root: the attacker cannot answer a credential for its key, but
	// the certificate is refused before that question arises.
	t.Run("the trusted root itself", func(t *testing.T) {
		_, err := run(t, f, f.policy(t, appraise.EKPolicyCert, f.TrustDir), hooks{hello: func(t *testing.T, h *wire.Hello) {
			pub, err := x509.MarshalPKIXPublicKey(f.CA.Cert.PublicKey)
			if err != nil {
				t.Fatal(err)
			}
			h.EK = wire.EK{Public: pub, Certificate: f.CA.Cert.Raw}
		}})
		if verify.ReasonOf(err) != verify.ReasonEKCertProfile {
			t.Fatalf("err = %v, want %s", err, verify.ReasonEKCertProfile)
		}
	})
}

// TestSwtpmEKCertificateMeetsProfile: swtpm's own EK certificate (made by
// swtpm_localca, in NV) passes the profile in a whole attestation.
func TestSwtpmEKCertificateMeetsProfile(t *testing.T) {
	m := testmachine.NewSwtpm(t, swtpm.Options{})
	tp, err := tpm.Open(tpm.Config{Device: m.Device, EventLogPath: m.LogPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	m.TPM = tp
	f := &fixture{Machine: m, cfg: agent.Config{Hostname: "node-1"}}
	res, err := run(t, f, f.policy(t, appraise.EKPolicyCert, m.TrustDir), hooks{})
	if err != nil {
		t.Fatalf("swtpm attestation refused: %v", err)
	}
	for _, s := range res.Selectors {
		if strings.HasPrefix(s, "ek_quirk:") {
			t.Errorf("swtpm EK certificate needed a quirk: %s", s)
		}
	}
	if !contains(res.Selectors, "manufacturer:id:00001014") || !contains(res.Selectors, "model:swtpm") {
		t.Errorf("selectors %v lack swtpm's TCG attributes", res.Selectors)
	}
	cert, err := verify.ParseEKCert(m.EKCertDER)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify.CheckEKProfile(cert); err != nil {
		t.Fatal(err)
	}
	t.Logf("swtpm EK certificate: key usage %v, extended key usage %v, basicConstraints valid %v CA %v", cert.KeyUsage, cert.UnknownExtKeyUsage, cert.BasicConstraintsValid, cert.IsCA)
}

// TestGCEQuirkSelector: an EK certificate shaped like GCE's "EK/AK CA
// Intermediate" ones (no SAN, no EKU, Google's instance-identity
// extension, issuer O=Google LLC), here for the simulator's real EK from a
// test CA of that name, admits the machine with the selector
// ek_quirk:gce-ek-no-san and without manufacturer, model or version.
func TestGCEQuirkSelector(t *testing.T) {
	f := newFixture(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	root := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "EK/AK CA Root", Organization: []string{"Google LLC"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, root, root, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	google := &testca.CA{Cert: rootCert, Key: key}
	dir := t.TempDir()
	if err := google.WritePEM(filepath.Join(dir, "root.pem")); err != nil {
		t.Fatal(err)
	}
	ek, err := f.TPM.EK("")
	if err != nil {
		t.Fatal(err)
	}
	identity, err := asn1.Marshal(struct {
		Zone    string
		Project string
		Name    string
	}{"us-central1-a", "example-project", "vm-1"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := google.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "218557372616137117", Organization: []string{"Google Compute Engine"}},
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageKeyEncipherment,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11129, 2, 1, 21}, Value: identity}}}, ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	// The agent sends it as its EK certificate (ek_certificate_path).
	certPath := filepath.Join(t.TempDir(), "ek.der")
	if err := os.WriteFile(certPath, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	gce := *f
	gce.cfg.EKCertificatePath = certPath
	res, err := run(t, &gce, f.policy(t, appraise.EKPolicyCert, dir), hooks{})
	if err != nil {
		t.Fatalf("refused: %v", err)
	}
	if !contains(res.Selectors, "ek_quirk:"+verify.QuirkGCEEKNoSAN) || !contains(res.Selectors, "ek_issuer:EK/AK CA Root") {
		t.Errorf("selectors %v lack ek_quirk:%s or ek_issuer", res.Selectors, verify.QuirkGCEEKNoSAN)
	}
	for _, s := range res.Selectors {
		if strings.HasPrefix(s, "manufacturer:") || strings.HasPrefix(s, "model:") || strings.HasPrefix(s, "version:") {
			t.Errorf("selector %s from a certificate without SAN", s)
		}
	}
	if res.Facts.EK.Quirk != verify.QuirkGCEEKNoSAN {
		t.Errorf("facts EKQuirk %q", res.Facts.EK.Quirk)
	}
}
