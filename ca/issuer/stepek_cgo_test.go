//go:build cgo

package issuer

import (
	"context"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	steptpm "go.step.sm/crypto/tpm"
	"go.step.sm/crypto/x509util"

	"github.com/tpmid/tpmid/ca/akcert"
)

// simChannel is the in-process reference TPM as a go.step.sm/crypto
// command channel (no event log).
type simChannel struct{ *simulator.Simulator }

func (simChannel) MeasurementLog() ([]byte, error) { return nil, nil }

// TestPermanentIdentifierIsFingerprintURI: for a TPM's EK as
// go.step.sm/crypto's tpm package reads it, the permanent identifier in
// the AK certificate is exactly EK.FingerprintURI (the value step's
// attestation client puts in the ACME order and step-ca compares).
func TestPermanentIdentifierIsFingerprintURI(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("simulator: %v", err)
	}
	defer sim.Close()
	tp, err := steptpm.New(steptpm.WithCommandChannel(simChannel{sim}), steptpm.WithDisableDownload())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	eks, err := tp.GetEKs(ctx)
	if err != nil {
		t.Fatalf("GetEKs: %v", err)
	}
	if len(eks) == 0 {
		t.Fatal("no EK")
	}
	_, ca := newCA(t, InitOptions{})
	for _, ek := range eks {
		u, err := ek.FingerprintURI()
		if err != nil {
			t.Fatal(err)
		}
		pid, err := akcert.PermanentIdentifierOf(ek.Public())
		if err != nil {
			t.Fatal(err)
		}
		if pid != u.String() {
			t.Errorf("%s EK: permanent identifier %s, FingerprintURI %s", ek.Type(), pid, u)
		}
		req, _ := request(t)
		req.EKPublicDER = der(t, ek.Public())
		chain, err := ca.IssueAK(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		sans, err := x509util.ParseSubjectAlternativeNames(chain[0])
		if err != nil || len(sans.PermanentIdentifiers) != 1 || sans.PermanentIdentifiers[0].Identifier != u.String() {
			t.Errorf("%s EK: certificate says %+v (%v), want %s", ek.Type(), sans.PermanentIdentifiers, err, u)
		}
		if err := stepCAChecks(chain, ca.Root(), t0, u.String()); err != nil {
			t.Errorf("%s EK: step-ca's checks: %v", ek.Type(), err)
		}
		t.Logf("%s EK: %s", ek.Type(), u)
	}
}
