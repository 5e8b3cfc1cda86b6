package softagent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/ca/issuer"
	"github.com/tpmid/tpmid/internal/realdata"
	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/akissuer"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// realLog is the event log the load harness uses.
const realLog = "eventlogs/go-tpm-tools/ubuntu-2404-amd-sevsnp.bin"

type fixture struct {
	ca   *testca.CA
	boot *Boot
	cfg  *session.Config
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	log, err := os.ReadFile(realdata.Path(t, realLog))
	if err != nil {
		t.Fatal(err)
	}
	boot, err := NewBoot(log)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testca.New("softagent test EK CA")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := verify.NewEKTrust([]*x509.Certificate{ca.Cert}, "test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &session.Config{
		TrustDomain:     spiffeid.RequireTrustDomainFromString("example.org"),
		EK:              &session.EKPolicy{Policy: appraise.EKPolicyCert, Trust: trust},
		Selections:      []wire.Selection{{Bank: "sha256", PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}}},
		RequireEventLog: true,
		MaxHello:        wire.DefaultMaxHello,
		MaxEvidence:     wire.DefaultMaxEvidence,
	}
	return &fixture{ca: ca, boot: boot, cfg: cfg}
}

func (f *fixture) attester(t *testing.T, host string) *Attester {
	t.Helper()
	a, err := New(f.ca, f.boot, host)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// run drives one attestation through the server's session; answer turns the
// challenge into the evidence sent.
func (f *fixture) run(t *testing.T, s *Session, answer func(ch []byte) ([]byte, error)) (*session.Result, error) {
	t.Helper()
	ctx := context.Background()
	srv := session.New(f.cfg)
	ch, res, err := srv.Next(ctx, s.Hello())
	if err != nil || res != nil {
		return res, err
	}
	ev, err := answer(ch)
	if err != nil {
		t.Fatalf("answering the challenge: %v", err)
	}
	_, res, err = srv.Next(ctx, ev)
	return res, err
}

// TestAttesterPassesTheServer: the server's own session (EK certificate and
// profile, AK creation, MakeCredential, activation proof, quote, event log
// replay and PCR7) admits a software attester under the agent ID named by
// its EK, for every attestation in a row, with the real ubuntu-2404 log.
func TestAttesterPassesTheServer(t *testing.T) {
	f := newFixture(t)
	a := f.attester(t, "load-1")
	sum := sha256.Sum256(a.EKPublic())
	want := "spiffe://example.org/spire/agent/tpm/" + hex.EncodeToString(sum[:])
	for i := range 3 {
		s, err := a.Start()
		if err != nil {
			t.Fatal(err)
		}
		res, err := f.run(t, s, s.Answer)
		if err != nil {
			t.Fatalf("attestation %d refused: %v", i, err)
		}
		if got := res.AgentID.String(); got != want {
			t.Fatalf("agent ID %s, want %s", got, want)
		}
		if res.Facts.SecureBoot == nil {
			t.Fatalf("no Secure Boot state read from the log")
		}
	}
}

// TestAttesterRefusals: the harness's attesters are refused as a TPM would
// be when the evidence is not theirs or not what they measured, so the
// load figures are for full, successful verifications.
func TestAttesterRefusals(t *testing.T) {
	f := newFixture(t)
	a, b := f.attester(t, "load-a"), f.attester(t, "load-b")
	other, err := testca.New("not in the bundle")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := New(other, f.boot, "load-c")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		from   *Attester
		answer func(s *Session) func([]byte) ([]byte, error)
		reason verify.Reason
	}{
		{"EK from a CA not in the bundle", stranger, func(s *Session) func([]byte) ([]byte, error) { return s.Answer }, session.ReasonEKNotAdmitted},
		{"activation proof from a guessed secret (the AK is not in this EK's TPM)", a, func(s *Session) func([]byte) ([]byte, error) {
			s.activate = func(_, _ []byte) ([]byte, error) { return bytes.Repeat([]byte{7}, 32), nil }
			return s.Answer
		}, session.ReasonActivationProof},
		{"EK of another attester with this AK", b, func(s *Session) func([]byte) ([]byte, error) {
			// b's hello with a's EK: b cannot activate a credential made
			// for a's EK, and its proof is refused.
			s.a = &Attester{Hostname: b.Hostname, boot: b.boot, ek: b.ek, ekPub: a.ekPub, ekCert: a.ekCert,
				ak: b.ak, akPublic: b.akPublic, akName: b.akName, akQName: b.akQName, create: b.create, start: b.start}
			hs, err := s.a.Start()
			if err != nil {
				t.Fatal(err)
			}
			*s = *hs
			s.activate = func(_, _ []byte) ([]byte, error) { return bytes.Repeat([]byte{7}, 32), nil }
			return s.Answer
		}, session.ReasonActivationProof},
		{"event log edited", a, func(s *Session) func([]byte) ([]byte, error) {
			return func(ch []byte) ([]byte, error) {
				ev, err := s.Answer(ch)
				if err != nil {
					return nil, err
				}
				d, err := wire.DecodeEvidence(ev, wire.DefaultMaxEvidence)
				if err != nil {
					return nil, err
				}
				d.EventLog = bytes.Clone(d.EventLog)
				d.EventLog[len(d.EventLog)-1] ^= 1
				return wire.EncodeEvidence(d)
			}
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := c.from.Start()
			if err != nil {
				t.Fatal(err)
			}
			res, err := f.run(t, s, c.answer(s))
			if err == nil {
				t.Fatalf("admitted %v, want a refusal", res.AgentID)
			}
			var ve *verify.Error
			if !errors.As(err, &ve) {
				t.Fatalf("refusal %v has no reason", err)
			}
			if c.reason != "" && ve.Reason != c.reason {
				t.Fatalf("reason %s (%v), want %s", ve.Reason, err, c.reason)
			}
			if c.reason == "" && !strings.HasPrefix(string(ve.Reason), "eventlog") {
				t.Fatalf("reason %s (%v), want an event log reason", ve.Reason, err)
			}
		})
	}
}

