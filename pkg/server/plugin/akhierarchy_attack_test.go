package plugin_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/common/wire"
)

// TestAKHierarchyAttack: root on a node wants its quotes' resetCount and
// restartCount to lie, to pass a rolled-back or cloned TPM off as one that
// moved forward. The TPM obfuscates them for an AK outside the endorsement
// hierarchy with an offset of the AK's own, so root plants an AK made under
// an owner-hierarchy SRK in the agent's data_dir (trying AKs until the
// offset lifts the counters past the server's) and forges its creation data
// to name an endorsement-hierarchy parent, so that neither the agent nor a
// reading of the creation data notices. The real agent then attests with
// it against the real server plugin over gRPC: refused (ak_hierarchy),
// because the qualified name the TPM signed into every quote is not the one
// that parent gives.
//
// The same AK blob without the forgery is what tpmid before 2026-11-25
// kept on machines with systemd's SRK: the agent replaces it with a new AK
// and is admitted.
func TestAKHierarchyAttack(t *testing.T) {
	// Any well-formed SHA-256 Name: the forgery claims it is the parent.
	claimed := append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{0x5a}, 32)...)
	for _, tc := range []struct {
		name    string
		forge   []byte
		refused bool
	}{
		{"legacy owner-hierarchy AK: replaced by the agent", nil, false},
		{"owner-hierarchy AK with forged creation data", claimed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testmachine.New(t)
			if _, err := tpmtest.ProvisionOwnerSRK(m.TPM, false); err != nil {
				t.Fatal(err)
			}
			planted, err := tpmtest.LegacyOwnerAKBlob(m.TPM, tc.forge)
			if err != nil {
				t.Fatal(err)
			}
			h := newHostile(t, m, "")
			h.cfg.DataDir = t.TempDir()
			if err := os.WriteFile(filepath.Join(h.cfg.DataDir, "ak-ecdsa.blob"), planted, 0o600); err != nil {
				t.Fatal(err)
			}
			a := h.open(t)
			hello, err := wire.DecodeHello(a.hello, 0)
			if err != nil {
				t.Fatal(err)
			}
			var blob struct{ Public []byte }
			if err := json.Unmarshal(planted, &blob); err != nil {
				t.Fatal(err)
			}
			if usesPlanted := bytes.Equal(hello.AK.Public, blob.Public); usesPlanted != tc.refused {
				t.Fatalf("the agent presents the planted AK: %v, want %v", usesPlanted, tc.refused)
			}
			attrs, err := a.verdict(t, a.evidence(t, a.challenge(t)))
			if !tc.refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if attrs.SpiffeId != "spiffe://example.org/spire/agent/tpm/"+m.EKHash {
					t.Errorf("agent ID %s", attrs.SpiffeId)
				}
				return
			}
			wantRefusal(t, err, codes.PermissionDenied, "(ak_hierarchy)", "obfuscated")
			h.log.wantLine(t, "ak_hierarchy")
		})
	}
}
