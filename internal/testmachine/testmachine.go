// Package testmachine makes machines for tests: a TPM (the in-process
// reference simulator, or swtpm), a measured boot whose event log explains
// PCRs 0-7, an EK certificate from a CA, and a second CA that does not issue
// it. Only one simulator runs per process: tests using it must not run in
// parallel.
package testmachine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// Machine is one simulated machine.
type Machine struct {
	TPM        *tpm.TPM // nil for swtpm machines: open Device instead
	Device     string   // the tpm_device setting that reaches this TPM
	EKHash     string
	EKCertPath string // the EK certificate, DER
	TrustDir   string // an ek_ca_bundle that trusts the EK's CA
	OtherDir   string // an ek_ca_bundle that trusts another CA only
	LogPath    string // the event log the TPM's config reads
	OtherLog   []byte // a log of another boot: it does not replay here
}

// New boots a machine; everything is cleaned up with the test.
func New(t testing.TB) *Machine {
	t.Helper()
	dir := t.TempDir()
	m := &Machine{
		LogPath:    filepath.Join(dir, "binary_bios_measurements"),
		EKCertPath: filepath.Join(dir, "ek.der"),
		TrustDir:   filepath.Join(dir, "trusted"),
		OtherDir:   filepath.Join(dir, "other"),
	}
	tp, err := tpm.Open(tpm.Config{Device: "simulator", EventLogPath: m.LogPath})
	if err != nil {
		t.Fatalf("open simulator: %v", err)
	}
	t.Cleanup(func() { tp.Close() })
	m.TPM, m.Device = tp, "simulator"

	m.OtherLog = Boot(t, tp, m.LogPath)

	ek, err := tp.EK("")
	if err != nil {
		t.Fatalf("EK: %v", err)
	}
	if m.EKHash, err = verify.EKHash(ek.Public); err != nil {
		t.Fatal(err)
	}
	ca, err := testca.New("tpmid test EK root")
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := testca.New("someone else's EK root")
	if err != nil {
		t.Fatal(err)
	}
	certDER, err := ca.IssueEK(ek.Public, "id:53494D55", "id:00000001", "id:00020000")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		os.WriteFile(m.EKCertPath, certDER, 0o600),
		os.MkdirAll(m.TrustDir, 0o700),
		os.MkdirAll(m.OtherDir, 0o700),
		ca.WritePEM(filepath.Join(m.TrustDir, "root.pem")),
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
		if err := tp.Extend(int(pcr), digests); err != nil {
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
