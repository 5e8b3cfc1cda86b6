package agent_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/tpmid/tpmid/internal/testakca"
	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/server/session"
)

// relay runs one attestation through Next on both sides, as the plugin
// shells do, and returns the agent's TPM commands by code.
func relay(t *testing.T, m *testmachine.Machine, cfg *session.Config, acfg agent.Config) (fast bool, counts map[uint32]uint64) {
	t.Helper()
	before := m.TPM.CommandCounts()
	as, msg, err := agent.BeginWith(m.TPM, acfg)
	if err != nil {
		t.Fatalf("agent begin: %v", err)
	}
	s := session.New(cfg)
	for round := 0; ; round++ {
		reply, res, err := s.Next(context.Background(), msg)
		if err != nil {
			t.Fatalf("server round %d: %v", round, err)
		}
		if res != nil {
			break
		}
		if msg, err = as.Next(reply); err != nil {
			t.Fatalf("agent round %d: %v", round, err)
		}
	}
	fast = as.FastPath()
	if err := as.Close(); err != nil {
		t.Fatal(err)
	}
	counts = m.TPM.CommandCounts()
	for k, v := range before {
		if counts[k] -= v; counts[k] == 0 {
			delete(counts, k)
		}
	}
	return fast, counts
}

// TPM command codes (TPM 2.0 Part 2, TPM_CC).
var ccNames = map[uint32]string{
	0x120: "EvictControl", 0x131: "CreatePrimary", 0x147: "ActivateCredential", 0x14A: "CertifyCreation",
	0x14E: "NV_Read", 0x151: "PolicySecret", 0x153: "Create", 0x157: "Load", 0x158: "Quote",
	0x165: "FlushContext", 0x169: "NV_ReadPublic", 0x171: "PolicyOR", 0x173: "ReadPublic",
	0x176: "StartAuthSession", 0x17A: "GetCapability", 0x17E: "PCR_Read",
}

func render(c map[uint32]uint64) string {
	var out string
	var total uint64
	for _, k := range slices.Sorted(maps.Keys(c)) {
		out += fmt.Sprintf("%s:%d ", ccNames[k], c[k])
		total += c[k]
	}
	return fmt.Sprintf("%d commands: %s", total, out)
}

// TestAgentCommandCounts pins the agent's TPM commands, by command code,
// for the three kinds of attestation (issue 11), with the RSA-2048 EK
// certificate in NV and the EK persisted, one sha256 bank (SRK already
// persisted by an earlier AK):
//
//   - first attestation with a fresh AK: EK discovery (2 GetCapability,
//     NV_ReadPublic, NV_Read, ReadPublic), AK creation (ReadPublic of the
//     SRK, Create, Load; no TPM2_CertifyCreation since 2026-11-26),
//     activation (StartAuthSession,
//     PolicySecret, ActivateCredential; the session flushes itself), Quote,
//     one PCR_Read, AK flush;
//   - first attestation with the AK kept in data_dir (no AK certificate):
//     the kept EK checked by one ReadPublic, Load (the blob names the SRK),
//     activation, Quote, PCR_Read, flush: at most 12 (issue 11), 8 here;
//   - the fast path (kept AK and AK certificate): Load, Quote, PCR_Read,
//     flush, and no EK command: at most 6, 4 here.
//
// When another program's SRK is in the owner hierarchy at 0x81000001
// (systemd-tpm2-setup), every AK load or creation adds TPM2_CreatePrimary
// of tpmid's transient SRK and its TPM2_FlushContext: 10 and 6.
func TestAgentCommandCounts(t *testing.T) {
	type step struct {
		want map[uint32]uint64
		max  uint64
	}
	for _, tc := range []struct {
		name               string
		ownerSRK           bool
		fresh, kept, fastP step
	}{
		{"tpmid's SRK", false,
			step{map[uint32]uint64{0x17A: 2, 0x169: 1, 0x14E: 1, 0x173: 2, 0x153: 1, 0x157: 1,
				0x176: 1, 0x151: 1, 0x147: 1, 0x158: 1, 0x17E: 1, 0x165: 1}, 0},
			step{map[uint32]uint64{0x173: 1, 0x157: 1, 0x176: 1, 0x151: 1, 0x147: 1, 0x158: 1, 0x17E: 1, 0x165: 1}, 12},
			step{map[uint32]uint64{0x157: 1, 0x158: 1, 0x17E: 1, 0x165: 1}, 6}},
		{"owner SRK at 0x81000001 (systemd-tpm2-setup)", true,
			step{map[uint32]uint64{0x17A: 2, 0x169: 1, 0x14E: 1, 0x173: 2, 0x131: 1, 0x153: 1, 0x157: 1,
				0x176: 1, 0x151: 1, 0x147: 1, 0x158: 1, 0x17E: 1, 0x165: 2}, 0},
			step{map[uint32]uint64{0x173: 1, 0x131: 1, 0x157: 1, 0x176: 1, 0x151: 1, 0x147: 1, 0x158: 1, 0x17E: 1, 0x165: 2}, 12},
			step{map[uint32]uint64{0x131: 1, 0x157: 1, 0x158: 1, 0x17E: 1, 0x165: 2}, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testmachine.NewWith(t, testmachine.Options{EK: tpm.EKRSA})
			if tc.ownerSRK {
				if _, err := tpmtest.ProvisionOwnerSRK(m.TPM, false); err != nil {
					t.Fatal(err)
				}
			}
			// Make the SRK first, as any earlier attestation on the machine has.
			if ak, err := m.TPM.NewAK(tpm.AKP256); err != nil {
				t.Fatal(err)
			} else {
				ak.Close(m.TPM)
			}
			full := serverConfig(t, m)
			withCA := serverConfig(t, m)
			withCA.Issuer = testakca.New(t, "ak ca")
			acfg := agent.Config{DataDir: t.TempDir(), Hostname: "node-1"}

			for _, st := range []struct {
				name string
				cfg  *session.Config
				fast bool
				step
			}{
				{"first attestation, fresh AK", full, false, tc.fresh},
				{"first attestation, kept AK", full, false, tc.kept},
				{"kept AK, the CA issues its certificate", withCA, false, step{nil, 12}},
				{"fast path", withCA, true, tc.fastP},
			} {
				fast, got := relay(t, m, st.cfg, acfg)
				t.Logf("%s: %s", st.name, render(got))
				if fast != st.fast {
					t.Errorf("%s: fast path %v, want %v", st.name, fast, st.fast)
				}
				if st.want != nil && !maps.Equal(got, st.want) {
					t.Errorf("%s: %s, want %s", st.name, render(got), render(st.want))
				}
				var total uint64
				for _, v := range got {
					total += v
				}
				if st.max != 0 && total > st.max {
					t.Errorf("%s: %d TPM commands, want at most %d", st.name, total, st.max)
				}
			}
			if h, err := m.TPM.LoadedHandles(); err != nil || len(h) != 0 {
				t.Errorf("handles left loaded: %v %v", h, err)
			}
		})
	}
}
