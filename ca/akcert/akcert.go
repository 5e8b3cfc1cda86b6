// Package akcert is the profile of the AK certificates tpmid's CA issues:
// how their subjectAltName is built, and how a certificate is checked
// against the profile and verified to a root (for the fast path and for
// relying parties). It uses the standard library and go-spiffe only: no
// KMS, no TPM.
//
// The profile (docs/ca.md), rule by rule:
//
//   - X.509 v3, empty subject;
//   - one subjectAltName extension, critical, holding exactly:
//     a directoryName with the TCG TPM manufacturer (2.23.133.2.1), model
//     (2.23.133.2.2) and firmware version (2.23.133.2.3), UTF8String, each
//     in its own RDN, as in EK certificates (TCG EK Credential Profile 2.0,
//     3.2.9); a permanentIdentifier otherName (RFC 4043, 1.3.6.1.5.5.7.8.3)
//     whose identifierValue is urn:ek:sha256:<base64 std of SHA-256 of the
//     EK's PKIX DER> and without assigner; and the agent's SPIFFE ID as URI;
//   - extended key usage tcg-kp-AIKCertificate (2.23.133.8.3) only;
//   - basicConstraints cA FALSE; key usage digitalSignature only;
//   - subject and authority key identifiers.
package akcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Object identifiers of the profile.
var (
	OIDSubjectAltName       = asn1.ObjectIdentifier{2, 5, 29, 17}
	OIDExtKeyUsage          = asn1.ObjectIdentifier{2, 5, 29, 37}
	OIDTPMManufacturer      = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	OIDTPMModel             = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	OIDTPMVersion           = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	OIDPermanentIdentifier  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 3}
	OIDTCGKpAIKCertificate  = asn1.ObjectIdentifier{2, 23, 133, 8, 3}
	permanentIdentifierPfx  = "urn:ek:sha256:"
	permanentIdentifierB64n = base64.StdEncoding.EncodedLen(sha256.Size) // 44
)

// GeneralName tags (RFC 5280, 4.2.1.6).
const (
	tagOtherName     = 0
	tagRFC822Name    = 1
	tagDNSName       = 2
	tagDirectoryName = 4
	tagURI           = 6
	tagIPAddress     = 7
)

// TPM is the TCG description of a TPM, as EK certificates carry it in their
// subjectAltName: manufacturer, model and firmware version, kept as written
// ("id:53544D20" for a vendor ID, see VendorID).
type TPM struct {
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Version      string `json:"version"`
}

// MaxAttributeLen bounds each TPM attribute (the TCG profile's upper bound
// for these strings is not given; real ones are under 32 characters).
const MaxAttributeLen = 128

