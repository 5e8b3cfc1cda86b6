package agent_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/trustfiles"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

var (
	allEKs = []tpm.EKAlg{tpm.EKRSA2048, tpm.EKRSA3072, tpm.EKRSA4096, tpm.EKP256, tpm.EKP384, tpm.EKP521}
	allAKs = []tpm.AKAlg{tpm.AKP256, tpm.AKP384, tpm.AKRSA2048, tpm.AKRSA3072}
)

// serverConfig is the real server session's configuration trusting m's
// EK CA (ek_policy cert).
func serverConfig(t testing.TB, m *testmachine.Machine) *session.Config {
	t.Helper()
	trust, err := trustfiles.LoadEKTrust(m.TrustDir)
	if err != nil {
		t.Fatal(err)
	}
	return &session.Config{
		TrustDomain:     spiffeid.RequireTrustDomainFromString("example.org"),
		EK:              &session.EKPolicy{Policy: appraise.EKPolicyCert, Trust: trust},
		Selections:      []wire.Selection{{Bank: "sha256", PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}}},
		RequireEventLog: true,
		MaxHello:        wire.DefaultMaxHello,
		MaxEvidence:     wire.DefaultMaxEvidence,
	}
}

// attest runs one whole first attestation of the real agent session
// against the real server session; tamper, if set, rewrites the hello.
func attest(t testing.TB, m *testmachine.Machine, cfg agent.Config, tamper func(*wire.Hello)) (*session.Result, error) {
	t.Helper()
	as, hello, err := agent.BeginWith(m.TPM, cfg)
	if err != nil {
		t.Fatalf("agent begin: %v", err)
	}
	defer as.Close()
	if tamper != nil {
		var h wire.Hello
		if err := json.Unmarshal(hello, &h); err != nil {
			t.Fatal(err)
		}
		tamper(&h)
		if hello, err = wire.EncodeHello(&h); err != nil {
			t.Fatal(err)
		}
	}
	ss := session.New(serverConfig(t, m))
	challenge, _, err := ss.Next(context.Background(), hello)
	if err != nil {
		return nil, err
	}
	evidence, err := as.Respond(challenge)
	if err != nil {
		return nil, err
	}
	_, res, err := ss.Next(context.Background(), evidence)
	return res, err
}

// TestEKAKMatrix: every TCG EK type (certificate provisioned in its NV
// index by a test CA, key persisted at its handle) with every AK type, a
// whole first attestation through the real agent and server sessions:
// the server makes the credential from the EK's key by its template
// (verify.MakeCredential) and the TPM activates it with the policy
// session of the EK's range. It logs the TPM commands and wall time of
// each first attestation (fresh AK, no data_dir).
func TestEKAKMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("24 simulator attestations; RSA-4096 key generation is slow")
	}
	var report []string
	for _, ekAlg := range allEKs {
		t.Run("ek="+string(ekAlg), func(t *testing.T) {
			if ekAlg == tpm.EKRSA3072 || ekAlg == tpm.EKRSA4096 {
				// The reference simulator of go-tpm-tools refuses RSA keys
				// over 2048 bits (TPM_RC_VALUE); internal/swtpm's
				// TestSwtpmRSA3072 covers RSA-3072 on swtpm.
				t.Skipf("the in-process simulator has no RSA %s", ekAlg)
			}
			m := testmachine.NewWith(t, testmachine.Options{EK: ekAlg})
			ek, err := m.TPM.EK(ekAlg)
			if err != nil {
				t.Fatal(err)
			}
			if ek.CertDER == nil || m.EKHash == "" {
				t.Fatalf("EK(%s): no certificate", ekAlg)
			}
			for _, akAlg := range allAKs {
				t.Run("ak="+string(akAlg), func(t *testing.T) {
					if akAlg == tpm.AKRSA3072 {
						t.Skip("the in-process simulator has no RSA 3072 (see internal/swtpm TestSwtpmRSA3072)")
					}
					before, counts := m.TPM.Commands(), m.TPM.CommandCounts()
					start := time.Now()
					res, err := attest(t, m, agent.Config{EKAlgorithm: ekAlg, AKAlgorithm: akAlg, Hostname: "node-1"}, nil)
					took := time.Since(start)
					n, after := m.TPM.Commands()-before, m.TPM.CommandCounts()
					if err != nil {
						t.Fatalf("attestation refused: %v", err)
					}
					if want := "spiffe://example.org/spire/agent/tpm/" + m.EKHash; res.AgentID.String() != want {
						t.Errorf("agent ID %s, want %s", res.AgentID, want)
					}
					if h, err := m.TPM.LoadedHandles(); err != nil || len(h) != 0 {
						t.Errorf("handles left loaded: %v %v", h, err)
					}
					report = append(report, fmt.Sprintf("%-8s %-8s %-16s %3d commands %8s  %s", ekAlg, akAlg, ek.Template, n, took.Round(time.Millisecond), codes(counts, after)))
				})
			}
		})
	}
	t.Logf("first attestation, fresh AK, simulator:\n%s", strings.Join(report, "\n"))
}

