package swtpm_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/pkg/server/trustfiles"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// TestEKCertificatesMeetProfile: every EK certificate swtpm_localca makes
// (RSA 2048 and, with swtpm 0.7, ECC P-384, whether or not the storage key
// is ECC) is an EK certificate by the TCG profile tpmid enforces, without
// quirk, and verifies against the manufactured bundle.
func TestEKCertificatesMeetProfile(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		name string
		opt  swtpm.Options
	}{
		{"rsa-srk", swtpm.Options{}},
		{"ecc-srk", swtpm.Options{ECC: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opt.EKCertDir = filepath.Join(t.TempDir(), "ekcerts")
			m, err := swtpm.Setup(filepath.Join(t.TempDir(), "state"), tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			trust, err := trustfiles.LoadEKTrust(m.BundleDir)
			if err != nil {
				t.Fatal(err)
			}
			files, err := os.ReadDir(tc.opt.EKCertDir)
			if err != nil {
				t.Fatal(err)
			}
			if len(files) == 0 {
				t.Fatal("swtpm_setup wrote no EK certificate")
			}
			for _, f := range files {
				der, err := os.ReadFile(filepath.Join(tc.opt.EKCertDir, f.Name()))
				if err != nil {
					t.Fatal(err)
				}
				cert, err := verify.ParseEKCert(der)
				if err != nil {
					t.Fatalf("%s: %v", f.Name(), err)
				}
				p, err := verify.CheckEKProfile(cert)
				if err != nil {
					t.Errorf("%s: %v", f.Name(), err)
					continue
				}
				if p.Quirk != "" {
					t.Errorf("%s needed quirk %s", f.Name(), p.Quirk)
				}
				facts, err := verify.VerifyEKCert(cert, nil, trust, time.Now())
				if err != nil || facts.Manufacturer == "" {
					t.Errorf("%s: VerifyEKCert = %+v, %v", f.Name(), facts, err)
				}
				t.Logf("%s: %s key, key usage %v, EKU %v: meets the EK profile", f.Name(), cert.PublicKeyAlgorithm, cert.KeyUsage, cert.UnknownExtKeyUsage)
			}
		})
	}
}
