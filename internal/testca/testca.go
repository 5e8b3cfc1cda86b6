// Package testca makes EK certificate authorities and EK certificates for
// tests, shaped like real TCG EK certificates (TCG EK Credential Profile
// for TPM Family 2.0, section 3.2): empty subject, a critical
// subjectAltName holding only a directoryName with the TPM manufacturer,
// model and version (3.2.9), basicConstraints cA FALSE (3.2.10), key usage
// keyEncipherment for RSA and keyAgreement for ECC EKs (3.2.15), extended
// key usage tcg-kp-EKCertificate (3.2.16). They pass verify.CheckEKProfile.
package testca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"time"
)

var (
	oidSAN             = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidEKCertificate   = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
)

// CA is a self-signed root that issues EK certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// New makes a root CA named cn.
func New(cn string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"tpmid tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// WritePEM writes the CA certificate to path.
func (c *CA) WritePEM(path string) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw}), 0o644)
}

// IssueEK certifies ekPub (an RSA or ECDSA key) as an EK of a TPM from
// manufacturer (e.g. "id:53494D55"), returning DER.
func (c *CA) IssueEK(ekPub crypto.PublicKey, manufacturer, model, version string) ([]byte, error) {
	var usage x509.KeyUsage
	switch ekPub.(type) {
	case *rsa.PublicKey:
		usage = x509.KeyUsageKeyEncipherment
	case *ecdsa.PublicKey:
		usage = x509.KeyUsageKeyAgreement
	default:
		return nil, fmt.Errorf("testca: an EK is an RSA or ECDSA key, not %T", ekPub)
	}
	name, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: oidTPMManufacturer, Value: manufacturer}},
		{{Type: oidTPMModel, Value: model}},
		{{Type: oidTPMVersion, Value: version}},
	})
	if err != nil {
		return nil, err
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: name}})
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		// crypto/x509 always marks basicConstraints critical.
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              usage,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidEKCertificate},
		ExtraExtensions:       []pkix.Extension{{Id: oidSAN, Critical: true, Value: san}},
	}
	return x509.CreateCertificate(rand.Reader, tmpl, c.Cert, ekPub, c.Key)
}

// Issue signs tmpl for pub as it is, with a fresh serial number and, when
// tmpl has none, a validity from an hour ago to a day ahead. It is for
// tests that need certificates that are not EK certificates (TLS, AK, CA
// certificates) from a CA an ek_ca_bundle trusts. Returns DER.
func (c *CA) Issue(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	t := *tmpl
	t.SerialNumber = big.NewInt(time.Now().UnixNano())
	if t.NotBefore.IsZero() {
		t.NotBefore = time.Now().Add(-time.Hour)
	}
	if t.NotAfter.IsZero() {
		t.NotAfter = time.Now().Add(24 * time.Hour)
	}
	return x509.CreateCertificate(rand.Reader, &t, c.Cert, pub, c.Key)
}
