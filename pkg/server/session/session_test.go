package session_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/internal/testmachine"
	"github.com/tpmid/tpmid/internal/tpmtest"
	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/trustfiles"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

type fixture struct {
	*testmachine.Machine
	cfg agent.Config
}

func newFixture(t *testing.T) *fixture {
	m := testmachine.New(t)
	return &fixture{Machine: m, cfg: agent.Config{EKCertificatePath: m.EKCertPath, Hostname: "node-1"}}
}

func (f *fixture) policy(t testing.TB, ekPolicy appraise.EKPolicy, trustDir string, allow ...string) *session.Config {
	t.Helper()
	ek := &session.EKPolicy{Policy: ekPolicy}
	p := &session.Config{
		TrustDomain:     spiffeid.RequireTrustDomainFromString("example.org"),
		EK:              ek,
		Selections:      []wire.Selection{{Bank: "sha256", PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}}},
		RequireEventLog: true,
		MaxHello:        wire.DefaultMaxHello,
		MaxEvidence:     wire.DefaultMaxEvidence,
	}
	if ekPolicy.NeedsTrust() {
		trust, err := trustfiles.LoadEKTrust(trustDir)
		if err != nil {
			t.Fatal(err)
		}
		ek.Trust = trust
	}
	if ekPolicy.NeedsAllowlist() {
		al, err := appraise.ParseAllowlist([]byte(strings.Join(allow, "\n")))
		if err != nil {
			t.Fatal(err)
		}
		ek.Allowlist = al
	}
	return p
}

// startSession runs the hello step, as the plugin shell does.
func startSession(p *session.Config, hello []byte) (*session.Session, []byte, error) {
	s := session.New(p)
	challenge, _, err := s.Next(context.Background(), hello)
	if err != nil {
		return nil, nil, err
	}
	return s, challenge, nil
}

// finishSession runs the evidence step.
func finishSession(s *session.Session, evidence []byte) (*session.Result, error) {
	_, res, err := s.Next(context.Background(), evidence)
	return res, err
}

// hooks tamper with the exchange, as a man in the middle or a lying agent.
type hooks struct {
	hello     func(t *testing.T, h *wire.Hello)
	rawHello  func([]byte) []byte
	evidence  func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence)
	rawEviden func([]byte) []byte
}

func run(t *testing.T, f *fixture, p *session.Config, h hooks) (*session.Result, error) {
	t.Helper()
	as, hello, err := agent.BeginWith(f.TPM, f.cfg)
	if err != nil {
		t.Fatalf("agent begin: %v", err)
	}
	defer as.Close()
	if h.hello != nil {
		var msg wire.Hello
		if err := json.Unmarshal(hello, &msg); err != nil {
			t.Fatal(err)
		}
		h.hello(t, &msg)
		hello, _ = wire.Encode(msg)
	}
	if h.rawHello != nil {
		hello = h.rawHello(hello)
	}
	ss, challenge, err := startSession(p, hello)
	if err != nil {
		return nil, err
	}
	evidence, err := as.Respond(challenge)
	if err != nil {
		t.Fatalf("agent respond: %v", err)
	}
	if h.evidence != nil {
		msg, err := wire.DecodeEvidence(evidence, 0)
		if err != nil {
			t.Fatal(err)
		}
		h.evidence(t, f, as, msg)
		if evidence, err = wire.EncodeEvidence(msg); err != nil {
			t.Fatal(err)
		}
	}
	if h.rawEviden != nil {
		evidence = h.rawEviden(evidence)
	}
	return finishSession(ss, evidence)
}

// requote replaces the sha256 quote by one the agent's real AK makes with
// other inputs.
func requote(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence, extra []byte, pcrList []int) {
	t.Helper()
	attest, sig, err := f.TPM.Quote(s.AK(), extra, pcrs.SHA256, pcrList)
	if err != nil {
		t.Fatal(err)
	}
	e.Quotes[0].Attest, e.Quotes[0].Signature = attest, sig
}

