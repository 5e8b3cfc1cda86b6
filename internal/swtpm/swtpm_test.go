package swtpm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-attestation/attest"

	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

func need(t testing.TB) {
	t.Helper()
	if err := swtpm.Available(); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

func start(t testing.TB, m *swtpm.Manufactured, unix bool) *swtpm.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	startFn := swtpm.Start
	if unix {
		startFn = swtpm.StartUnix
	}
	inst, err := startFn(ctx, m.StateDir)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { inst.Stop() })
	return inst
}

func readPEM(t testing.TB, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// chains sanity-checks an EK certificate against a bundle directory, after
// accepting the TCG critical subjectAltName (2.5.29.17) as handled.
func chains(t testing.TB, certDER []byte, bundleDir string) error {
	t.Helper()
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return err
	}
	san := asn1.ObjectIdentifier{2, 5, 29, 17}
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions, san.Equal)
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	entries, err := os.ReadDir(bundleDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		c := readPEM(t, filepath.Join(bundleDir, e.Name()))
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			roots.AddCert(c)
		} else {
			inter.AddCert(c)
		}
	}
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func TestAvailable(t *testing.T) {
	need(t)
	if err := swtpm.Available(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	if err := swtpm.Available(); !errors.Is(err, swtpm.ErrNotInstalled) || !strings.Contains(err.Error(), "apt-get install") {
		t.Errorf("Available() with an empty PATH = %v", err)
	}
}

func TestSetupBadBank(t *testing.T) {
	need(t)
	if _, err := swtpm.Setup(t.TempDir(), swtpm.Options{Banks: []string{"md5"}}); err == nil {
		t.Error("Setup with bank md5 succeeded")
	}
}

// TestEndToEnd manufactures TPMs that share a CA and one that does not,
// opens them through pkg/common/tpm over TCP and checks EK certificates,
// AK activation, quotes and handle hygiene.
func TestEndToEnd(t *testing.T) {
	need(t)
	shared := t.TempDir()
	other := t.TempDir()
	otherM, err := swtpm.Setup(filepath.Join(t.TempDir(), "other"), swtpm.Options{CADir: other})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opt  swtpm.Options
	}{
		{"rsa-srk", swtpm.Options{CADir: shared}},
		{"ecc-srk", swtpm.Options{CADir: shared, ECC: true, Banks: []string{"sha256", "sha384"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := swtpm.Setup(filepath.Join(t.TempDir(), "state"), tc.opt)
			if err != nil {
				t.Fatalf("Setup: %v", err)
			}
			entries, _ := os.ReadDir(m.BundleDir)
			if len(entries) != 2 {
				t.Errorf("bundle dir has %d entries, want root and intermediate only", len(entries))
			}
			inst := start(t, m, false)
			if !strings.HasPrefix(inst.Addr(), "tcp://127.0.0.1:") {
				t.Errorf("Addr() = %q", inst.Addr())
			}
			tp, err := tpm.Open(tpm.Config{Device: inst.Addr()})
			if err != nil {
				t.Fatalf("Open(%s): %v", inst.Addr(), err)
			}
			defer tp.Close()

			banks, err := tp.Banks()
			if err != nil {
				t.Fatal(err)
			}
			var want []pcrs.Alg
			for _, b := range tc.opt.Banks {
				a, _ := pcrs.ParseAlg(b)
				want = append(want, a)
			}
			if len(want) == 0 {
				want = []pcrs.Alg{pcrs.SHA1, pcrs.SHA256}
			}
			slices.Sort(want)
			if !slices.Equal(banks, want) {
				t.Errorf("Banks() = %v, want %v", banks, want)
			}

			ek, err := tp.EK("")
			if err != nil {
				t.Fatalf("EK: %v", err)
			}
			if ek.Alg != tpm.EKRSA || len(ek.CertDER) == 0 {
				t.Fatalf("EK(auto) = %s with %d-byte certificate; want RSA with certificate", ek.Alg, len(ek.CertDER))
			}
			if err := chains(t, ek.CertDER, m.BundleDir); err != nil {
				t.Errorf("EK certificate does not chain to the bundle: %v", err)
			}
			if err := chains(t, ek.CertDER, otherM.BundleDir); err == nil {
				t.Error("EK certificate chains to another CA's bundle")
			}
			cert, _ := x509.ParseCertificate(ek.CertDER)
			if der, _ := x509.MarshalPKIXPublicKey(cert.PublicKey); !bytes.Equal(der, ek.PublicDER) {
				t.Error("EK PublicDER differs from the certificate's key")
			}
			// swtpm 0.7 has no P-256 EK certificate, but a P-384 one.
			if _, err := tp.EK("ecc"); !errors.Is(err, tpm.ErrNoEK) || !strings.Contains(err.Error(), "P-384") {
				t.Errorf("EK(ecc) on swtpm = %v, want ErrNoEK naming the P-384 EK it has", err)
			}
			if ek, err := tp.EK(tpm.EKP384); err != nil || len(ek.CertDER) == 0 {
				t.Errorf("EK(p384) on swtpm = %v, %v; want swtpm's P-384 EK with its certificate", ek, err)
			}

			ak, err := tp.NewAK(tpm.AKECDSA)
			if err != nil {
				t.Fatal(err)
			}
			defer ak.Close(tp)
			akPub, err := verify.ParseAKPublic(ak.Params().Public)
			if err != nil {
				t.Fatal(err)
			}
			secret := []byte("0123456789abcdef0123456789abcdef")
			credBlob, encSecret, err := verify.MakeCredential(rand.Reader, ek.Public, akPub.Name, secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tp.Activate(ak, ek, credBlob, encSecret)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("Activate = %x, %v", got, err)
			}
			extra := []byte("0123456789abcdef0123456789abcdef")
			list := []int{0, 1, 2, 3, 4, 5, 6, 7}
			q, sig, err := tp.Quote(ak, extra, pcrs.SHA256, list)
			if err != nil {
				t.Fatal(err)
			}
			vals, err := tp.ReadPCRs(pcrs.SHA256, list)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := attest.ParseAKPublic(ak.Params().Public)
			if err != nil {
				t.Fatal(err)
			}
			var ps []attest.PCR
			for i, v := range vals {
				ps = append(ps, attest.PCR{Index: i, Digest: v, DigestAlg: pub.Hash})
			}
			if err := pub.Verify(attest.Quote{Quote: q, Signature: sig}, ps, extra); err != nil {
				t.Errorf("quote does not verify: %v", err)
			}
			ak.Close(tp)
			if h, err := tp.LoadedHandles(); err != nil || len(h) != 0 {
				t.Errorf("handles left loaded in swtpm: %x, %v", h, err)
			}
		})
	}
}

func TestStartUnix(t *testing.T) {
	need(t)
	m, err := swtpm.Setup(t.TempDir(), swtpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inst := start(t, m, true)
	if !strings.HasPrefix(inst.Addr(), "unix:///") {
		t.Fatalf("Addr() = %q", inst.Addr())
	}
	tp, err := tpm.Open(tpm.Config{Device: inst.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	vals, err := tp.ReadPCRs(pcrs.SHA256, []int{0, 23})
	if err != nil || len(vals) != 2 {
		t.Fatalf("ReadPCRs over unix socket = %v, %v", vals, err)
	}
	d := sha256.Sum256([]byte("boot"))
	if err := tpmtest.Extend(tp, 0, map[pcrs.Alg][]byte{pcrs.SHA256: d[:]}); err != nil {
		t.Fatalf("Extend on swtpm: %v", err)
	}
	after, err := tp.ReadPCRs(pcrs.SHA256, []int{0})
	if want := sha256.Sum256(append(vals[0], d[:]...)); err != nil || !bytes.Equal(after[0], want[:]) {
		t.Errorf("PCR 0 after Extend = %x, %v; want %x", after[0], err, want)
	}
	tp.Close()
	if err := inst.Stop(); err != nil {
		t.Error(err)
	}
	if err := inst.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := tpm.Open(tpm.Config{Device: inst.Addr()}); err == nil {
		t.Error("Open after Stop succeeded")
	}
}

func TestStartMissingState(t *testing.T) {
	need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	inst, err := swtpm.Start(ctx, filepath.Join(t.TempDir(), "does-not-exist"))
	if err == nil {
		inst.Stop()
		t.Fatal("Start with a missing state directory succeeded")
	}
}

// BenchmarkAttestationSequence measures the agent's TPM work for one
// first-time attestation on swtpm: Open, EK (auto), NewAK(ecdsa),
// Activate, Quote(sha256, PCRs 0-7), ReadPCRs, AK flush, Close. The
// server's credential generation is excluded from the timing.
func BenchmarkAttestationSequence(b *testing.B) {
	need(b)
	m, err := swtpm.Setup(b.TempDir(), swtpm.Options{})
	if err != nil {
		b.Fatal(err)
	}
	inst := start(b, m, false)
	list := []int{0, 1, 2, 3, 4, 5, 6, 7}
	extra := make([]byte, 32)
	run := func() uint64 {
		tp, err := tpm.Open(tpm.Config{Device: inst.Addr()})
		if err != nil {
			b.Fatal(err)
		}
		defer tp.Close()
		ek, err := tp.EK("")
		if err != nil {
			b.Fatal(err)
		}
		ak, err := tp.NewAK(tpm.AKECDSA)
		if err != nil {
			b.Fatal(err)
		}
		defer ak.Close(tp)
		b.StopTimer()
		akPub, err := verify.ParseAKPublic(ak.Params().Public)
		if err != nil {
			b.Fatal(err)
		}
		credBlob, encSecret, err := verify.MakeCredential(rand.Reader, ek.Public, akPub.Name, make([]byte, 32))
		b.StartTimer()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tp.Activate(ak, ek, credBlob, encSecret); err != nil {
			b.Fatal(err)
		}
		if _, _, err := tp.Quote(ak, extra, pcrs.SHA256, list); err != nil {
			b.Fatal(err)
		}
		if _, err := tp.ReadPCRs(pcrs.SHA256, list); err != nil {
			b.Fatal(err)
		}
		return tp.Commands()
	}
	run() // warm-up: creates and persists the SRK once
	b.ResetTimer()
	var cmds uint64
	for i := 0; i < b.N; i++ {
		cmds = run()
	}
	b.ReportMetric(float64(cmds), "tpm-cmds/op")
}
