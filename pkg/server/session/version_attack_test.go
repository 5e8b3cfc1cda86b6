package session_test

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
)

// TestVersionConfusion: a session speaks its hello's version from start to
// end. The attacker (root on the node) answers a version 1 session with
// version 2 evidence or the reverse, everything else genuine: the quotes
// are the TPM's and bound to this hello, the activation proof is right.
// The bindings do not cover the evidence's encoding, so only the session's
// version check refuses it; the same answers in the session's own version
// are admitted, which shows nothing else refuses them.
//
// To hold the credential secret, the agent's EK is a software key admitted
// by the allowlist (softtpm answers TPM2_MakeCredential); the AK and the
// quotes are the simulator's.
func TestVersionConfusion(t *testing.T) {
	f := newFixture(t)
	ekKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := f.policy(t, appraise.EKPolicyAllowlist, "", ekHashOf(t, &ekKey.PublicKey))
	for _, tc := range []struct{ hello, evidence int }{
		{wire.Version1, wire.Version1},
		{wire.Version2, wire.Version2},
		{wire.Version1, wire.Version2},
		{wire.Version2, wire.Version1},
	} {
		t.Run(fmt.Sprintf("hello=v%d/evidence=v%d", tc.hello, tc.evidence), func(t *testing.T) {
			err := versionedAttestation(t, f, p, ekKey, tc.hello, tc.evidence)
			if tc.hello == tc.evidence {
				if err != nil {
					t.Fatalf("genuine version %d attestation refused: %v", tc.hello, err)
				}
				return
			}
			if err == nil {
				t.Fatal("admitted evidence of another version than the session's")
			}
			want := fmt.Sprintf("in a version %d session", tc.hello)
			if !errors.Is(err, wire.ErrVersion) || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want %v saying %q", err, wire.ErrVersion, want)
			}
		})
	}
}

// versionedAttestation runs one attestation whose hello says helloVersion
// and whose evidence is encoded as evidenceVersion.
func versionedAttestation(t *testing.T, f *fixture, p *session.Config, ekKey *rsa.PrivateKey, helloVersion, evidenceVersion int) error {
	t.Helper()
	out := softwareEKAgentVersions(t, f, p, softwareEK{key: ekKey}, helloVersion, evidenceVersion)
	if !out.challenged {
		t.Fatalf("hello refused: %v", out.err)
	}
	return out.err
}