func TestAttestation(t *testing.T) {
	f := newFixture(t)
	trusted := f.policy(t, appraise.EKPolicyCert, f.TrustDir)

	t.Run("admitted", func(t *testing.T) {
		res, err := run(t, f, trusted, hooks{})
		if err != nil {
			t.Fatalf("attestation refused: %v", err)
		}
		wantID := "spiffe://example.org/spire/agent/tpm/" + f.EKHash
		if res.AgentID.String() != wantID {
			t.Errorf("agent ID = %s, want %s", res.AgentID, wantID)
		}
		for _, want := range []string{"pub_hash:" + f.EKHash, "ek_hash:" + f.EKHash, "manufacturer:id:53494D55", "model:id:00000001", "version:id:00020000", "ek_issuer:tpmid test EK root"} {
			if !contains(res.Selectors, want) {
				t.Errorf("selectors %v lack %q", res.Selectors, want)
			}
		}
		for _, s := range res.Selectors {
			if strings.HasPrefix(s, "pcr:") {
				t.Errorf("pcr selector %q without pcr_selectors", s)
			}
		}
	})

	// The AK's creation structures are not evidence (hello.go says why), but
	// they are part of the hello, which the activation proof binds: altered
	// in transit, the attestation is refused. A software key with
	// well-formed ones is refused by the TPM
	// (TestActivationProvesTheAKIsTPMResident).
	t.Run("creation structures altered in transit", func(t *testing.T) {
		_, err := run(t, f, trusted, hooks{hello: func(t *testing.T, h *wire.Hello) {
			h.AK.CreateData = append([]byte(nil), h.AK.CreateData...)
			h.AK.CreateData[len(h.AK.CreateData)-1] ^= 1
		}})
		if r := verify.ReasonOf(err); r != session.ReasonActivationProof {
			t.Fatalf("got %v (%s), want %s", err, r, session.ReasonActivationProof)
		}
	})

	t.Run("pcr selectors are opt-in", func(t *testing.T) {
		p := *trusted
		p.PCRSelectors = true
		res, err := run(t, f, &p, hooks{})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range res.Selectors {
			if strings.HasPrefix(s, "pcr:sha256:") {
				n++
			}
		}
		if n != 8 {
			t.Errorf("%d pcr selectors, want 8: %v", n, res.Selectors)
		}
		v, _ := res.Facts.PCRs.Get(pcrs.SHA256, 7)
		if want := fmt.Sprintf("pcr:sha256:7:%x", v); !contains(res.Selectors, want) {
			t.Errorf("selectors %v lack %q", res.Selectors, want)
		}
	})

	t.Run("no event log when require_event_log is off", func(t *testing.T) {
		p := *trusted
		p.RequireEventLog = false
		res, err := run(t, f, &p, hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
			e.EventLog = nil
		}})
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		for _, sel := range res.Selectors {
			if strings.HasPrefix(sel, "secureboot:") {
				t.Errorf("secureboot selector %q without an event log", sel)
			}
		}
		// A log that is sent is still checked.
		_, err = run(t, f, &p, hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
			e.EventLog = f.OtherLog
		}})
		if verify.ReasonOf(err) != session.ReasonEventLog {
			t.Fatalf("err = %v, want %s", err, session.ReasonEventLog)
		}
	})

	t.Run("allowlist admits without a certificate", func(t *testing.T) {
		// The simulator has no EK certificate in NV; without
		// ek_certificate_path the agent sends none.
		noCert := *f
		noCert.cfg.EKCertificatePath = ""
		p := f.policy(t, appraise.EKPolicyAllowlist, "", f.EKHash)
		if _, err := run(t, &noCert, p, hooks{}); err != nil {
			t.Fatal(err)
		}
	})

	someoneElse := strings.Repeat("ab", 32)
	twoBanks := f.policy(t, appraise.EKPolicyCert, f.TrustDir)
	twoBanks.Selections = []wire.Selection{{Bank: "sha1", PCRs: []int{0, 7}}, {Bank: "sha256", PCRs: []int{0, 7}}}
	tests := []struct {
		name   string
		policy *session.Config
		hooks  hooks
		reason verify.Reason
		want   string // a fragment of the message a person reads
		code   string
	}{
		{
			name:   "untrusted EK root",
			policy: f.policy(t, appraise.EKPolicyCert, f.OtherDir),
			reason: session.ReasonEKNotAdmitted, want: "certificate not trusted",
		},
		{
			name:   "no EK certificate under cert policy",
			policy: trusted,
			hooks:  hooks{hello: func(t *testing.T, h *wire.Hello) { h.EK.Certificate = nil }},
			reason: session.ReasonEKNotAdmitted, want: "no EK certificate",
		},
		{
			name:   "EK not on the allowlist",
			policy: f.policy(t, appraise.EKPolicyAllowlist, "", someoneElse),
			reason: session.ReasonEKNotAdmitted, want: "not on the allowlist",
		},
		{
			name:   "cert and allowlist: only the certificate",
			policy: f.policy(t, appraise.EKPolicyCertAndAllowlist, f.TrustDir, someoneElse),
			reason: session.ReasonEKNotAdmitted, want: "certificate trusted but EK hash is not on the allowlist",
		},
		{
			name:   "cert and allowlist: only the allowlist",
			policy: f.policy(t, appraise.EKPolicyCertAndAllowlist, f.OtherDir, f.EKHash),
			reason: session.ReasonEKNotAdmitted, want: "EK hash is allowlisted but certificate not trusted",
		},
		{
			name:   "EK certificate of another key",
			policy: trusted,
			hooks: hooks{hello: func(t *testing.T, h *wire.Hello) {
				ca, _ := testca.New("x")
				other, _ := testca.New("y")
				der, err := ca.IssueEK(other.Key.Public(), "id:53494D55", "id:1", "id:1")
				if err != nil {
					t.Fatal(err)
				}
				h.EK.Certificate = der
			}},
			reason: session.ReasonEKMismatch, want: "another key",
		},
		{
			name:   "software AK: no sensitiveDataOrigin, not fixedTPM",
			policy: trusted,
			hooks: hooks{hello: func(t *testing.T, h *wire.Hello) {
				pub, err := legacy.DecodePublic(h.AK.Public)
				if err != nil {
					t.Fatal(err)
				}
				pub.Attributes &^= legacy.FlagSensitiveDataOrigin | legacy.FlagFixedTPM
				if h.AK.Public, err = pub.Encode(); err != nil {
					t.Fatal(err)
				}
			}},
			reason: verify.ReasonAKAttributes, want: "fixedTPM sensitiveDataOrigin",
		},
		{
			name:   "wrong activation proof",
			policy: trusted,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				e.ActivationProof[0] ^= 1
			}},
			reason: session.ReasonActivationProof, want: "activation proof does not match",
		},
		{
			name:   "no activation proof",
			policy: trusted,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				e.ActivationProof = nil
			}},
			reason: session.ReasonActivationProof,
		},
		{
			name:   "quote with other extraData",
			policy: trusted,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				requote(t, f, s, e, []byte("replayed from another session"), []int{0, 1, 2, 3, 4, 5, 6, 7})
			}},
			reason: verify.ReasonQuoteExtraData,
		},
		{
			name:   "quote over other PCRs than asked",
			policy: trusted,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				ev := mustExtra(t, f, s, e)
				requote(t, f, s, e, ev, []int{0, 1, 2, 3, 4, 5, 6})
			}},
			reason: verify.ReasonQuotePCRSelection,
		},
		{
			name:   "PCR value not matching the quote digest",
			policy: trusted,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				e.PCRs["sha256"][4][0] ^= 1
			}},
			reason: verify.ReasonQuoteDigest,
		},
		{
			name:   "badly signed quote",
			policy: trusted,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				e.Quotes[0].Signature[len(e.Quotes[0].Signature)-1] ^= 1
			}},
			reason: verify.ReasonQuoteSignature,
		},
		{
			name:   "bank the policy wants is not quoted",
			policy: trusted,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				e.Quotes[0].Bank = "sha1"
			}},
			reason: session.ReasonQuoteMissing, want: "sha256",
		},
		{
			name:   "event log not replaying",
			policy: trusted,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				e.EventLog = f.OtherLog
			}},
			reason: session.ReasonEventLog, want: "does not replay",
		},
		{
			name:   "event log without one quoted bank",
			policy: twoBanks,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				// The same boot, logged in the SHA-1 bank only.
				b, err := eventlog.NewBuilder(pcrs.SHA1)
				if err != nil {
					t.Fatal(err)
				}
				for pcr := uint32(0); pcr < 8; pcr++ {
					b.Extend(pcr, eventlog.EvSeparator, []byte{0, 0, 0, 0})
				}
				e.EventLog = b.Bytes()
			}},
			reason: session.ReasonEventLog, want: "no digests for quoted bank",
		},
		{
			name:   "event log missing",
			policy: trusted,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				e.EventLog = nil
			}},
			reason: session.ReasonEventLogMissing,
		},
		{
			name:   "event log garbage",
			policy: trusted,
			hooks: hooks{evidence: func(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) {
				e.EventLog = []byte("not an event log at all")
			}},
			reason: session.ReasonEventLog,
		},
		{
			name:   "oversized hello",
			policy: trusted,
			hooks:  hooks{rawHello: func(b []byte) []byte { return append(b, make([]byte, wire.DefaultMaxHello)...) }},
			code:   "too large",
		},
		{
			name:   "malformed hello",
			policy: trusted,
			hooks:  hooks{rawHello: func(b []byte) []byte { return b[:len(b)/2] }},
			code:   "malformed",
		},
		{
			name:   "unknown protocol version",
			policy: trusted,
			hooks:  hooks{hello: func(t *testing.T, h *wire.Hello) { h.Version = 3 }},
			code:   "unsupported protocol version",
		},
		{
			name:   "oversized evidence",
			policy: trusted,
			hooks:  hooks{rawEviden: func(b []byte) []byte { return append(b, make([]byte, wire.DefaultMaxEvidence)...) }},
			code:   "too large",
		},
		{
			name:   "malformed evidence",
			policy: trusted,
			hooks:  hooks{rawEviden: func(b []byte) []byte { return []byte(`{"version":1,"quotes":"x"}`) }},
			code:   "malformed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := run(t, f, tt.policy, tt.hooks)
			if err == nil {
				t.Fatalf("admitted as %s, want refusal", res.AgentID)
			}
			if tt.code != "" {
				if !strings.Contains(err.Error(), tt.code) {
					t.Fatalf("err = %v, want %q", err, tt.code)
				}
				var ve *verify.Error
				if errors.As(err, &ve) {
					t.Fatalf("wire error reported as verification failure %q", ve.Reason)
				}
				return
			}
			var ve *verify.Error
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a verify.Error with reason %s", err, tt.reason)
			}
			if ve.Reason != tt.reason {
				t.Fatalf("reason = %s (%v), want %s", ve.Reason, err, tt.reason)
			}
			if tt.want != "" && !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %q, want it to say %q", err, tt.want)
			}
		})
	}
}

