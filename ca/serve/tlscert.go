package serve

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/ca/keys"
)

// DefaultServerCertLifetime is the lifetime of a generated TLS server
// certificate; it is renewed in the server once a third of it is left.
const DefaultServerCertLifetime = 7 * 24 * time.Hour

// ServerCert is a TLS server certificate issued by the CA's current
// intermediate for the names the server listens on, so that clients that
// trust the CA root (the step client's WithRootsFile(root.crt)) can reach
// the server without another PKI. It opens the intermediate key through
// ca/keys, as issuer.Load does, and keeps it open to renew the
// certificate. It chains to the same root as the AK certificates but
// cannot pass for one (subject, EKU serverAuth, no TPM names: the AK
// profile refuses it), and an AK certificate cannot serve TLS (no DNS or IP
// name, no serverAuth).
type ServerCert struct {
	names    []string
	lifetime time.Duration
	now      func() time.Time
	inter    *x509.Certificate
	kms      *keys.KMS
	signer   crypto.Signer

	mu   sync.Mutex
	cert *tls.Certificate
}

// NewServerCert issues a server certificate for names (DNS names or IP
// addresses) from the current intermediate of ca, loaded from dir.
// lifetime zero is DefaultServerCertLifetime; the certificate never
// outlives the intermediate.
func NewServerCert(ctx context.Context, dir string, ca *issuer.CA, names []string, lifetime time.Duration, now func() time.Time) (*ServerCert, error) {
	if len(names) == 0 {
		return nil, errors.New("server certificate: no name")
	}
	if lifetime <= 0 {
		lifetime = DefaultServerCertLifetime
	}
	if now == nil {
		now = time.Now
	}
	cfg := ca.Config()
	kms, err := keys.Open(ctx, cfg.KMS, dir)
	if err != nil {
		return nil, err
	}
	signer, err := kms.Signer(ctx, cfg.Intermediate.Key)
	if err != nil {
		kms.Close()
		return nil, fmt.Errorf("intermediate key: %w", err)
	}
	s := &ServerCert{names: slices.Clone(names), lifetime: lifetime, now: now, inter: ca.Intermediate(), kms: kms, signer: signer}
	if s.cert, err = s.issue(); err != nil {
		kms.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the KMS.
func (s *ServerCert) Close() error { return s.kms.Close() }

// Leaf is the current certificate.
func (s *ServerCert) Leaf() *x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cert.Leaf
}

// GetCertificate is tls.Config.GetCertificate: the current certificate,
// renewed once less than a third of its lifetime is left. A failed renewal
// keeps serving the old one while it is valid.
func (s *ServerCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cert.Leaf.NotAfter.Sub(s.now()) < s.lifetime/3 {
		c, err := s.issue()
		if err != nil {
			if s.now().Before(s.cert.Leaf.NotAfter) {
				return s.cert, nil
			}
			return nil, err
		}
		s.cert = c
	}
	return s.cert, nil
}

func (s *ServerCert) issue() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	now := s.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: s.names[0]},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(s.lifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if tmpl.NotAfter.After(s.inter.NotAfter) {
		tmpl.NotAfter = s.inter.NotAfter
	}
	if !tmpl.NotAfter.After(now) {
		return nil, fmt.Errorf("server certificate: the intermediate expired at %s: run tpmid ca rotate-intermediate", s.inter.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, n := range s.names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.inter, key.Public(), s.signer)
	if err != nil {
		return nil, fmt.Errorf("signing the server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, s.inter.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// ListenNames are the names a generated server certificate carries for a
// listen address: its host, or for an unspecified one (":8443",
// "0.0.0.0:8443", "[::]:8443") the machine's hostname, localhost,
// 127.0.0.1 and ::1; then extra.
func ListenNames(addr string, extra ...string) ([]string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	var names []string
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if h, err := os.Hostname(); err == nil && h != "" {
			names = append(names, h)
		}
		names = append(names, "localhost", "127.0.0.1", "::1")
	} else {
		names = append(names, host)
	}
	for _, e := range extra {
		if !slices.Contains(names, e) {
			names = append(names, e)
		}
	}
	return names, nil
}
