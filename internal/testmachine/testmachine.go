// Package testmachine makes machines for tests: a TPM (the in-process
// reference simulator, or swtpm), a measured boot whose event log explains
// PCRs 0-7, an EK certificate from a CA, and a second CA that does not issue
// it. Only one simulator runs per process: tests using it must not run in
// parallel.
package testmachine

import (
	"context"
	"crypto"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// Machine is one simulated machine.
type Machine struct {
	TPM        *tpm.TPM // nil for swtpm machines: open Device instead
	Device     string   // the tpm_device setting that reaches this TPM
	EKAlg      tpm.EKAlg
	EKHash     string
	EKCertPath string     // the EK certificate, DER; empty when it is in NV
	EKCertDER  []byte     // the EK certificate
	CA         *testca.CA // the EK's CA; nil for swtpm machines
	TrustDir   string     // an ek_ca_bundle that trusts the EK's CA (CA)
	OtherDir   string     // an ek_ca_bundle that trusts another CA only
	LogPath    string     // the event log the TPM's config reads
	OtherLog   []byte     // a log of another boot: it does not replay here
}

// Options shape a simulated machine.
type Options struct {
	// EK "" keeps the simulator as it is (an RSA EK without certificate in
	// NV) and writes the RSA EK's certificate to EKCertPath, for the
	// agent's ek_certificate_path. Any other tpm.EKAlg (rsa, rsa3072,
	// rsa4096, ecc, p384, p521, ...) provisions that EK's certificate into
	// its TCG NV index instead
	// (tpmtest.ProvisionEKCertificate), as a manufacturer does; EKCertPath is
	// then empty and the agent finds the certificate itself.
	EK tpm.EKAlg
	// Boot measures the machine's boot; nil is Boot (separators only).
	// UEFIBoot gives PCR7 the Secure Boot policy records of a UEFI boot.
	Boot BootFunc
}

// BootFunc measures a boot into tp, writes its event log to logPath, and
// returns the log of another boot, which does not replay here.
type BootFunc func(t testing.TB, tp *tpm.TPM, logPath string) (otherLog []byte)

// New boots a machine whose EK certificate is in a file (EKCertPath);
// everything is cleaned up with the test.
func New(t testing.TB) *Machine {
	t.Helper()
	return NewWith(t, Options{})
}

// NewWith boots a simulated machine shaped by opt; everything is cleaned up
// with the test.
func NewWith(t testing.TB, opt Options) *Machine {
	t.Helper()
	dir := t.TempDir()
	m := &Machine{
		LogPath:  filepath.Join(dir, "binary_bios_measurements"),
		TrustDir: filepath.Join(dir, "trusted"),
		OtherDir: filepath.Join(dir, "other"),
	}
	tp, err := tpm.Open(tpm.Config{Device: "simulator", EventLogPath: m.LogPath})
	if err != nil {
		t.Fatalf("open simulator: %v", err)
	}
	t.Cleanup(func() { tp.Close() })
	m.TPM, m.Device = tp, "simulator"

	boot := opt.Boot
	if boot == nil {
		boot = Boot
	}
	m.OtherLog = boot(t, tp, m.LogPath)

	if m.CA, err = testca.New("tpmid test EK root"); err != nil {
		t.Fatal(err)
	}
	otherCA, err := testca.New("someone else's EK root")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(pub crypto.PublicKey) ([]byte, error) {
		return m.CA.IssueEK(pub, "id:53494D55", "id:00000001", "id:00020000")
	}
	var ek *tpm.EK
	switch opt.EK {
	case tpm.EKAuto:
		if ek, err = tp.EK(""); err != nil {
			t.Fatalf("EK: %v", err)
		}
		if m.EKCertDER, err = issue(ek.Public); err != nil {
			t.Fatal(err)
		}
		m.EKCertPath = filepath.Join(dir, "ek.der")
		if err := os.WriteFile(m.EKCertPath, m.EKCertDER, 0o600); err != nil {
			t.Fatal(err)
		}
	default:
		if !opt.EK.Valid() {
			t.Fatalf("testmachine: EK algorithm %q", opt.EK)
		}
		if err := tpmtest.ProvisionEKCertificate(tp, opt.EK, issue); err != nil {
			t.Fatalf("provisioning the %s EK certificate: %v", opt.EK, err)
		}
		if ek, err = tp.EK(opt.EK); err != nil {
			t.Fatalf("EK(%s): %v", opt.EK, err)
		}
		if ek.CertDER == nil {
			t.Fatalf("EK(%s) has no certificate after provisioning", opt.EK)
		}
		m.EKCertDER = ek.CertDER
	}
	m.EKAlg = ek.Alg
	if m.EKHash, err = verify.EKHash(ek.Public); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		os.MkdirAll(m.TrustDir, 0o700),
		os.MkdirAll(m.OtherDir, 0o700),
		m.CA.WritePEM(filepath.Join(m.TrustDir, "root.pem")),
		otherCA.WritePEM(filepath.Join(m.OtherDir, "root.pem")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// Boot measures a small boot into PCRs 0-7 of tp, writes the event log that
// explains it to logPath, and returns the log of another boot, which does
// not replay to these PCRs.
func Boot(t testing.TB, tp *tpm.TPM, logPath string) (otherLog []byte) {
	t.Helper()
	b, err := eventlog.NewBuilder(pcrs.SHA1, pcrs.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	other, err := eventlog.NewBuilder(pcrs.SHA1, pcrs.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	for pcr := uint32(0); pcr < 8; pcr++ {
		digests := b.Extend(pcr, eventlog.EvSeparator, []byte{0, 0, 0, 0})
		if err := tpmtest.Extend(tp, int(pcr), digests); err != nil {
			t.Fatalf("extend PCR %d: %v", pcr, err)
		}
		other.Extend(pcr, eventlog.EvSeparator, []byte{0xff, 0xff, 0xff, 0xff})
	}
	if err := errors.Join(b.Err(), other.Err()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPath, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return other.Bytes()
}

// UEFIBoot measures a UEFI boot as the PC Client firmware profile lays out
// PCR7 (PFP 3.3.4.8): the SecureBoot variable (1 when secureBoot), PK, KEK,
// db and dbx as EV_EFI_VARIABLE_DRIVER_CONFIG, then the separators of
// PCRs 0-7, then a db authority record as a boot loader's verification
// leaves it. What root can do after boot starts from here.
func UEFIBoot(secureBoot bool) BootFunc {
	return func(t testing.TB, tp *tpm.TPM, logPath string) []byte {
		t.Helper()
		b, err := eventlog.NewBuilder(pcrs.SHA1, pcrs.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		extend := func(pcr uint32, typ eventlog.EventType, data []byte) {
			if err := tpmtest.Extend(tp, int(pcr), b.Extend(pcr, typ, data)); err != nil {
				t.Fatalf("extend PCR %d: %v", pcr, err)
			}
		}
		sb := byte(0)
		if secureBoot {
			sb = 1
		}
		extend(7, eventlog.EvEFIVariableDriverConf, eventlog.EFIVariableData(eventlog.EFIGlobalVariable, "SecureBoot", []byte{sb}))
		extend(7, eventlog.EvEFIVariableDriverConf, eventlog.EFIVariableData(eventlog.EFIGlobalVariable, "PK", []byte("test PK")))
		extend(7, eventlog.EvEFIVariableDriverConf, eventlog.EFIVariableData(eventlog.EFIGlobalVariable, "KEK", []byte("test KEK")))
		extend(7, eventlog.EvEFIVariableDriverConf, eventlog.EFIVariableData(eventlog.EFIImageSecurityDBID, "db", []byte("test db")))
		extend(7, eventlog.EvEFIVariableDriverConf, eventlog.EFIVariableData(eventlog.EFIImageSecurityDBID, "dbx", []byte("test dbx")))
		for pcr := uint32(0); pcr < 8; pcr++ {
			extend(pcr, eventlog.EvSeparator, []byte{0, 0, 0, 0})
		}
		extend(7, eventlog.EvEFIVariableAuthority, eventlog.EFIVariableData(eventlog.EFIImageSecurityDBID, "db", []byte("test db cert")))
		if err := b.Err(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(logPath, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		other, _ := eventlog.NewBuilder(pcrs.SHA256)
		other.Extend(7, eventlog.EvSeparator, []byte{0xff, 0xff, 0xff, 0xff})
		return other.Bytes()
	}
}

// NewSwtpm manufactures a swtpm whose EK certificate (in NV, as on a real
// TPM) comes from a local CA, starts it and boots it. It skips the test when
// swtpm is not installed.
func NewSwtpm(t testing.TB, opt swtpm.Options) *Machine {
	t.Helper()
	if err := swtpm.Available(); err != nil {
		t.Skipf("swtpm is needed for this test: %v", err)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if opt.CADir == "" {
		opt.CADir = filepath.Join(dir, "ca")
	}
	man, err := swtpm.Setup(state, opt)
	if err != nil {
		t.Fatalf("swtpm setup: %v", err)
	}
	inst, err := swtpm.Start(context.Background(), state)
	if err != nil {
		t.Fatalf("swtpm start: %v", err)
	}
	t.Cleanup(func() { inst.Stop() })
	m := &Machine{
		Device:   inst.Addr(),
		LogPath:  filepath.Join(dir, "binary_bios_measurements"),
		TrustDir: man.BundleDir,
		OtherDir: filepath.Join(dir, "other"),
	}
	tp, err := tpm.Open(tpm.Config{Device: m.Device, EventLogPath: m.LogPath})
	if err != nil {
		t.Fatalf("open swtpm: %v", err)
	}
	defer tp.Close()
	m.OtherLog = Boot(t, tp, m.LogPath)
	ek, err := tp.EK("")
	if err != nil {
		t.Fatalf("EK: %v", err)
	}
	m.EKAlg, m.EKCertDER = ek.Alg, ek.CertDER
	if m.EKHash, err = verify.EKHash(ek.Public); err != nil {
		t.Fatal(err)
	}
	otherCA, err := testca.New("someone else's EK root")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(m.OtherDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := otherCA.WritePEM(filepath.Join(m.OtherDir, "root.pem")); err != nil {
		t.Fatal(err)
	}
	return m
}