// TestUnexplainedPCR: something extended PCR 9 outside the event log; a
// policy that quotes PCR 9 must refuse, naming the PCR.
func TestUnexplainedPCR(t *testing.T) {
	f := newFixture(t)
	if err := tpmtest.Extend(f.TPM, 9, map[pcrs.Alg][]byte{pcrs.SHA1: make([]byte, 20), pcrs.SHA256: make([]byte, 32)}); err != nil {
		t.Fatal(err)
	}
	p := f.policy(t, appraise.EKPolicyCert, f.TrustDir)
	p.Selections = []wire.Selection{{Bank: "sha256", PCRs: []int{0, 7, 9}}}
	_, err := run(t, f, p, hooks{})
	if verify.ReasonOf(err) != session.ReasonEventLog || !strings.Contains(err.Error(), "[9]") {
		t.Fatalf("err = %v, want %s naming PCR 9", err, session.ReasonEventLog)
	}
	// PCR 8 is at its reset value: nothing to explain, admitted.
	p.Selections = []wire.Selection{{Bank: "sha256", PCRs: []int{0, 7, 8}}}
	if _, err := run(t, f, p, hooks{}); err != nil {
		t.Fatalf("PCR at reset refused: %v", err)
	}
}

// mustExtra recomputes the session's extraData from the real quote, so a
// test can requote with the right binding but other PCRs.
func mustExtra(t *testing.T, f *fixture, s *agent.Session, e *wire.Evidence) []byte {
	t.Helper()
	att, err := legacy.DecodeAttestationData(e.Quotes[0].Attest)
	if err != nil {
		t.Fatal(err)
	}
	return att.ExtraData
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// BenchmarkAttestation runs whole attestations (agent and server sides) on
// the simulator and reports the TPM commands the agent sends per
// attestation, counted at the command channel.
func BenchmarkAttestation(b *testing.B) {
	for _, tc := range []struct {
		name    string
		dataDir bool
	}{{"fresh-AK", false}, {"AK-kept-in-data_dir", true}} {
		b.Run(tc.name, func(b *testing.B) {
			m := testmachine.New(b)
			cfg := agent.Config{EKCertificatePath: m.EKCertPath}
			if tc.dataDir {
				cfg.DataDir = b.TempDir()
			}
			p := (&fixture{Machine: m}).policy(b, appraise.EKPolicyCert, m.TrustDir)
			var commands uint64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				before := m.TPM.Commands()
				as, hello, err := agent.BeginWith(m.TPM, cfg)
				if err != nil {
					b.Fatal(err)
				}
				ss, challenge, err := startSession(p, hello)
				if err != nil {
					b.Fatal(err)
				}
				evidence, err := as.Respond(challenge)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := finishSession(ss, evidence); err != nil {
					b.Fatal(err)
				}
				as.Close()
				commands += m.TPM.Commands() - before
			}
			b.ReportMetric(float64(commands)/float64(b.N), "tpm-cmds/op")
		})
	}
}

