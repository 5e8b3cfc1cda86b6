package session_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tpmid/tpmid/internal/softtpm"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
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
	as, helloRaw, err := agent.BeginWith(f.TPM, f.cfg)
	if err != nil {
		t.Fatalf("agent begin: %v", err)
	}
	defer as.Close()
	var hello wire.Hello
	if err := json.Unmarshal(helloRaw, &hello); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&ekKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	hello.EK = wire.EK{Public: pub}
	hello.Version = helloVersion
	if helloRaw, err = wire.EncodeHello(&hello); err != nil {
		t.Fatal(err)
	}
	ss, challenge, err := startSession(p, helloRaw)
	if err != nil {
		t.Fatalf("hello refused: %v", err)
	}
	var ch wire.Challenge
	if err := json.Unmarshal(challenge, &ch); err != nil {
		t.Fatal(err)
	}
	if ch.Version != helloVersion {
		t.Fatalf("challenge version %d in a version %d session", ch.Version, helloVersion)
	}
	ak, err := verify.ParseAKPublic(hello.AK.Public)
	if err != nil {
		t.Fatal(err)
	}
	secret, err := softtpm.ActivateCredential(ekKey, ak.Name, ch.Credential.Blob, ch.Credential.Secret)
	if err != nil {
		t.Fatalf("software TPM2_ActivateCredential: %v", err)
	}
	ev, err := tpmtest.RespondWithoutCredential(as, ch)
	if err != nil {
		t.Fatal(err)
	}
	requote(t, f, as, ev, wire.QuoteExtraData(ch.Nonce, hello.Nonce, helloRaw), p.Selections[0].PCRs)
	ev.ActivationProof = wire.ActivationProof(secret, helloRaw, challenge)
	ev.Version = evidenceVersion
	evRaw, err := wire.EncodeEvidence(ev)
	if err != nil {
		t.Fatal(err)
	}
	if got := wire.IsBinaryEvidence(evRaw); got != (evidenceVersion >= wire.Version2) {
		t.Fatalf("version %d evidence binary = %v", evidenceVersion, got)
	}
	_, err = finishSession(ss, evRaw)
	return err
}
