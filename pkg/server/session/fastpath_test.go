package session_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/internal/testakca"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// Commands that touch the EK or make a key (TPM 2.0 Part 2, TPM_CC).
var ekOrKeyCommands = map[uint32]string{
	0x131: "TPM2_CreatePrimary", 0x153: "TPM2_Create", 0x147: "TPM2_ActivateCredential",
	0x14E: "TPM2_NV_Read", 0x169: "TPM2_NV_ReadPublic",
}

// attestWithCA runs one whole attestation through Next on both sides, as
// the two plugin shells relay it, and returns the result, whether the
// challenge carried a credential, and the TPM commands the agent sent.
func attestWithCA(t *testing.T, f *fixture, cfg *session.Config, acfg agent.Config) (*session.Result, bool, map[uint32]uint64, error) {
	t.Helper()
	before := f.TPM.CommandCounts()
	as, msg, err := agent.BeginWith(f.TPM, acfg)
	if err != nil {
		t.Fatalf("agent begin: %v", err)
	}
	defer as.Close()
	s := session.New(cfg)
	credential := false
	for round := 0; ; round++ {
		reply, res, err := s.Next(context.Background(), msg)
		if err != nil || res != nil {
			after := f.TPM.CommandCounts()
			for k, v := range before {
				after[k] -= v
			}
			return res, credential, after, err
		}
		if round == 0 {
			ch, err := wire.DecodeChallenge(reply)
			if err != nil {
				t.Fatal(err)
			}
			credential = ch.Credential != nil
		}
		if msg, err = as.Next(reply); err != nil {
			t.Fatalf("agent round %d: %v", round, err)
		}
	}
}

// TestAKCertificateFastPath: the first attestation takes the full path and
// delivers an AK certificate the agent keeps; the next one presents it and
// skips MakeCredential, with no EK command and no new key at the TPM;
// a foreign, expired or mismatched certificate falls back to the full path;
// a revoked EK is refused on both paths.
func TestAKCertificateFastPath(t *testing.T) {
	f := newFixture(t)
	ca := testakca.New(t, "tpmid test AK CA")
	nodes := &recordingNodes{admit: &session.Admission{}}
	cfg := f.policy(t, appraise.EKPolicyCert, f.TrustDir)
	cfg.Issuer, cfg.Nodes = ca, nodes
	acfg := f.cfg
	acfg.DataDir = t.TempDir()
	chainFile := filepath.Join(acfg.DataDir, "ak-ecdsa.chain.pem")

	res, cred, _, err := attestWithCA(t, f, cfg, acfg)
	if err != nil || !cred || res.FastPath || len(res.AKCertChain) != 1 {
		t.Fatalf("first attestation: cred %v res %+v err %v", cred, res, err)
	}
	if st, err := os.Stat(chainFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("kept chain: %v %v", st, err)
	}

	res, cred, cmds, err := attestWithCA(t, f, cfg, acfg)
	if err != nil || cred || !res.FastPath || res.AKCertChain != nil {
		t.Fatalf("re-attestation: cred %v res %+v err %v", cred, res, err)
	}
	for code, name := range ekOrKeyCommands {
		if cmds[code] != 0 {
			t.Errorf("fast path sent %s %d times", name, cmds[code])
		}
	}
	t.Logf("fast path TPM commands by code: %v", cmds)

	t.Run("renewed near expiry", func(t *testing.T) {
		kept, _ := os.ReadFile(chainFile)
		defer os.WriteFile(chainFile, kept, 0o600)
		ca.Now = ca.Now.Add(20 * time.Hour) // 4h left of 24h
		defer func() { ca.Now = ca.Now.Add(-20 * time.Hour) }()
		res, cred, _, err := attestWithCA(t, f, cfg, acfg)
		if err != nil || cred || !res.FastPath || len(res.AKCertChain) != 1 {
			t.Fatalf("cred %v res %+v err %v", cred, res, err)
		}
	})

	fallback := []struct {
		name  string
		chain func(t *testing.T) []byte
		now   time.Duration
	}{
		{"certificate from another CA", func(t *testing.T) []byte {
			other := testakca.New(t, "someone else's CA")
			chain, _ := other.IssueAK(context.Background(), res.Facts, res.AgentID)
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0]})
		}, 0},
		{"expired certificate", nil, 25 * time.Hour}, // the CA root lives 48h
		{"certificate for another agent", func(t *testing.T) []byte {
			other := spiffeid.RequireFromString("spiffe://example.org/spire/agent/tpm/someone-else")
			chain, _ := ca.IssueAK(context.Background(), res.Facts, other)
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0]})
		}, 0},
	}
	for _, tc := range fallback {
		t.Run(tc.name, func(t *testing.T) {
			kept, _ := os.ReadFile(chainFile)
			defer os.WriteFile(chainFile, kept, 0o600)
			if tc.chain != nil {
				if err := os.WriteFile(chainFile, tc.chain(t), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ca.Now = ca.Now.Add(tc.now)
			defer func() { ca.Now = ca.Now.Add(-tc.now) }()
			res, cred, _, err := attestWithCA(t, f, cfg, acfg)
			if err != nil || !cred || res.FastPath || len(res.AKCertChain) != 1 {
				t.Fatalf("cred %v res %+v err %v", cred, res, err)
			}
		})
	}

	t.Run("revoked EK refused on the fast path", func(t *testing.T) {
		nodes.refuse = &verify.Error{Reason: "ek_revoked", Err: errors.New("revoked")}
		defer func() { nodes.refuse = nil }()
		_, cred, _, err := attestWithCA(t, f, cfg, acfg)
		if cred || verify.ReasonOf(err) != "ek_revoked" {
			t.Fatalf("cred %v err %v", cred, err)
		}
	})
	t.Run("bad acknowledgement", func(t *testing.T) {
		s := session.New(cfg)
		os.Remove(chainFile)
		as, hello, err := agent.BeginWith(f.TPM, acfg)
		if err != nil {
			t.Fatal(err)
		}
		defer as.Close()
		ch, _, err := s.Next(context.Background(), hello)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := as.Next(ch)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Next(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		bad, _ := json.Marshal(map[string]any{"version": 1, "stored": true, "extra": 1})
		if _, _, err := s.Next(context.Background(), bad); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("ack with an unknown field: %v", err)
		}
	})
}
