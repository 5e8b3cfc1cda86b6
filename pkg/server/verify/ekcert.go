package verify

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// MaxEKCertSize bounds ParseEKCert's input: EK certificate NV indices hold at
// most a few KB (real ones are 0.7-2 KB, padded to 1600 bytes by some vendors).
const MaxEKCertSize = 8192

var (
	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
)

// ParseEKCert parses an EK certificate as read from the TPM's NV index: DER,
// possibly followed by NV padding (0xFF or 0x00 bytes), which is trimmed; any
// other trailing byte is rejected. A PEM CERTIFICATE block is accepted too.
func ParseEKCert(der []byte) (*x509.Certificate, error) {
	if len(der) > MaxEKCertSize {
		return nil, failf(ReasonEKCertMalformed, "EK certificate is %d bytes, limit %d", len(der), MaxEKCertSize)
	}
	if t := bytes.TrimSpace(der); bytes.HasPrefix(t, []byte("-----BEGIN")) {
		blk, rest := pem.Decode(t)
		if blk == nil || blk.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
			return nil, failf(ReasonEKCertMalformed, "want exactly one PEM CERTIFICATE block")
		}
		der = blk.Bytes
	}
	n, err := derLength(der)
	if err != nil {
		return nil, failf(ReasonEKCertMalformed, "%v", err)
	}
	for i, c := range der[n:] {
		if c != 0xff && c != 0x00 {
			return nil, failf(ReasonEKCertMalformed, "byte 0x%02x at offset %d after the %d-byte certificate is not NV padding", c, n+i, n)
		}
	}
	cert, err := x509.ParseCertificate(der[:n])
	if err != nil {
		return nil, failf(ReasonEKCertMalformed, "%v", err)
	}
	return cert, nil
}

// derLength returns the length of the outer DER SEQUENCE (header included).
func derLength(b []byte) (int, error) {
	if len(b) < 2 || b[0] != 0x30 {
		return 0, errors.New("not a DER SEQUENCE")
	}
	l, hdr := int(b[1]), 2
	if l&0x80 != 0 {
		n := l & 0x7f
		if n == 0 || n > 2 || len(b) < 2+n { // 2 length bytes cover 64 KiB, far above MaxEKCertSize
			return 0, errors.New("bad DER length")
		}
		l = 0
		for _, c := range b[2 : 2+n] {
			l = l<<8 | int(c)
		}
		hdr += n
	}
	if hdr+l > len(b) {
		return 0, fmt.Errorf("DER says %d bytes, have %d", hdr+l, len(b))
	}
	return hdr + l, nil
}

