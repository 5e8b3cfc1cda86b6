package tpmtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/google/go-attestation/attest"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"
	"github.com/google/go-tpm/tpmutil"

	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/pkg/common/tpm"
)

// The simulator is one per process: these tests never run in parallel.

func openSim(t testing.TB) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open(tpm.Config{Device: "simulator", EventLogPath: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Fatalf("Open(simulator): %v", err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

func loadedHandles(t testing.TB, tp *tpm.TPM) []uint32 {
	t.Helper()
	h, err := tp.LoadedHandles()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// rawChannel lets go-attestation use tp's channel inside WithChannel.
type rawChannel struct{ io.ReadWriter }

func (rawChannel) Close() error                    { return nil }
func (rawChannel) MeasurementLog() ([]byte, error) { return nil, nil }

// attestEKCertificates is go-attestation's own view of tp's EKs.
func attestEKCertificates(tp *tpm.TPM) (eks []attest.EK, err error) {
	err = tp.WithChannel(func(ch io.ReadWriter) error {
		at, err := attest.OpenTPM(&attest.OpenConfig{CommandChannel: rawChannel{ch}})
		if err != nil {
			return err
		}
		defer at.Close()
		eks, err = at.EKCertificates()
		return err
	})
	return eks, err
}

// issuer returns an issue function for ProvisionEKCertificate that records
// the DER it returns and the key it was called with.
func issuer(t *testing.T, ca *testca.CA, der *[]byte, got *crypto.PublicKey) func(crypto.PublicKey) ([]byte, error) {
	return func(pub crypto.PublicKey) ([]byte, error) {
		*got = pub
		d, err := ca.IssueEK(pub, "id:53494D55", "id:00000001", "id:00020000")
		*der = d
		return d, err
	}
}

func TestSimulatorProvisionEKCertificate(t *testing.T) {
	tp := openSim(t)
	ca, err := testca.New("provisioning test root")
	if err != nil {
		t.Fatal(err)
	}
	rsaBefore, err := tp.EK(tpm.EKRSA)
	if err != nil {
		t.Fatal(err)
	}

	// ECC first: the only EK with a certificate, EK("") picks it.
	var eccDER []byte
	var eccPub crypto.PublicKey
	if err := ProvisionEKCertificate(tp, tpm.EKECC, issuer(t, ca, &eccDER, &eccPub)); err != nil {
		t.Fatalf("ProvisionEKCertificate(ecc): %v", err)
	}
	if k, ok := eccPub.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("issue got %T, want a P-256 key", eccPub)
	}
	for _, alg := range []tpm.EKAlg{tpm.EKAuto, tpm.EKECC} {
		ek, err := tp.EK(alg)
		if err != nil {
			t.Fatalf("EK(%q) after provisioning ECC: %v", alg, err)
		}
		if ek.Alg != tpm.EKECC || !bytes.Equal(ek.CertDER, eccDER) || !samePublic(ek.Public, eccPub) {
			t.Errorf("EK(%q) = %s with %d-byte certificate, want the provisioned ECC EK and certificate", alg, ek.Alg, len(ek.CertDER))
		}
	}
	ek, err := tp.EK(tpm.EKRSA)
	if err != nil {
		t.Fatalf("EK(rsa) after provisioning ECC: %v", err)
	}
	if ek.CertDER != nil || !samePublic(ek.Public, rsaBefore.Public) {
		t.Errorf("EK(rsa) changed after provisioning ECC")
	}

	// The ECC EK activates a credential made by go-attestation's server
	// side (ECDH seed), for ECDSA and RSA AKs.
	eccEK, err := tp.EK(tpm.EKECC)
	if err != nil {
		t.Fatal(err)
	}
	for _, akAlg := range []tpm.AKAlg{tpm.AKECDSA, tpm.AKRSA} {
		activate(t, tp, eccEK, akAlg)
	}

	// Then RSA: both are visible, and EK("") picks RSA, the EK
	// spire-tpm-plugin uses (the same agent ID after a migration).
	var rsaDER []byte
	var rsaPub crypto.PublicKey
	if err := ProvisionEKCertificate(tp, tpm.EKRSA, issuer(t, ca, &rsaDER, &rsaPub)); err != nil {
		t.Fatalf("ProvisionEKCertificate(rsa): %v", err)
	}
	if !samePublic(rsaPub, rsaBefore.Public) {
		t.Error("the RSA EK provisioned is not the one EK(rsa) recreated from the default template")
	}
	for alg, want := range map[tpm.EKAlg][]byte{tpm.EKAuto: rsaDER, tpm.EKECC: eccDER, tpm.EKRSA: rsaDER} {
		ek, err := tp.EK(alg)
		if err != nil {
			t.Fatalf("EK(%q) after provisioning both: %v", alg, err)
		}
		if !bytes.Equal(ek.CertDER, want) {
			t.Errorf("EK(%q) = %s, not the provisioned certificate", alg, ek.Alg)
		}
	}
	eks, err := attestEKCertificates(tp)
	if err != nil || len(eks) != 2 {
		t.Errorf("go-attestation EKCertificates() = %d EKs, %v; want RSA and ECC", len(eks), err)
	}
	rsaEK, err := tp.EK(tpm.EKRSA)
	if err != nil {
		t.Fatal(err)
	}
	activate(t, tp, rsaEK, tpm.AKECDSA)

	// Refusals change nothing.
	for _, alg := range []tpm.EKAlg{tpm.EKRSA, tpm.EKECC} {
		called := false
		err := ProvisionEKCertificate(tp, alg, func(crypto.PublicKey) ([]byte, error) { called = true; return nil, nil })
		if !errors.Is(err, ErrEKCertExists) || called {
			t.Errorf("provisioning %s twice = %v (issue called: %v), want ErrEKCertExists before issuing", alg, err, called)
		}
	}
	if err := ProvisionEKCertificate(tp, tpm.EKAuto, issuer(t, ca, new([]byte), new(crypto.PublicKey))); !errors.Is(err, tpm.ErrBadAlgorithm) {
		t.Errorf("provisioning alg \"\" = %v, want tpm.ErrBadAlgorithm", err)
	}
	if h := loadedHandles(t, tp); len(h) != 0 {
		t.Errorf("handles left loaded: %v", h)
	}
}

func TestSimulatorProvisionEKCertificateRefusals(t *testing.T) {
	tp := openSim(t)
	ca, err := testca.New("provisioning test root")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testca.New("a key that is not the EK")
	if err != nil {
		t.Fatal(err)
	}
	good, err := ca.IssueEK(other.Key.Public(), "id:1", "id:1", "id:1")
	if err != nil {
		t.Fatal(err)
	}
	for name, issue := range map[string]func(crypto.PublicKey) ([]byte, error){
		"issuer fails":      func(crypto.PublicKey) ([]byte, error) { return nil, errors.New("CA offline") },
		"another key":       func(crypto.PublicKey) ([]byte, error) { return good, nil },
		"not a certificate": func(crypto.PublicKey) ([]byte, error) { return []byte{0x30, 0x03, 1, 2, 3}, nil },
		"trailing bytes": func(p crypto.PublicKey) ([]byte, error) {
			d, err := ca.IssueEK(p, "id:1", "id:1", "id:1")
			return append(d, 0xff), err
		},
		"larger than bound": func(crypto.PublicKey) ([]byte, error) { return make([]byte, tpm.MaxEKCert+1), nil },
		"empty certificate": func(crypto.PublicKey) ([]byte, error) { return nil, nil },
	} {
		for _, alg := range []tpm.EKAlg{tpm.EKRSA, tpm.EKECC, tpm.EKP384, tpm.EKRSA3072} {
			if err := ProvisionEKCertificate(tp, alg, issue); err == nil {
				t.Errorf("%s, %s: provisioned", name, alg)
			}
		}
	}
	for _, idx := range []uint32{tpm.EKCertIndex(tpm.EKRSA), tpm.EKCertIndex(tpm.EKECC), tpm.EKCertIndex(tpm.EKP384), tpm.EKCertIndex(tpm.EKRSA3072)} {
		if err := tp.WithChannel(func(ch io.ReadWriter) error {
			_, err := legacy.NVReadPublic(ch, tpmutil.Handle(idx))
			return err
		}); err == nil {
			t.Errorf("NV index 0x%08x defined after refusals", idx)
		}
	}
	if ek, err := tp.EK(""); err != nil || ek.Alg != tpm.EKRSA || ek.CertDER != nil {
		t.Errorf("EK(\"\") after refusals = %v, %v; want the RSA EK without certificate", ek, err)
	}
	if h := loadedHandles(t, tp); len(h) != 0 {
		t.Errorf("handles left loaded: %v", h)
	}
}

// activate makes a credential for (ek, a new AK) with go-attestation's
// credential code and checks the TPM activates it.
func activate(t *testing.T, tp *tpm.TPM, ek *tpm.EK, akAlg tpm.AKAlg) {
	t.Helper()
	ak, err := tp.NewAK(akAlg)
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close(tp)
	// go-tpm's legacy credactivation: what go-attestation's
	// ActivationParameters.Generate runs after its checks.
	pub, err := legacy.DecodePublic(ak.Params().Public)
	if err != nil {
		t.Fatal(err)
	}
	name, err := pub.Name()
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	credBlob, encSecret, err := credactivation.Generate(name.Digest, ek.Public, 16, secret)
	if err != nil {
		t.Fatalf("credactivation.Generate for the %s EK: %v", ek.Alg, err)
	}
	cred := attest.EncryptedCredential{Credential: credBlob, Secret: encSecret}
	got, err := tp.Activate(ak, ek, cred.Credential, cred.Secret)
	if err != nil {
		t.Fatalf("Activate with the %s EK and a %s AK: %v", ek.Alg, akAlg, err)
	}
	if !bytes.Equal(got, secret) {
		t.Errorf("Activate with the %s EK and a %s AK: wrong secret", ek.Alg, akAlg)
	}
	if _, ok := ek.Public.(*rsa.PublicKey); ok == (ek.Alg == tpm.EKECC) {
		t.Errorf("EK %s has a %T key", ek.Alg, ek.Public)
	}
}
