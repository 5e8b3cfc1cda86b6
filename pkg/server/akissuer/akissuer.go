// Package akissuer connects the server session to tpmid's CA (ca/issuer):
// it implements session.AKIssuer, certifying the AK of a node that was just
// admitted with full TPM evidence, and checking the certificate an agent
// presents for the fast path.
package akissuer

import (
	"context"
	"crypto"
	"errors"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/ca/akcert"
	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/pkg/server/session"
)

// ErrTPMUnknown: the TPM's manufacturer and model are not known (an EK
// admitted by allowlist, or a certificate without the TCG subjectAltName),
// and an AK certificate without them is one step-ca refuses; none is issued
// and the node keeps taking the full path.
var ErrTPMUnknown = errors.New("TPM manufacturer and model unknown: no AK certificate")

// Issuer is session.AKIssuer over a loaded CA.
type Issuer struct {
	CA       *issuer.CA
	Lifetime time.Duration    // zero: the CA's ak.lifetime
	Now      func() time.Time // default time.Now
}

var _ session.AKIssuer = (*Issuer)(nil)

// IssueAK implements session.AKIssuer.
func (i *Issuer) IssueAK(ctx context.Context, f *session.Facts, id spiffeid.ID) ([][]byte, error) {
	tpm, err := tpmOf(f)
	if err != nil {
		return nil, err
	}
	certs, err := i.CA.IssueAK(ctx, issuer.AKRequest{
		AKPublic: f.AKPublic, EKPublicDER: f.EKPublic, TPM: tpm, SPIFFEID: id, Lifetime: i.Lifetime,
	})
	if err != nil {
		return nil, err
	}
	chain := make([][]byte, len(certs))
	for k, c := range certs {
		chain[k] = c.Raw
	}
	return chain, nil
}

// tpmOf takes the TPM attributes from the verified EK certificate, and the
// firmware version from the quote when the certificate has none.
func tpmOf(f *session.Facts) (akcert.TPM, error) {
	var t akcert.TPM
	if f.EK != nil {
		t = akcert.TPM{Manufacturer: f.EK.Manufacturer, Model: f.EK.Model, Version: f.EK.Version}
	}
	if t.Version == "" && len(f.Quotes) > 0 {
		t.Version = akcert.FirmwareVersion(f.Quotes[0].FirmwareVersion)
	}
	if t.Manufacturer == "" || t.Model == "" {
		return t, ErrTPMUnknown
	}
	return t, t.Validate()
}

// CheckAK implements session.AKIssuer.
func (i *Issuer) CheckAK(_ context.Context, chain [][]byte, f *session.Facts, ak crypto.PublicKey, id spiffeid.ID) (time.Time, error) {
	facts, err := i.CA.CheckAK(chain, ak, f.EKPublic, id, i.now())
	if err != nil {
		return time.Time{}, err
	}
	return facts.NotAfter, nil
}

// Renew implements session.AKIssuer.
func (i *Issuer) Renew(notAfter time.Time) bool { return i.CA.NeedsRenewal(notAfter, i.now()) }

func (i *Issuer) now() time.Time {
	if i.Now != nil {
		return i.Now()
	}
	return time.Now()
}
