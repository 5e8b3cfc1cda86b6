package swtpm_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tpmid/tpmid/internal/swtpm"
	"github.com/tpmid/tpmid/pkg/common/tpm"
)

func clockInfo(t *testing.T, inst *swtpm.Instance) swtpm.ClockInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ci, err := inst.ClockInfo(ctx)
	if err != nil {
		t.Fatalf("ClockInfo: %v", err)
	}
	return ci
}

func ekHash(t *testing.T, inst *swtpm.Instance) string {
	t.Helper()
	tp, err := tpm.Open(tpm.Config{Device: inst.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ek, err := tp.EK(tpm.EKAuto)
	if err != nil {
		t.Fatal(err)
	}
	return string(ek.PublicDER)
}

// A snapshot taken while swtpm is stopped brings back the TPM it was: the
// same EK, and the reboot counter of then (each start is a TPM Reset, so
// the restored TPM counts one more than the snapshot, and less than the
// TPM that went on booting).
func TestSnapshotRestore(t *testing.T) {
	need(t)
	m, err := swtpm.Setup(filepath.Join(t.TempDir(), "state"), swtpm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	inst := start(t, m, false)
	if inst.StateDir() != m.StateDir {
		t.Errorf("StateDir() = %s, want %s", inst.StateDir(), m.StateDir)
	}
	first := clockInfo(t, inst)
	ek := ekHash(t, inst)
	snap := filepath.Join(t.TempDir(), "snap")
	if err := swtpm.Snapshot(m.StateDir, snap); !errors.Is(err, swtpm.ErrRunning) {
		t.Errorf("Snapshot of a running swtpm: %v, want ErrRunning", err)
	}
	if err := inst.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := swtpm.Snapshot(m.StateDir, snap); err != nil {
		t.Fatal(err)
	}
	if err := swtpm.Snapshot(m.StateDir, snap); err == nil {
		t.Error("Snapshot into a non-empty directory succeeded")
	}
	// Boot twice more.
	var later swtpm.ClockInfo
	for range 2 {
		inst = start(t, m, false)
		later = clockInfo(t, inst)
		if err := inst.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	if later.ResetCount != first.ResetCount+2 {
		t.Fatalf("reset count %d after two more starts, want %d", later.ResetCount, first.ResetCount+2)
	}
	if err := swtpm.Restore(snap, m.StateDir); err != nil {
		t.Fatal(err)
	}
	inst = start(t, m, false)
	restored := clockInfo(t, inst)
	t.Logf("reset counts: first %d, later %d, restored %d", first.ResetCount, later.ResetCount, restored.ResetCount)
	if restored.ResetCount != first.ResetCount+1 || restored.ResetCount >= later.ResetCount {
		t.Errorf("restored reset count %d, want %d (the snapshot's, plus this start)", restored.ResetCount, first.ResetCount+1)
	}
	if ekHash(t, inst) != ek {
		t.Error("the restored TPM has another EK")
	}
	if err := swtpm.Restore(snap, m.StateDir); !errors.Is(err, swtpm.ErrRunning) {
		t.Errorf("Restore onto a running swtpm: %v, want ErrRunning", err)
	}
	if err := swtpm.Snapshot(filepath.Join(t.TempDir(), "empty"), filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("Snapshot of an empty directory succeeded")
	}
}
