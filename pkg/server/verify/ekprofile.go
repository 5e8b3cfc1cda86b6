package verify

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// The EK certificate profile: what makes a certificate an EK certificate,
// after the TCG EK Credential Profile for TPM Family 2.0 (version 2.5,
// section 3.2 "X.509 EK Certificate", whose field and extension sections
// are cited per rule below).
//
// Why it matters: TPM2_MakeCredential only proves that whoever answers holds
// the private key of the certified key. A CA in ek_ca_bundle that also
// certifies keys that are not EKs (a mixed-purpose enterprise CA issuing TLS
// certificates, a vendor CA issuing AK certificates, an intermediate CA)
// would otherwise let anyone holding such a key pass as a TPM: the attacker
// decrypts the credential in software. A certificate is used as an EK
// certificate only when it says it certifies an EK.

// Profile rule names, as they appear in a ProfileViolation.
const (
	RulePublicKey        = "public-key"
	RuleBasicConstraints = "basic-constraints"
	RuleKeyUsage         = "key-usage"
	RuleExtKeyUsage      = "extended-key-usage"
	RuleSubjectAltName   = "subject-alt-name"
)

// QuirkGCEEKNoSAN names the one tolerated deviation: Google Compute
// Engine's EK certificates from the "EK/AK CA Intermediate" (Google
// Private CA) carry no TCG subjectAltName (and no EKU). See gceEKNoSAN for
// how narrowly it is recognised.
const QuirkGCEEKNoSAN = "gce-ek-no-san"

var (
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	// TCG key purposes (TCG EK Credential Profile, and the TCG OID registry).
	oidTCGKpEKCertificate       = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	oidTCGKpPlatformCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 2}
	oidTCGKpAIKCertificate      = asn1.ObjectIdentifier{2, 23, 133, 8, 3}
	// Google's instance-identity extension on GCE vTPM certificates
	// (zone, project, instance; MANIFEST.md section 3).
	oidGCEInstanceIdentity = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11129, 2, 1, 21}
)

// EKProfile is what CheckEKProfile found about a certificate that passed.
type EKProfile struct {
	// Quirk names the vendor deviation the certificate needed to pass
	// (QuirkGCEEKNoSAN), "" when it meets every rule as written.
	Quirk string
}

// ProfileViolation says which profile rule a certificate broke. It is the
// Err of a *Error with ReasonEKCertProfile.
type ProfileViolation struct {
	Rule    string // RuleBasicConstraints, ...
	Section string // the TCG EK Credential Profile section, e.g. "3.2.15 Key Usage"
	Detail  string
}

func (v *ProfileViolation) Error() string {
	return fmt.Sprintf("not an EK certificate: rule %s (TCG EK Credential Profile 2.5, %s): %s", v.Rule, v.Section, v.Detail)
}

// ekRule is one rule of the profile. check returns the quirk it needed
// ("" normally) or why the certificate fails it.
type ekRule struct {
	name, section string
	check         func(c *x509.Certificate) (quirk string, err error)
}

// ekProfileRules are applied in this order; CheckEKProfile reports the first
// failure. The order puts the rules that tell a CA, a signing key or an AK
// apart first, so the reason an operator reads is the most telling one.
var ekProfileRules = []ekRule{
	{RulePublicKey, "3.2.7 Subject Public Key Info", checkEKPublicKey},
	{RuleBasicConstraints, "3.2.10 Basic Constraints", checkEKBasicConstraints},
	{RuleKeyUsage, "3.2.15 Key Usage", checkEKKeyUsage},
	{RuleExtKeyUsage, "3.2.16 Extended Key Usage", checkEKExtKeyUsage},
	{RuleSubjectAltName, "3.2.9 Subject Alternative Name", checkEKSubjectAltName},
}

// CheckEKProfile decides whether cert is an EK certificate at all (not
// whether it is trusted: that is the chain's job, see VerifyEKCert). The
// first rule it breaks is reported as a *Error with ReasonEKCertProfile
// whose Err is a *ProfileViolation naming the rule. A certificate that
// passes only thanks to a named vendor quirk says so in EKProfile.Quirk.
func CheckEKProfile(cert *x509.Certificate) (*EKProfile, error) {
	if cert == nil {
		return nil, failf(ReasonInvalidArgument, "no certificate")
	}
	p := &EKProfile{}
	for _, r := range ekProfileRules {
		quirk, err := r.check(cert)
		if err != nil {
			return nil, &Error{Reason: ReasonEKCertProfile, Err: &ProfileViolation{Rule: r.name, Section: r.section, Detail: err.Error()}}
		}
		if quirk != "" {
			p.Quirk = quirk
		}
	}
	return p, nil
}