// Validate checks that all three attributes are present and printable
// UTF-8 of at most MaxAttributeLen bytes.
func (t TPM) Validate() error {
	for _, a := range []struct{ name, v string }{{"manufacturer", t.Manufacturer}, {"model", t.Model}, {"version", t.Version}} {
		switch {
		case a.v == "":
			return fmt.Errorf("TPM %s is empty", a.name)
		case len(a.v) > MaxAttributeLen:
			return fmt.Errorf("TPM %s is %d bytes, limit %d", a.name, len(a.v), MaxAttributeLen)
		case !utf8.ValidString(a.v) || strings.ContainsFunc(a.v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			return fmt.Errorf("TPM %s %q is not printable UTF-8", a.name, a.v)
		}
	}
	return nil
}

// VendorID writes a 32-bit TPM property (TPM_PT_MANUFACTURER, or a
// TPM_PT_FIRMWARE_VERSION_1) the way EK certificates do: "id:" and eight
// upper-case hex digits, e.g. VendorID(0x53544D20) == "id:53544D20".
func VendorID(v uint32) string { return fmt.Sprintf("id:%08X", v) }

// FirmwareVersion turns the firmwareVersion of a TPMS_ATTEST (a quote's:
// TPM_PT_FIRMWARE_VERSION_1 in the upper 32 bits, _2 in the lower) into the
// TPM version attribute EK certificates carry (TPM_PT_FIRMWARE_VERSION_1),
// for TPMs whose EK certificate has no TCG subjectAltName.
func FirmwareVersion(fw uint64) string { return VendorID(uint32(fw >> 32)) }

// PermanentIdentifier is the TPM's permanent identifier:
// "urn:ek:sha256:" and the standard base64 of the SHA-256 of the EK public
// key's PKIX DER. It is what go.step.sm/crypto's tpm EK.FingerprintURI
// gives and what step-ca compares with the ACME order's
// permanent-identifier.
func PermanentIdentifier(ekPKIXDER []byte) string {
	sum := sha256.Sum256(ekPKIXDER)
	return permanentIdentifierPfx + base64.StdEncoding.EncodeToString(sum[:])
}

// PermanentIdentifierOf is PermanentIdentifier for a public key.
func PermanentIdentifierOf(ek crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(ek)
	if err != nil {
		return "", fmt.Errorf("EK public key: %w", err)
	}
	return PermanentIdentifier(der), nil
}

// validPermanentIdentifier: urn:ek:sha256: and 44 characters that decode
// to 32 bytes.
func validPermanentIdentifier(s string) bool {
	b64, ok := strings.CutPrefix(s, permanentIdentifierPfx)
	if !ok || len(b64) != permanentIdentifierB64n {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	return err == nil && len(b) == sha256.Size
}

// Names is what the subjectAltName of an AK certificate says.
type Names struct {
	TPM                 TPM
	PermanentIdentifier string
	SPIFFEID            spiffeid.ID
}

// otherName ::= SEQUENCE { type-id OBJECT IDENTIFIER, value [0] EXPLICIT ANY }
// Value is the [0] element itself (encoding/asn1 ignores tags on a
// RawValue when marshalling).
type otherName struct {
	TypeID asn1.ObjectIdentifier
	Value  asn1.RawValue
}

// permanentIdentifier ::= SEQUENCE { identifierValue UTF8String OPTIONAL,
// assigner OBJECT IDENTIFIER OPTIONAL } (RFC 4043)
type permanentIdentifier struct {
	IdentifierValue string                `asn1:"utf8,optional"`
	Assigner        asn1.ObjectIdentifier `asn1:"optional"`
}

type utf8ATV struct {
	Type  asn1.ObjectIdentifier
	Value string `asn1:"utf8"`
}

// SubjectAltName builds the profile's subjectAltName extension: critical,
// holding the TCG directoryName, the permanentIdentifier otherName and the
// SPIFFE ID URI, in that order.
func SubjectAltName(n Names) (pkix.Extension, error) {
	if err := n.TPM.Validate(); err != nil {
		return pkix.Extension{}, err
	}
	if !validPermanentIdentifier(n.PermanentIdentifier) {
		return pkix.Extension{}, fmt.Errorf("permanent identifier %q is not urn:ek:sha256:<base64 of 32 bytes>", n.PermanentIdentifier)
	}
	if n.SPIFFEID.IsZero() {
		return pkix.Extension{}, errors.New("no SPIFFE ID")
	}
	// directoryName: [4] EXPLICIT Name; each attribute in its own RDN.
	var rdns []byte
	for _, a := range []utf8ATV{{OIDTPMManufacturer, n.TPM.Manufacturer}, {OIDTPMModel, n.TPM.Model}, {OIDTPMVersion, n.TPM.Version}} {
		b, err := asn1.Marshal([]utf8ATV{a})
		if err != nil {
			return pkix.Extension{}, err
		}
		b[0] = 0x31 // a SET OF, not a SEQUENCE OF
		rdns = append(rdns, b...)
	}
	name, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: rdns})
	if err != nil {
		return pkix.Extension{}, err
	}
	pid, err := asn1.Marshal(permanentIdentifier{IdentifierValue: n.PermanentIdentifier})
	if err != nil {
		return pkix.Extension{}, err
	}
	on, err := asn1.MarshalWithParams(otherName{TypeID: OIDPermanentIdentifier, Value: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: pid}}, "tag:0")
	if err != nil {
		return pkix.Extension{}, err
	}
	uri := n.SPIFFEID.String()
	gns := []asn1.RawValue{
		{Class: asn1.ClassContextSpecific, Tag: tagDirectoryName, IsCompound: true, Bytes: name},
		{FullBytes: on},
		{Class: asn1.ClassContextSpecific, Tag: tagURI, Bytes: []byte(uri)},
	}
	v, err := asn1.Marshal(gns)
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: OIDSubjectAltName, Critical: true, Value: v}, nil
}