// TestECCEndorsementKey: whole attestations with the EK certificate in NV
// (provisioned as a manufacturer does), for the RSA 2048 and the ECC P-256
// EK, with ECDSA and RSA AKs. The agent picks its EK by default (ECC when
// it has a certificate), the server makes the credential with
// go-attestation (an ECDH seed for the ECC EK).
func TestECCEndorsementKey(t *testing.T) {
	for _, ekAlg := range []tpm.EKAlg{tpm.EKRSA, tpm.EKECC} {
		t.Run("ek="+string(ekAlg), func(t *testing.T) {
			m := testmachine.NewWith(t, testmachine.Options{EK: ekAlg})
			if m.EKCertPath != "" {
				t.Fatalf("EK certificate in a file (%s), want it in NV only", m.EKCertPath)
			}
			ek, err := m.TPM.EK(ekAlg)
			if err != nil {
				t.Fatal(err)
			}
			wantHash, err := verify.EKHash(ek.Public)
			if err != nil {
				t.Fatal(err)
			}
			if wantHash != m.EKHash {
				t.Fatalf("testmachine EKHash %s, want the %s EK's %s", m.EKHash, ekAlg, wantHash)
			}
			for _, akAlg := range []tpm.AKAlg{tpm.AKECDSA, tpm.AKRSA} {
				t.Run("ak="+string(akAlg), func(t *testing.T) {
					f := &fixture{Machine: m, cfg: agent.Config{AKAlgorithm: akAlg, Hostname: "node-1"}}
					p := f.policy(t, appraise.EKPolicyCert, m.TrustDir)
					res, err := run(t, f, p, hooks{hello: func(t *testing.T, h *wire.Hello) {
						if !bytes.Equal(h.EK.Public, ek.PublicDER) || !bytes.Equal(h.EK.Certificate, m.EKCertDER) {
							t.Errorf("hello carries another EK or certificate than the %s EK with its NV certificate", ekAlg)
						}
					}})
					if err != nil {
						t.Fatalf("attestation refused: %v", err)
					}
					wantID := "spiffe://example.org/spire/agent/tpm/" + wantHash
					if res.AgentID.String() != wantID {
						t.Errorf("agent ID = %s, want %s", res.AgentID, wantID)
					}
					for _, want := range []string{"pub_hash:" + wantHash, "ek_hash:" + wantHash, "manufacturer:id:53494D55", "model:id:00000001", "version:id:00020000", "ek_issuer:tpmid test EK root"} {
						if !contains(res.Selectors, want) {
							t.Errorf("selectors %v lack %q", res.Selectors, want)
						}
					}
					if h, err := m.TPM.LoadedHandles(); err != nil || len(h) != 0 {
						t.Errorf("handles left loaded: %v %v", h, err)
					}
				})
			}
		})
	}

	// Wrong EK: the TPM holds both EKs, both with trusted certificates.
	// The agent uses one EK but its hello claims another (key and
	// certificate swapped: the same TPM's other EK, or a P-256 key
	// elsewhere whose certificate was stolen), so the server admits the
	// claimed EK and makes the credential for it. TPM2_ActivateCredential
	// with the EK the agent really uses fails (TPM_RC_SIZE on the seed when
	// the claimed EK is of the other type, TPM_RC_INTEGRITY on the
	// credential for another key of the same type), so the agent cannot
	// answer: that is what happens, and it is asserted (tpm.ErrActivation).
	// A lying agent that answers anyway (real quotes, guessed proof) is
	// refused with activation_proof, the first check of Finish.
	t.Run("wrong EK", func(t *testing.T) {
		m := testmachine.NewWith(t, testmachine.Options{EK: tpm.EKECC})
		if err := tpmtest.ProvisionEKCertificate(m.TPM, tpm.EKRSA, func(pub crypto.PublicKey) ([]byte, error) {
			return m.CA.IssueEK(pub, "id:53494D55", "id:00000001", "id:00020000")
		}); err != nil {
			t.Fatal(err)
		}
		// A stolen certificate: another P-256 key (not in this TPM) with a
		// certificate from the trusted CA.
		stolen, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		stolenCert, err := m.CA.IssueEK(stolen.Public(), "id:53494D55", "id:00000001", "id:00020000")
		if err != nil {
			t.Fatal(err)
		}
		stolenDER, err := x509.MarshalPKIXPublicKey(stolen.Public())
		if err != nil {
			t.Fatal(err)
		}
		other := func(alg tpm.EKAlg) (pub, cert []byte) {
			ek, err := m.TPM.EK(alg)
			if err != nil || ek.CertDER == nil {
				t.Fatalf("EK(%s) = %v (certificate: %v)", alg, err, ek != nil && ek.CertDER != nil)
			}
			return ek.PublicDER, ek.CertDER
		}
		for _, tc := range []struct {
			name          string
			uses          tpm.EKAlg
			claimPub, crt []byte
		}{
			{name: "uses rsa claims this TPM's ecc EK", uses: tpm.EKRSA},
			{name: "uses ecc claims this TPM's rsa EK", uses: tpm.EKECC},
			{name: "uses ecc claims another P-256 key", uses: tpm.EKECC, claimPub: stolenDER, crt: stolenCert},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.claimPub == nil {
					claims := tpm.EKECC
					if tc.uses == tpm.EKECC {
						claims = tpm.EKRSA
					}
					tc.claimPub, tc.crt = other(claims)
				}
				f := &fixture{Machine: m, cfg: agent.Config{EKAlgorithm: tc.uses, Hostname: "node-1"}}
				p := f.policy(t, appraise.EKPolicyCert, m.TrustDir)
				as, helloRaw, err := agent.BeginWith(m.TPM, f.cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer as.Close()
				var hello wire.Hello
				if err := json.Unmarshal(helloRaw, &hello); err != nil {
					t.Fatal(err)
				}
				hello.EK.Public, hello.EK.Certificate = tc.claimPub, tc.crt
				if helloRaw, err = wire.Encode(hello); err != nil {
					t.Fatal(err)
				}
				ss, challenge, err := startSession(p, helloRaw)
				if err != nil {
					t.Fatalf("server refused the claimed (trusted) EK before the challenge: %v", err)
				}
				_, err = as.Respond(challenge)
				if !errors.Is(err, tpm.ErrActivation) {
					t.Fatalf("agent Respond = %v, want tpm.ErrActivation", err)
				}
				t.Logf("agent: %v", err)

				// The lying agent: real quotes for a challenge stripped
				// of its credential, and a proof from a guessed secret.
				evRaw, err := tpmtest.GuessedProofEvidence(as, helloRaw, challenge)
				if err != nil {
					t.Fatal(err)
				}
				res, err := finishSession(ss, evRaw)
				if err == nil {
					t.Fatalf("admitted as %s", res.AgentID)
				}
				if verify.ReasonOf(err) != session.ReasonActivationProof {
					t.Fatalf("err = %v, want %s", err, session.ReasonActivationProof)
				}
				if err := as.Close(); err != nil {
					t.Fatal(err)
				}
				if h, err := m.TPM.LoadedHandles(); err != nil || len(h) != 0 {
					t.Errorf("handles left loaded after the failed activation and closing the AK: %v %v", h, err)
				}
			})
		}
	})
}