// ekKeyType is "rsa" or "ecc" for the key types an EK has, "" otherwise.
func ekKeyType(c *x509.Certificate) string {
	switch c.PublicKey.(type) {
	case *rsa.PublicKey:
		return "rsa"
	case *ecdsa.PublicKey:
		return "ecc"
	}
	return ""
}

// ekKeyUsageFor is the key usage an EK certificate carries for an EK of
// type kt: keyEncipherment for RSA (the credential seed is RSA-OAEP
// encrypted to it), keyAgreement for ECC (the seed comes from ECDH).
func ekKeyUsageFor(kt string) x509.KeyUsage {
	if kt == "ecc" {
		return x509.KeyUsageKeyAgreement
	}
	return x509.KeyUsageKeyEncipherment
}

// checkEKPublicKey: 3.2.7 Subject Public Key Info. An EK is an RSA or ECC
// key (the EK templates of the profile's section 2); anything else
// (Ed25519, X25519, DSA) cannot be one, nor can TPM2_MakeCredential target it.
func checkEKPublicKey(c *x509.Certificate) (string, error) {
	if ekKeyType(c) == "" {
		return "", fmt.Errorf("the certified key is %s, but an EK is an RSA or ECC key", c.PublicKeyAlgorithm)
	}
	return "", nil
}

// checkEKBasicConstraints: 3.2.10 Basic Constraints. An EK certificate is an
// end-entity certificate: cA is FALSE. A CA certificate (cA TRUE) is
// refused, whatever else it says. An absent extension means "not a CA"
// (RFC 5280 4.2.1.9) and passes; every real EK certificate surveyed carries
// it, critical, with cA FALSE.
func checkEKBasicConstraints(c *x509.Certificate) (string, error) {
	if c.BasicConstraintsValid && c.IsCA {
		return "", fmt.Errorf("basicConstraints cA is TRUE: this is a CA certificate, not an EK certificate")
	}
	return "", nil
}

// checkEKKeyUsage: 3.2.15 Key Usage. When present, it must fit an EK: an EK
// is a restricted decryption key, so keyEncipherment for an RSA EK and
// keyAgreement for an ECC EK must be set. Refused by name: the signing
// usages digitalSignature and contentCommitment (a signing key, such as an
// AK or a TLS key, is not an EK; the profile allows digitalSignature on
// signing EKs of non-user devices, which tpmid, needing a decryption EK for
// TPM2_MakeCredential, cannot use) and the CA usages keyCertSign and
// cRLSign. Other bits (dataEncipherment, encipherOnly, decipherOnly) are
// tolerated.
func checkEKKeyUsage(c *x509.Certificate) (string, error) {
	if !hasExt(c, oidKeyUsage) {
		return "", nil
	}
	var bad []string
	for _, u := range []struct {
		bit  x509.KeyUsage
		name string
	}{
		{x509.KeyUsageDigitalSignature, "digitalSignature"},
		{x509.KeyUsageContentCommitment, "contentCommitment"},
		{x509.KeyUsageCertSign, "keyCertSign"},
		{x509.KeyUsageCRLSign, "cRLSign"},
	} {
		if c.KeyUsage&u.bit != 0 {
			bad = append(bad, u.name)
		}
	}
	if len(bad) > 0 {
		return "", fmt.Errorf("key usage %s: an EK is a decryption key that neither signs nor certifies (key usage %s)", strings.Join(bad, ", "), keyUsageString(c.KeyUsage))
	}
	kt := ekKeyType(c)
	if want := ekKeyUsageFor(kt); c.KeyUsage&want == 0 {
		return "", fmt.Errorf("key usage %s lacks %s, which the certificate of an %s EK carries", keyUsageString(c.KeyUsage), keyUsageString(want), strings.ToUpper(kt))
	}
	return "", nil
}

// checkEKExtKeyUsage: 3.2.16 Extended Key Usage. When present, it must
// contain tcg-kp-EKCertificate (2.23.133.8.1). tcg-kp-AIKCertificate
// (2.23.133.8.3) is refused with its own message, even beside 2.23.133.8.1:
// an AK certificate is not an EK certificate. tcg-kp-PlatformAttributeCertificate
// (2.23.133.8.2) likewise. A certificate whose purposes are only others
// (serverAuth, clientAuth, anyExtendedKeyUsage, ...) is refused. Other
// purposes beside 2.23.133.8.1 are tolerated.
func checkEKExtKeyUsage(c *x509.Certificate) (string, error) {
	if !hasExt(c, oidExtKeyUsage) {
		return "", nil
	}
	has := func(o asn1.ObjectIdentifier) bool { return slices.ContainsFunc(c.UnknownExtKeyUsage, o.Equal) }
	switch {
	case has(oidTCGKpAIKCertificate):
		return "", fmt.Errorf("extended key usage %s includes 2.23.133.8.3 (tcg-kp-AIKCertificate): this is an AK certificate, not an EK certificate", extKeyUsageString(c))
	case has(oidTCGKpPlatformCertificate):
		return "", fmt.Errorf("extended key usage %s includes 2.23.133.8.2 (tcg-kp-PlatformAttributeCertificate): this is a platform certificate, not an EK certificate", extKeyUsageString(c))
	case !has(oidTCGKpEKCertificate):
		return "", fmt.Errorf("extended key usage %s lacks 2.23.133.8.1 (tcg-kp-EKCertificate)", extKeyUsageString(c))
	}
	return "", nil
}