// ParseSubjectAltName reads a profile subjectAltName: exactly one
// directoryName with the three TPM attributes (once each, no other
// attribute), one permanentIdentifier otherName (valid urn:ek:sha256:,
// no assigner) and one URI that is a SPIFFE ID; any other name is an error.
func ParseSubjectAltName(value []byte) (*Names, error) {
	var gns []asn1.RawValue
	if rest, err := asn1.Unmarshal(value, &gns); err != nil || len(rest) != 0 {
		return nil, errors.New("subjectAltName is not a GeneralNames SEQUENCE")
	}
	n := &Names{}
	var dirNames, others, uris int
	for _, gn := range gns {
		if gn.Class != asn1.ClassContextSpecific {
			return nil, fmt.Errorf("subjectAltName entry of class %d", gn.Class)
		}
		switch gn.Tag {
		case tagDirectoryName:
			dirNames++
			if !gn.IsCompound {
				return nil, errors.New("directoryName is not constructed")
			}
			t, err := parseTPMName(gn.Bytes)
			if err != nil {
				return nil, err
			}
			n.TPM = t
		case tagOtherName:
			others++
			var on otherName
			if rest, err := asn1.UnmarshalWithParams(gn.FullBytes, &on, "tag:0"); err != nil || len(rest) != 0 {
				return nil, errors.New("otherName is malformed")
			}
			if !on.TypeID.Equal(OIDPermanentIdentifier) {
				return nil, fmt.Errorf("otherName %v is not a permanentIdentifier", on.TypeID)
			}
			if on.Value.Class != asn1.ClassContextSpecific || on.Value.Tag != 0 || !on.Value.IsCompound {
				return nil, errors.New("otherName value is not [0] EXPLICIT")
			}
			var pid permanentIdentifier
			if rest, err := asn1.Unmarshal(on.Value.Bytes, &pid); err != nil || len(rest) != 0 {
				return nil, errors.New("permanentIdentifier is malformed")
			}
			if len(pid.Assigner) != 0 {
				return nil, fmt.Errorf("permanentIdentifier has assigner %v", pid.Assigner)
			}
			if !validPermanentIdentifier(pid.IdentifierValue) {
				return nil, fmt.Errorf("permanentIdentifier %q is not urn:ek:sha256:<base64 of 32 bytes>", pid.IdentifierValue)
			}
			n.PermanentIdentifier = pid.IdentifierValue
		case tagURI:
			uris++
			id, err := spiffeid.FromString(string(gn.Bytes))
			if err != nil {
				return nil, fmt.Errorf("URI %q is not a SPIFFE ID: %v", gn.Bytes, err)
			}
			n.SPIFFEID = id
		case tagRFC822Name, tagDNSName, tagIPAddress:
			return nil, fmt.Errorf("subjectAltName has a name of type %d (email, DNS or IP): not in the AK profile", gn.Tag)
		default:
			return nil, fmt.Errorf("subjectAltName has a name of type %d: not in the AK profile", gn.Tag)
		}
	}
	switch {
	case dirNames != 1:
		return nil, fmt.Errorf("subjectAltName has %d directoryNames, want 1 with the TPM attributes", dirNames)
	case others != 1:
		return nil, fmt.Errorf("subjectAltName has %d otherNames, want 1 permanentIdentifier", others)
	case uris != 1:
		return nil, fmt.Errorf("subjectAltName has %d URIs, want 1 SPIFFE ID", uris)
	}
	return n, nil
}