// EKAttributes reads the TPM manufacturer, model and version from the TCG
// subjectAltName directoryName (TCG EK Credential Profile 2.0, 3.2.9:
// attributes 2.23.133.2.1/2/3). All three must be present, once each.
// Manufacturer is kept as written, e.g. "id:53544D20" ("STM ").
func EKAttributes(cert *x509.Certificate) (manufacturer, model, version string, err error) {
	if cert == nil {
		return "", "", "", failf(ReasonInvalidArgument, "no certificate")
	}
	var ext *pkix.Extension
	for i := range cert.Extensions {
		if cert.Extensions[i].Id.Equal(oidSubjectAltName) {
			if ext != nil {
				return "", "", "", failf(ReasonEKSAN, "two subjectAltName extensions")
			}
			ext = &cert.Extensions[i]
		}
	}
	if ext == nil {
		return "", "", "", failf(ReasonEKSAN, "no subjectAltName with TPM attributes")
	}
	var names []asn1.RawValue
	if rest, err := asn1.Unmarshal(ext.Value, &names); err != nil || len(rest) != 0 {
		return "", "", "", failf(ReasonEKSAN, "subjectAltName is not a GeneralNames SEQUENCE")
	}
	got := map[string]*string{}
	for _, gn := range names {
		if gn.Class != asn1.ClassContextSpecific || gn.Tag != 4 || !gn.IsCompound {
			continue // not a directoryName
		}
		var rdns pkix.RDNSequence
		if rest, err := asn1.Unmarshal(gn.Bytes, &rdns); err != nil || len(rest) != 0 {
			return "", "", "", failf(ReasonEKSAN, "directoryName is not a Name")
		}
		for _, rdn := range rdns {
			for _, atv := range rdn {
				var dst *string
				var key string
				switch {
				case atv.Type.Equal(oidTPMManufacturer):
					dst, key = &manufacturer, "manufacturer"
				case atv.Type.Equal(oidTPMModel):
					dst, key = &model, "model"
				case atv.Type.Equal(oidTPMVersion):
					dst, key = &version, "version"
				default:
					continue
				}
				s, ok := atv.Value.(string)
				if !ok || s == "" {
					return "", "", "", failf(ReasonEKSAN, "TPM %s is not a non-empty string", key)
				}
				if got[key] != nil {
					return "", "", "", failf(ReasonEKSAN, "TPM %s appears twice", key)
				}
				*dst = s
				got[key] = dst
			}
		}
	}
	var missing []string
	for _, k := range []string{"manufacturer", "model", "version"} {
		if got[k] == nil {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return "", "", "", failf(ReasonEKSAN, "subjectAltName lacks TPM %s", strings.Join(missing, ", "))
	}
	return manufacturer, model, version, nil
}

// EKTrust is a set of EK trust anchors (self-signed manufacturer roots) and
// the intermediates that may complete chains.
type EKTrust struct {
	Roots, Intermediates *x509.CertPool
	// ChainQuirks are the defects of bundle intermediates to accept (the
	// server's ek_chain_quirks); none by default.
	ChainQuirks []ChainQuirk
	// roots and inters are the certificates NewEKTrust sorted, the only
	// ones a chain quirk may excuse: an EKTrust made without NewEKTrust
	// has none, so no quirk applies to it.
	roots, inters []*x509.Certificate
}

// NewEKTrust sorts certificates into trust anchors (self-signed
// manufacturer roots) and the intermediates that may complete chains. A set
// without any root is an error (ReasonEKTrustConfig); source names where the
// certificates came from, for that message.
func NewEKTrust(certs []*x509.Certificate, source string) (*EKTrust, error) {
	t := &EKTrust{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
	nRoots := 0
	seen := map[string]bool{}
	for _, c := range certs {
		if seen[string(c.Raw)] {
			continue // vendor sets repeat certificates under other names
		}
		seen[string(c.Raw)] = true
		if selfSigned(c) {
			t.Roots.AddCert(c)
			t.roots = append(t.roots, c)
			nRoots++
		} else {
			t.Intermediates.AddCert(c)
			t.inters = append(t.inters, c)
		}
	}
	if nRoots == 0 {
		return nil, failf(ReasonEKTrustConfig, "EK trust bundle %s holds %d certificates but no self-signed root", source, len(certs))
	}
	return t, nil
}

// selfSigned: subject == issuer and, when both key identifiers are present,
// they agree. The root's own signature is not checked (Go's Verify does not
// either; a trust anchor is trusted by configuration).
func selfSigned(c *x509.Certificate) bool {
	if !bytes.Equal(c.RawSubject, c.RawIssuer) {
		return false
	}
	if len(c.AuthorityKeyId) > 0 && len(c.SubjectKeyId) > 0 {
		return bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId)
	}
	return true
}

// EKFacts is what a verified EK certificate says.
type EKFacts struct {
	Manufacturer, Model, Version string // TCG SAN attributes; empty when the certificate has no SAN
	Issuer                       string // issuer CN
	// Quirk names the vendor deviation from the EK profile the certificate
	// needed (QuirkGCEEKNoSAN: no SAN, so no manufacturer/model/version);
	// "" when it meets the profile as written.
	Quirk string
	// ChainQuirks names the ek_chain_quirks this certificate's chain needed
	// (a SHA-1-signed or expired intermediate from the EK CA bundle); nil
	// when crypto/x509 validated the chain as it is.
	ChainQuirks []ChainQuirk
	Chain       []*x509.Certificate
}

// VerifyEKCert validates cert up to a root of trust at time now, and then
// that it is an EK certificate at all (CheckEKProfile).
//
//   - The subjectAltName's TCG TPM manufacturer, model and version are read
//     (EKAttributes). A critical SAN holding only a directoryName is what the
//     TCG EK Credential Profile prescribes; Go's parser leaves it in
//     UnhandledCriticalExtensions, and it is removed from there (on a copy).
//     A SAN without them is refused by the profile after the chain.
//   - Any other unhandled critical extension is rejected (ReasonEKCriticalExtension).
//   - Extended key usage is not constrained while building the chain
//     (x509.ExtKeyUsageAny); the profile judges it afterwards.
//   - Chain errors are ReasonEKExpired when a certificate is outside its
//     validity at now, otherwise ReasonEKUntrusted.
//   - A certificate that chains but is not an EK certificate (a CA
//     certificate, a signing or AK certificate, a TLS certificate, no TCG
//     SAN outside the named GCE quirk) is ReasonEKCertProfile. The chain is
//     decided first: a certificate from a CA nobody trusts is simply
//     untrusted (and an allowlist may still admit its key), while a
//     non-EK certificate from a trusted CA is the attack the profile stops,
//     which callers refuse outright. A certificate without SAN passes only
//     through QuirkGCEEKNoSAN, named in EKFacts.Quirk.
//   - A chain crypto/x509 refuses only because an intermediate from the
//     bundle is SHA-1-signed or expired passes when trust.ChainQuirks
//     names that quirk (named in EKFacts.ChainQuirks); without it the
//     refusal (ek_untrusted, ek_expired) names the intermediate and the
//     ek_chain_quirks value that would accept it. The EK certificate, the
//     root and intermediates the agent sent are never excused.
func VerifyEKCert(cert *x509.Certificate, extraIntermediates []*x509.Certificate, trust *EKTrust, now time.Time) (*EKFacts, error) {
	f, err := verifyEKChain(cert, extraIntermediates, trust, now)
	if err != nil {
		return nil, err
	}
	prof, err := CheckEKProfile(cert)
	if err != nil {
		return nil, err
	}
	f.Quirk = prof.Quirk
	return f, nil
}

// verifyEKChain is VerifyEKCert without the profile: critical extensions
// and the chain, with the TCG attributes read when the SAN has them (the CA
// survey validates CA certificates with it as if they were leaves). It
// does not judge the SAN's content: VerifyEKCert's profile does.
func verifyEKChain(cert *x509.Certificate, extraIntermediates []*x509.Certificate, trust *EKTrust, now time.Time) (*EKFacts, error) {
	if cert == nil {
		return nil, failf(ReasonInvalidArgument, "no EK certificate")
	}
	if trust == nil || trust.Roots == nil {
		return nil, failf(ReasonEKTrustConfig, "no EK trust roots configured")
	}
	if now.IsZero() {
		return nil, failf(ReasonInvalidArgument, "no verification time")
	}
	f := &EKFacts{Issuer: cert.Issuer.CommonName}
	leaf := *cert
	if hasExt(cert, oidSubjectAltName) {
		// A SAN without the TCG attributes (a TLS certificate's DNS names,
		// a broken TCG SAN) is not refused here but by the profile's
		// subject-alt-name rule once the chain is known: refused either
		// way, it is ek_cert_profile from a trusted CA and ek_untrusted
		// from any other.
		if m, mo, v, err := EKAttributes(cert); err == nil {
			f.Manufacturer, f.Model, f.Version = m, mo, v
		}
		leaf.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(cert.UnhandledCriticalExtensions),
			func(o asn1.ObjectIdentifier) bool { return o.Equal(oidSubjectAltName) })
	}
	if u := leaf.UnhandledCriticalExtensions; len(u) > 0 {
		return nil, failf(ReasonEKCriticalExtension, "unhandled critical extension %v", u[0])
	}
	// The bundle's pool is copied only to add the agent's intermediates:
	// Verify only reads it (a nil pool is an empty one), and a vendor
	// bundle holds a hundred or more.
	inter := trust.Intermediates
	if len(extraIntermediates) > 0 {
		if inter == nil {
			inter = x509.NewCertPool()
		} else {
			inter = inter.Clone()
		}
		for _, c := range extraIntermediates {
			if c != nil {
				inter.AddCert(c)
			}
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         trust.Roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		expired := errors.As(err, &inv) && inv.Reason == x509.Expired
		if expired && inv.Cert != nil && inv.Cert.Equal(cert) {
			return nil, &Error{Reason: ReasonEKExpired, Err: err}
		}
		// No chain as crypto/x509 sees it: one through a SHA-1-signed or
		// expired intermediate of the bundle is admitted if the operator
		// named that quirk, and named in the refusal if not.
		if p := findQuirkChain(&leaf, extraIntermediates, trust, now); p != nil {
			if !p.admitted(trust.ChainQuirks) {
				return nil, p.refusal(trust.ChainQuirks)
			}
			f.Chain = p.chain
			f.Chain[0] = cert
			f.ChainQuirks = p.needed()
			return f, nil
		}
		hint := quirkHint(cert, extraIntermediates, now)
		if expired {
			// crypto/x509 names an expired intermediate when it was the
			// only way up.
			return nil, &Error{Reason: ReasonEKExpired, Err: fmt.Errorf("%w%s", err, hint)}
		}
		// An expired intermediate surfaces as UnknownAuthorityError. To name
		// the reason, check whether the chain validates at a time when the
		// leaf was valid; if so, only validity periods are at fault.
		opts := x509.VerifyOptions{Roots: trust.Roots, Intermediates: inter, CurrentTime: leaf.NotBefore.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		if _, err2 := leaf.Verify(opts); err2 == nil {
			return nil, &Error{Reason: ReasonEKExpired, Err: fmt.Errorf("a chain certificate is outside its validity at %s%s: %w", now.UTC().Format(time.RFC3339), hint, err)}
		}
		return nil, &Error{Reason: ReasonEKUntrusted, Err: fmt.Errorf("%s%s: %w", missingCA(cert, extraIntermediates), hint, err)}
	}
	f.Chain = slices.Clone(chains[0])
	f.Chain[0] = cert
	return f, nil
}

func hasExt(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true
		}
	}
	return false
}

