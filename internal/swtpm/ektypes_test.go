package swtpm_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// TestSwtpmEKTypes: the EKs swtpm 0.7 manufactures with certificates, the
// RSA-2048 (L-1), the P-384 (H-3, --ecc) and the RSA-3072 (H-6,
// --rsa-keysize 3072) EK, each with every AK type: the EK is found at its
// persistent handle with the certificate's key, the server side
// (verify.ParseAKPublic, verify.MakeCredential) accepts the AK and
// makes the credential, the TPM activates it with the EK's policy
// session, and quotes verify with the AK's own hash (SHA-384 for P-384).
// A credential made for another EK of the same TPM fails in the TPM.
// It logs the agent-side TPM commands and time per pair.
func TestSwtpmEKTypes(t *testing.T) {
	need(t)
	var report []string
	for _, tc := range []struct {
		ek  tpm.EKAlg
		opt swtpm.Options
	}{
		{tpm.EKRSA2048, swtpm.Options{}},
		{tpm.EKP384, swtpm.Options{ECC: true}},
		{tpm.EKRSA3072, swtpm.Options{RSAKeySize: 3072}},
	} {
		t.Run("ek="+string(tc.ek), func(t *testing.T) {
			tc.opt.CADir = t.TempDir()
			m, err := swtpm.Setup(filepath.Join(t.TempDir(), "state"), tc.opt)
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			inst := start(t, m, false)
			tp, err := tpm.Open(tpm.Config{Device: inst.Addr()})
			if err != nil {
				t.Fatal(err)
			}
			defer tp.Close()
			ek, err := tp.EK(tc.ek)
			if err != nil {
				t.Fatalf("EK(%s): %v", tc.ek, err)
			}
			if len(ek.CertDER) == 0 {
				t.Fatalf("EK(%s) has no certificate", tc.ek)
			}
			cert, err := x509.ParseCertificate(ek.CertDER)
			if err != nil {
				t.Fatal(err)
			}
			if der, _ := x509.MarshalPKIXPublicKey(cert.PublicKey); !bytes.Equal(der, ek.PublicDER) {
				t.Fatal("EK key differs from its certificate's")
			}
			if err := chains(t, ek.CertDER, m.BundleDir); err != nil {
				t.Errorf("EK certificate does not chain: %v", err)
			}
			// The other EK of this TPM, for the wrong-EK case.
			other, err := tp.EK(map[tpm.EKAlg]tpm.EKAlg{tpm.EKRSA2048: tpm.EKP384, tpm.EKP384: tpm.EKRSA, tpm.EKRSA3072: tpm.EKP384}[tc.ek])
			if err != nil {
				t.Fatal(err)
			}
			for _, akAlg := range []tpm.AKAlg{tpm.AKP256, tpm.AKP384, tpm.AKRSA2048, tpm.AKRSA3072} {
				t.Run("ak="+string(akAlg), func(t *testing.T) {
					before := tp.Commands()
					start := time.Now()
					ak, err := tp.NewAK(akAlg)
					if err != nil {
						t.Fatalf("NewAK(%s): %v", akAlg, err)
					}
					defer ak.Close(tp)
					p := ak.Params()
					akPub, err := verify.ParseAKPublic(p.Public)
					if err != nil {
						t.Fatal(err)
					}
					if err := verify.CheckAKStrength(akPub); err != nil {
						t.Fatal(err)
					}
					secret := make([]byte, 32)
					rand.Read(secret)
					blob, enc, err := verify.MakeCredential(rand.Reader, ek.Public, akPub.Name, secret)
					if err != nil {
						t.Fatal(err)
					}
					got, err := tp.Activate(ak, ek, blob, enc)
					if err != nil || !bytes.Equal(got, secret) {
						t.Fatalf("Activate with the %s EK: %x, %v", ek.Template, got, err)
					}
					list := []int{0, 1, 2, 3, 4, 5, 6, 7}
					extra := make([]byte, 32)
					q, sig, err := tp.Quote(ak, extra, pcrs.SHA256, list)
					if err != nil {
						t.Fatal(err)
					}
					vals, err := tp.ReadPCRs(pcrs.SHA256, list)
					if err != nil {
						t.Fatal(err)
					}
					took := time.Since(start)
					n := tp.Commands() - before
					facts, err := verify.VerifyQuote(ak.Public(), verify.Quote{Attest: q, Signature: sig}, extra, pcrs.Values{pcrs.SHA256: vals})
					if err != nil {
						t.Fatalf("server refuses the %s AK's quote: %v", akAlg, err)
					}
					if want := map[tpm.AKAlg]pcrs.Alg{tpm.AKP384: pcrs.SHA384}[akAlg]; want != 0 && facts.SignatureHash != want {
						t.Errorf("quote signed with %s, want %s", facts.SignatureHash, want)
					}
					// Wrong EK: a credential for the TPM's other EK.
					blob, enc, err = verify.MakeCredential(rand.Reader, other.Public, akPub.Name, secret)
					if err != nil {
						t.Fatal(err)
					}
					if _, err := tp.Activate(ak, ek, blob, enc); err == nil {
						t.Error("a credential made for the other EK activated")
					}
					report = append(report, fmt.Sprintf("%-8s %-8s %2d commands %8s (EK read excluded)", tc.ek, akAlg, n, took.Round(time.Millisecond)))
				})
			}
			if h, err := tp.LoadedHandles(); err != nil || len(h) != 0 {
				t.Errorf("handles left loaded: %v %v", h, err)
			}
		})
	}
	t.Logf("swtpm, NewAK+Activate+Quote+ReadPCRs:\n%s", strings.Join(report, "\n"))
}