// parseTPMName reads the TCG directoryName: manufacturer, model and version
// once each, as UTF8String or PrintableString (the encodings EK
// certificates use), and nothing else.
func parseTPMName(der []byte) (TPM, error) {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(der, &rdns); err != nil || len(rest) != 0 {
		return TPM{}, errors.New("directoryName is not a Name")
	}
	var t TPM
	for _, rdn := range rdns {
		for _, atv := range rdn {
			var dst *string
			var key string
			switch {
			case atv.Type.Equal(OIDTPMManufacturer):
				dst, key = &t.Manufacturer, "manufacturer"
			case atv.Type.Equal(OIDTPMModel):
				dst, key = &t.Model, "model"
			case atv.Type.Equal(OIDTPMVersion):
				dst, key = &t.Version, "version"
			default:
				return TPM{}, fmt.Errorf("directoryName has attribute %v: not a TPM attribute", atv.Type)
			}
			s, ok := atv.Value.(string)
			if !ok {
				return TPM{}, fmt.Errorf("TPM %s is not a string", key)
			}
			if *dst != "" {
				return TPM{}, fmt.Errorf("TPM %s appears twice", key)
			}
			*dst = s
		}
	}
	if err := t.Validate(); err != nil {
		return TPM{}, fmt.Errorf("directoryName: %w", err)
	}
	return t, nil
}

// CheckAKPublicKey accepts the keys a TPM AK can be: RSA of at least 2048
// bits, ECDSA on P-256, P-384 or P-521.
func CheckAKPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N == nil || k.N.BitLen() < 2048 {
			bits := 0
			if k.N != nil {
				bits = k.N.BitLen()
			}
			return fmt.Errorf("RSA AK of %d bits, want at least 2048", bits)
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return fmt.Errorf("ECDSA AK on curve %v, want P-256, P-384 or P-521", k.Curve)
		}
	case nil:
		return errors.New("no AK public key")
	default:
		return fmt.Errorf("AK public key %T is not RSA or ECDSA", pub)
	}
	return nil
}

// emptyName is the DER of an empty Name (an empty RDNSequence).
var emptyName = []byte{0x30, 0x00}

// Rules of the profile, named in ProfileError.
const (
	RuleVersion          = "version"
	RuleSubject          = "subject"
	RuleSubjectAltName   = "subject_alt_name"
	RuleExtKeyUsage      = "ext_key_usage"
	RuleBasicConstraints = "basic_constraints"
	RuleKeyUsage         = "key_usage"
	RuleKeyIdentifiers   = "key_identifiers"
	RuleCriticalExt      = "critical_extension"
	RulePublicKey        = "public_key"
	RuleChain            = "chain"
	RuleExpired          = "expired"
	// Rules of a presented certificate (the fast path): not a DER chain,
	// or for another AK, EK or agent than the one presenting it.
	RuleMalformed        = "malformed"
	RuleAKMismatch       = "ak_mismatch"
	RuleEKMismatch       = "ek_mismatch"
	RuleSPIFFEIDMismatch = "spiffe_id_mismatch"
)

// ProfileError says which rule of the AK profile a certificate breaks.
type ProfileError struct {
	Rule string
	Msg  string
	Err  error // the chain error, for RuleChain and RuleExpired
}

func (e *ProfileError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("AK certificate %s: %s: %v", e.Rule, e.Msg, e.Err)
	}
	return fmt.Sprintf("AK certificate %s: %s", e.Rule, e.Msg)
}

func (e *ProfileError) Unwrap() error { return e.Err }

func fail(rule, format string, a ...any) error {
	return &ProfileError{Rule: rule, Msg: fmt.Sprintf(format, a...)}
}