// checkEKSubjectAltName: 3.2.9 Subject Alternative Name. The TCG
// subjectAltName, a directoryName with the TPM manufacturer, model and
// version (2.23.133.2.1, .2, .3), is required: it is what names the TPM the
// key lives in. The one exception is the named quirk QuirkGCEEKNoSAN.
func checkEKSubjectAltName(c *x509.Certificate) (string, error) {
	if hasExt(c, oidSubjectAltName) {
		if _, _, _, err := EKAttributes(c); err != nil {
			var e *Error
			if errors.As(err, &e) {
				return "", e.Err
			}
			return "", err
		}
		return "", nil
	}
	if why := gceEKNoSAN(c); why != "" {
		return "", fmt.Errorf("no subjectAltName with the TPM manufacturer, model and version, and not a GCE EK certificate (quirk %s): %s", QuirkGCEEKNoSAN, why)
	}
	return QuirkGCEEKNoSAN, nil
}

// gceEKNoSAN recognises a GCE vTPM EK certificate from Google's "EK/AK CA
// Intermediate", which has no subjectAltName. It returns "" when cert is
// one, else why not. All of these must hold, so that a certificate from
// another CA in the bundle (an enterprise CA issuing TLS certificates) can
// never pass through the quirk:
//   - the issuer's organization is exactly "Google LLC";
//   - Google's instance-identity extension 1.3.6.1.4.1.11129.2.1.21 is
//     present, non-critical, and one DER SEQUENCE;
//   - key usage is present and exactly the EK's (keyEncipherment for RSA,
//     keyAgreement for ECC): Google's AK certificates from the same CA say
//     digitalSignature;
//   - basicConstraints is present with cA FALSE.
func gceEKNoSAN(c *x509.Certificate) string {
	if !slices.Equal(c.Issuer.Organization, []string{"Google LLC"}) {
		return fmt.Sprintf("issuer organization is %q, not Google LLC", c.Issuer.Organization)
	}
	var ext []byte
	for _, e := range c.Extensions {
		if e.Id.Equal(oidGCEInstanceIdentity) {
			if e.Critical || ext != nil {
				return "Google instance-identity extension is critical or repeated"
			}
			ext = e.Value
		}
	}
	if ext == nil {
		return "no Google instance-identity extension (1.3.6.1.4.1.11129.2.1.21)"
	}
	var seq asn1.RawValue
	if rest, err := asn1.Unmarshal(ext, &seq); err != nil || len(rest) != 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return "Google instance-identity extension is not one DER SEQUENCE"
	}
	want := ekKeyUsageFor(ekKeyType(c))
	if !hasExt(c, oidKeyUsage) || c.KeyUsage != want {
		return fmt.Sprintf("key usage is %s, not exactly %s", keyUsageString(c.KeyUsage), keyUsageString(want))
	}
	if !hasExt(c, oidBasicConstraints) || !c.BasicConstraintsValid || c.IsCA {
		return "no basicConstraints with cA FALSE"
	}
	return ""
}

func keyUsageString(ku x509.KeyUsage) string {
	names := []string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment", "keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
	var out []string
	for i, n := range names {
		if ku&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "(none)"
	}
	return strings.Join(out, "|")
}

var extKeyUsageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:             "anyExtendedKeyUsage",
	x509.ExtKeyUsageServerAuth:      "serverAuth",
	x509.ExtKeyUsageClientAuth:      "clientAuth",
	x509.ExtKeyUsageCodeSigning:     "codeSigning",
	x509.ExtKeyUsageEmailProtection: "emailProtection",
	x509.ExtKeyUsageTimeStamping:    "timeStamping",
	x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
}

func extKeyUsageString(c *x509.Certificate) string {
	var out []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := extKeyUsageNames[u]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("ExtKeyUsage(%d)", u))
		}
	}
	for _, o := range c.UnknownExtKeyUsage {
		out = append(out, o.String())
	}
	if len(out) == 0 {
		return "(empty)"
	}
	return "[" + strings.Join(out, ", ") + "]"
}
