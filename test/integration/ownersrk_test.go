package integration

import (
	"bytes"
	"slices"
	"testing"

	"github.com/tpmid/tpmid/internal/demo"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/store"
)

// TestOwnerSRKMachine: a machine whose TPM already has an SRK in the owner
// hierarchy at 0x81000001, as systemd-tpm2-setup leaves on a modern Linux
// distribution. Every agent run has a fresh data_dir, hence a new AK, and
// the machine reboots between runs (resetCount goes up). Every run is
// admitted and the store keeps the TPM's true resetCount: AKs under that
// SRK would quote resetCount and restartCount obfuscated by an offset of
// their own (TPM 2.0 Part 1, 36.6), so a new AK looked like a rolled-back
// TPM about half the time and the stored counters were noise. The key at
// 0x81000001 is left as it was.
func TestOwnerSRKMachine(t *testing.T) {
	env, ctx := newEnv(t)
	a := env.newMachine(ctx, "node-a")
	var systemdSRK []byte
	if err := a.withTPM(func(tp *tpm.TPM) (err error) {
		systemdSRK, err = tpmtest.ProvisionOwnerSRK(tp, false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := env.startTOFUServer(ctx, a, demo.ServerOptions{})
	dsn := env.storeDSN("spire-server")
	name := env.hostname("node-a.example.org")

	var want []string
	for boot := range 3 {
		if boot > 0 {
			a.reboot(ctx)
		}
		clock := a.clock(ctx)
		env.mustAttest(ctx, srv, a, agentOpts{Hostname: name}).Agent.Stop()
		h := hostOf(t, ctx, dsn, a.ekHash)
		if h == nil || h.Counters == nil {
			t.Fatalf("boot %d: no host counters stored: %+v", boot, h)
		}
		if c := h.Counters; c.ResetCount != clock.ResetCount || c.RestartCount != clock.RestartCount {
			t.Fatalf("boot %d: stored reset count %d, restart count %d; the TPM's are %d, %d (obfuscated: the AK is outside the endorsement hierarchy)", boot, c.ResetCount, c.RestartCount, clock.ResetCount, clock.RestartCount)
		}
		want = append(want, store.OutcomeAdmitted)
	}
	if got := outcomes(attemptsOf(t, ctx, dsn, a.ekHash)); !slices.Equal(got, want) {
		t.Errorf("attempts %v, want %v", got, want)
	}
	if err := a.withTPM(func(tp *tpm.TPM) error {
		now, err := tpmtest.PersistentName(tp, tpmtest.OwnerSRKHandle)
		if err == nil && !bytes.Equal(now, systemdSRK) {
			t.Error("the agent replaced the SRK another program put at 0x81000001")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