// TestNewBootRefusesABadLog: a log that does not parse gives no boot.
func TestNewBootRefusesABadLog(t *testing.T) {
	f := newFixture(t)
	if _, err := NewBoot(f.boot.EventLog[:100]); err == nil {
		t.Fatal("NewBoot accepted a truncated log")
	}
}

// TestAttesterDeliveryAndFastPath: with tpmid's AK CA, the server's session
// delivers an AK certificate after the attester's first, full attestation;
// the attester keeps it, and its next attestation takes the fast path (no
// credential in the challenge) and is admitted under the same agent ID. So
// bench-load's sqlite-ca figures are for the delivery step and the fast
// path as a real agent drives them.
func TestAttesterDeliveryAndFastPath(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	ctx := context.Background()
	if _, err := issuer.Init(ctx, issuer.InitOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	ca, err := issuer.Load(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	f.cfg.Issuer = &akissuer.Issuer{CA: ca}
	a := f.attester(t, "load-ca")

	// One attestation with a delivery: hello, evidence, acknowledgement.
	attestOnce := func() (*session.Result, bool, bool) {
		t.Helper()
		s, err := a.Start()
		if err != nil {
			t.Fatal(err)
		}
		srv := session.New(f.cfg)
		msg, delivered := s.Hello(), false
		for range 3 {
			reply, res, err := srv.Next(ctx, msg)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if res != nil {
				return res, s.FastPath(), delivered
			}
			if wire.IsDelivery(reply) {
				delivered = true
				msg, err = s.Deliver(reply)
			} else {
				msg, err = s.Answer(reply)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		t.Fatal("no verdict after three messages")
		return nil, false, false
	}
	first, fast, delivered := attestOnce()
	if fast || !delivered || !a.HasAKCert() {
		t.Fatalf("first attestation: fast path %v, delivered %v, certificate kept %v; want a full attestation with a delivery", fast, delivered, a.HasAKCert())
	}
	second, fast, delivered := attestOnce()
	if !fast || delivered {
		t.Fatalf("second attestation: fast path %v, delivered %v; want the fast path without a new delivery", fast, delivered)
	}
	if !second.FastPath || second.AgentID != first.AgentID {
		t.Fatalf("fast path result %v for %s, first was %s", second.FastPath, second.AgentID, first.AgentID)
	}
}
