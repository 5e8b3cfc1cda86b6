package akcert

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"math/big"
	"slices"
	"time"
)

// Facts is what a verified AK certificate says.
type Facts struct {
	Names
	Serial              *big.Int
	NotBefore, NotAfter time.Time
	// Chain is the verified chain: the certificate, its intermediate(s),
	// the root.
	Chain []*x509.Certificate
}

// Verify verifies cert at now up to one of roots, with intermediates to
// complete the chain, and then checks the profile (CheckProfile).
//
// The critical subjectAltName is accepted as handled: crypto/x509 leaves it
// in UnhandledCriticalExtensions when it holds no name type it knows (an
// AK certificate of another CA may hold only the TCG directoryName and a
// permanentIdentifier); the profile reads it afterwards. Any other
// unhandled critical extension is refused. Extended key usage is not
// constrained while building the chain (the TCG EKU is not one crypto/x509
// knows); the profile checks it.
//
// Errors are *ProfileError: RuleExpired when the certificate is outside its
// validity at now, RuleChain when it does not chain to roots (a foreign
// CA), otherwise the profile rule it breaks.
func Verify(cert *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool, now time.Time) (*Facts, error) {
	if cert == nil {
		return nil, fail(RuleChain, "no certificate")
	}
	if roots == nil {
		return nil, fail(RuleChain, "no roots")
	}
	if now.IsZero() {
		return nil, fail(RuleChain, "no verification time")
	}
	leaf := *cert
	leaf.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(cert.UnhandledCriticalExtensions),
		func(o asn1.ObjectIdentifier) bool { return o.Equal(OIDSubjectAltName) })
	if u := leaf.UnhandledCriticalExtensions; len(u) > 0 {
		return nil, fail(RuleCriticalExt, "unhandled critical extension %v", u[0])
	}
	pool := x509.NewCertPool()
	for _, c := range intermediates {
		if c != nil {
			pool.AddCert(c)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: pool,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return nil, &ProfileError{Rule: RuleExpired, Msg: "outside its validity", Err: err}
		}
		return nil, &ProfileError{Rule: RuleChain, Msg: "does not chain to the CA", Err: err}
	}
	names, err := CheckProfile(cert)
	if err != nil {
		return nil, err
	}
	chain := slices.Clone(chains[0])
	chain[0] = cert
	return &Facts{Names: *names, Serial: cert.SerialNumber, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, Chain: chain}, nil
}