// EKHash is the lowercase hex SHA-256 of the key's PKIX DER encoding: the
// last segment of the agent ID and the ek_hash selector.
func EKHash(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", failf(ReasonInvalidArgument, "EK public key: %v", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// missingCA names the CA an untrusted EK certificate needs: the issuer DN
// and authority key ID of the topmost certificate reachable from the leaf
// through the intermediates the agent sent, so the operator knows which
// vendor CA to add to ek_ca_bundle.
func missingCA(cert *x509.Certificate, extra []*x509.Certificate) string {
	top := cert
	for range len(extra) {
		var next *x509.Certificate
		for _, c := range extra {
			if c != nil && c != top && bytes.Equal(c.RawSubject, top.RawIssuer) && top.CheckSignatureFrom(c) == nil {
				next = c
				break
			}
		}
		if next == nil || bytes.Equal(next.RawSubject, next.RawIssuer) {
			break
		}
		top = next
	}
	aki := "none"
	if len(top.AuthorityKeyId) > 0 {
		aki = hexColons(top.AuthorityKeyId)
	}
	return fmt.Sprintf("no trusted CA for issuer %q (authority key ID %s): add that vendor CA to ek_ca_bundle", top.Issuer.String(), aki)
}

// hexColons formats b as aa:bb:cc, the way openssl prints key IDs.
func hexColons(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, ":")
}
