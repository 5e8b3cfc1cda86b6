// Package testakca is a minimal AK CA for tests: enough for the server
// session's delivery step and fast path, without the real CA (ca/).
package testakca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/pkg/server/session"
)

// CA is a minimal AK CA behind the server session's AKIssuer port: the
// leaf carries the agent ID as URI SAN and the EK hash as subject CN. The
// real CA (ca/) has its own tests; this one is for tests of how the
// session and the agent use one. Now is its clock (tests move it to reach
// renewal or expiry); a certificate lives Lifetime and is renewed in its
// last third.
type CA struct {
	Now      time.Time
	Lifetime time.Duration
	key      crypto.Signer
	root     *x509.Certificate
	issued   int
}

// New makes a CA named name, with a fresh P-256 root.
func New(t testing.TB, name string) *CA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	return &CA{key: key, root: root, Lifetime: 24 * time.Hour, Now: time.Now()}
}

// IssueAK implements session.AKIssuer.
func (c *CA) IssueAK(_ context.Context, f *session.Facts, id spiffeid.ID) ([][]byte, error) {
	c.issued++
	u, _ := url.Parse(id.String())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(c.issued + 1)), Subject: pkix.Name{CommonName: f.EKHash},
		NotBefore: c.Now.Add(-time.Minute), NotAfter: c.Now.Add(c.Lifetime), URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.root, f.AKPublic, c.key)
	return [][]byte{der}, err
}

// CheckAK implements session.AKIssuer.
func (c *CA) CheckAK(_ context.Context, chain [][]byte, f *session.Facts, ak crypto.PublicKey, id spiffeid.ID) (time.Time, error) {
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return time.Time{}, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(c.root)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: c.Now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return time.Time{}, err
	}
	eq, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	switch {
	case !ok || !eq.Equal(ak):
		return time.Time{}, errors.New("another AK")
	case leaf.Subject.CommonName != f.EKHash:
		return time.Time{}, errors.New("another EK")
	case len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String():
		return time.Time{}, errors.New("another agent")
	}
	return leaf.NotAfter, nil
}

// Renew implements session.AKIssuer.
func (c *CA) Renew(notAfter time.Time) bool { return notAfter.Sub(c.Now) < c.Lifetime/3 }