// CheckProfile checks every rule of the profile on cert (not its chain,
// validity or signature: see Verify) and returns what its subjectAltName
// says. Extensions outside the profile are allowed when not critical (an
// operator's template may add a CRL distribution point, an AIA or
// policies).
func CheckProfile(cert *x509.Certificate) (*Names, error) {
	if cert == nil {
		return nil, fail(RuleVersion, "no certificate")
	}
	if cert.Version != 3 {
		return nil, fail(RuleVersion, "version %d, want 3", cert.Version)
	}
	if !bytes.Equal(cert.RawSubject, emptyName) {
		return nil, fail(RuleSubject, "subject %q is not empty", cert.Subject.String())
	}
	if err := CheckAKPublicKey(cert.PublicKey); err != nil {
		return nil, fail(RulePublicKey, "%v", err)
	}
	var san *pkix.Extension
	var ekus, bcs, kus int
	for i := range cert.Extensions {
		e := &cert.Extensions[i]
		switch {
		case e.Id.Equal(OIDSubjectAltName):
			if san != nil {
				return nil, fail(RuleSubjectAltName, "two subjectAltName extensions")
			}
			san = e
		case e.Id.Equal(OIDExtKeyUsage):
			ekus++
			var oids []asn1.ObjectIdentifier
			if rest, err := asn1.Unmarshal(e.Value, &oids); err != nil || len(rest) != 0 {
				return nil, fail(RuleExtKeyUsage, "extended key usage is malformed")
			}
			if len(oids) != 1 || !oids[0].Equal(OIDTCGKpAIKCertificate) {
				return nil, fail(RuleExtKeyUsage, "extended key usage %v, want exactly tcg-kp-AIKCertificate %v", oids, OIDTCGKpAIKCertificate)
			}
		case e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 19}):
			bcs++
		case e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 15}):
			kus++
		case e.Critical && !knownCritical(e.Id):
			return nil, fail(RuleCriticalExt, "critical extension %v is not in the AK profile", e.Id)
		}
	}
	if san == nil {
		return nil, fail(RuleSubjectAltName, "no subjectAltName")
	}
	if !san.Critical {
		return nil, fail(RuleSubjectAltName, "subjectAltName is not critical (the subject is empty)")
	}
	names, err := ParseSubjectAltName(san.Value)
	if err != nil {
		return nil, fail(RuleSubjectAltName, "%v", err)
	}
	if ekus == 0 {
		return nil, fail(RuleExtKeyUsage, "no extended key usage, want tcg-kp-AIKCertificate %v", OIDTCGKpAIKCertificate)
	}
	if len(cert.ExtKeyUsage) != 0 || len(cert.UnknownExtKeyUsage) != 1 {
		return nil, fail(RuleExtKeyUsage, "extended key usage %v %v, want exactly tcg-kp-AIKCertificate", cert.ExtKeyUsage, cert.UnknownExtKeyUsage)
	}
	if bcs != 1 || !cert.BasicConstraintsValid || cert.IsCA {
		return nil, fail(RuleBasicConstraints, "want basicConstraints with cA FALSE (present %t, cA %t)", cert.BasicConstraintsValid, cert.IsCA)
	}
	if kus != 1 || cert.KeyUsage != x509.KeyUsageDigitalSignature {
		return nil, fail(RuleKeyUsage, "key usage %#x, want digitalSignature (%#x) only", int(cert.KeyUsage), int(x509.KeyUsageDigitalSignature))
	}
	if len(cert.SubjectKeyId) == 0 || len(cert.AuthorityKeyId) == 0 {
		return nil, fail(RuleKeyIdentifiers, "subject key identifier (%d bytes) and authority key identifier (%d bytes) are both required", len(cert.SubjectKeyId), len(cert.AuthorityKeyId))
	}
	return names, nil
}

// knownCritical: critical extensions crypto/x509 handles itself or that the
// profile checks (subjectAltName, basicConstraints, keyUsage, EKU).
func knownCritical(id asn1.ObjectIdentifier) bool {
	for _, k := range []asn1.ObjectIdentifier{
		{2, 5, 29, 15}, // keyUsage
		{2, 5, 29, 19}, // basicConstraints
		{2, 5, 29, 17}, // subjectAltName
		{2, 5, 29, 37}, // extKeyUsage
		{2, 5, 29, 14}, // subjectKeyIdentifier
		{2, 5, 29, 35}, // authorityKeyIdentifier
	} {
		if id.Equal(k) {
			return true
		}
	}
	return false
}