// codes renders the per-code command counts sent since before.
func codes(before, after map[uint32]uint64) string {
	var keys []uint32
	for k, v := range after {
		if v > before[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%03x:%d", k&0xfff, after[k]-before[k]))
	}
	return strings.Join(parts, " ")
}

// TestWrongEKHighRange: the TPM holds a P-384 and a P-521 EK (and an
// RSA-2048 one), all with trusted certificates. The agent uses one and
// its hello claims another, so the server makes the credential for the
// claimed EK: TPM2_ActivateCredential with the EK really used fails in
// the TPM (tpm.ErrActivation), and the lying agent that answers anyway
// with a guessed proof is refused with activation_proof.
func TestWrongEKHighRange(t *testing.T) {
	m := testmachine.NewWith(t, testmachine.Options{EK: tpm.EKP384})
	for _, alg := range []tpm.EKAlg{tpm.EKP521, tpm.EKRSA} {
		if err := tpmtest.ProvisionEKCertificate(m.TPM, alg, func(pub crypto.PublicKey) ([]byte, error) {
			return m.CA.IssueEK(pub, "id:53494D55", "id:00000001", "id:00020000")
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ uses, claims tpm.EKAlg }{
		{tpm.EKP384, tpm.EKP521},
		{tpm.EKP521, tpm.EKP384},
		{tpm.EKP384, tpm.EKRSA},
		{tpm.EKRSA, tpm.EKP521},
	} {
		t.Run(fmt.Sprintf("uses %s claims %s", tc.uses, tc.claims), func(t *testing.T) {
			claimed, err := m.TPM.EK(tc.claims)
			if err != nil || claimed.CertDER == nil {
				t.Fatalf("EK(%s): %v", tc.claims, err)
			}
			_, err = attest(t, m, agent.Config{EKAlgorithm: tc.uses, Hostname: "node-1"}, func(h *wire.Hello) {
				h.EK.Public, h.EK.Certificate = claimed.PublicDER, claimed.CertDER
			})
			if !errors.Is(err, tpm.ErrActivation) {
				t.Fatalf("attestation = %v, want the agent's TPM to fail activation (tpm.ErrActivation)", err)
			}
			t.Logf("agent: %v", err)
		})
	}
	// Same type: another P-384 key (not in this TPM) whose certificate
	// from the trusted CA was stolen: the TPM fails the integrity check.
	t.Run("uses p384 claims another P-384 key", func(t *testing.T) {
		stolen, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := m.CA.IssueEK(stolen.Public(), "id:53494D55", "id:00000001", "id:00020000")
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKIXPublicKey(stolen.Public())
		if err != nil {
			t.Fatal(err)
		}
		_, err = attest(t, m, agent.Config{EKAlgorithm: tpm.EKP384, Hostname: "node-1"}, func(h *wire.Hello) {
			h.EK.Public, h.EK.Certificate = der, cert
		})
		if !errors.Is(err, tpm.ErrActivation) {
			t.Fatalf("attestation = %v, want tpm.ErrActivation", err)
		}
		t.Logf("agent: %v", err)
	})
	t.Run("lying agent", func(t *testing.T) {
		claimed, err := m.TPM.EK(tpm.EKP521)
		if err != nil {
			t.Fatal(err)
		}
		as, hello, err := agent.BeginWith(m.TPM, agent.Config{EKAlgorithm: tpm.EKP384, Hostname: "node-1"})
		if err != nil {
			t.Fatal(err)
		}
		defer as.Close()
		var h wire.Hello
		if err := json.Unmarshal(hello, &h); err != nil {
			t.Fatal(err)
		}
		h.EK.Public, h.EK.Certificate = claimed.PublicDER, claimed.CertDER
		if hello, err = wire.EncodeHello(&h); err != nil {
			t.Fatal(err)
		}
		ss := session.New(serverConfig(t, m))
		challenge, _, err := ss.Next(context.Background(), hello)
		if err != nil {
			t.Fatal(err)
		}
		evRaw, err := tpmtest.GuessedProofEvidence(as, hello, challenge)
		if err != nil {
			t.Fatal(err)
		}
		res, err := func() (*session.Result, error) { _, r, err := ss.Next(context.Background(), evRaw); return r, err }()
		if err == nil {
			t.Fatalf("admitted as %s", res.AgentID)
		}
		if verify.ReasonOf(err) != session.ReasonActivationProof {
			t.Errorf("refusal %v, want %s", err, session.ReasonActivationProof)
		}
	})
}
