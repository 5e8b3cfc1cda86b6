package session_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/tpmid/tpmid/pkg/agent"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/session"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// recordingNodes is a node store port that admits with fixed facts, or
// refuses, and records what the session told it.
type recordingNodes struct {
	admit   *session.Admission
	refuse  error
	admits  []*session.Facts
	refused []error
}

func (n *recordingNodes) Admit(_ context.Context, f *session.Facts) (*session.Admission, error) {
	n.admits = append(n.admits, f)
	return n.admit, n.refuse
}

func (n *recordingNodes) Refused(_ context.Context, _ *session.Facts, err error) {
	n.refused = append(n.refused, err)
}

// TestSteps: the session is a sequence of steps fed by Next; the node
// store port sees every verified node and every refusal; a cancelled
// context stops the work; nothing runs after the end.
func TestSteps(t *testing.T) {
	f := newFixture(t)
	attest := func(t *testing.T, cfg *session.Config, ctx2 context.Context) (*session.Session, *session.Result, error) {
		t.Helper()
		as, hello, err := agent.BeginWith(f.TPM, f.cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer as.Close()
		s := session.New(cfg)
		challenge, res, err := s.Next(context.Background(), hello)
		if err != nil || res != nil {
			t.Fatalf("hello step: %v %v", res, err)
		}
		evidence, err := as.Respond(challenge)
		if err != nil {
			t.Fatal(err)
		}
		_, res, err = s.Next(ctx2, evidence)
		return s, res, err
	}

	t.Run("admitted with the store's facts", func(t *testing.T) {
		nodes := &recordingNodes{admit: &session.Admission{Hostname: "node-1.example", Groups: []string{"web", "eu"}, Profile: "fw-2026@3"}}
		cfg := f.policy(t, appraise.EKPolicyCert, f.TrustDir)
		cfg.Nodes = nodes
		s, res, err := attest(t, cfg, context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"host:node-1.example", "group:web", "group:eu", "profile:fw-2026@3"} {
			if !slices.Contains(res.Selectors, want) {
				t.Errorf("selectors %v lack %s", res.Selectors, want)
			}
		}
		if len(nodes.admits) != 1 || nodes.admits[0].EKHash != f.EKHash || len(nodes.admits[0].Quotes) != 1 || nodes.admits[0].Log == nil {
			t.Errorf("store saw %+v", nodes.admits)
		}
		if _, _, err := s.Next(context.Background(), nil); !errors.Is(err, session.ErrDone) {
			t.Errorf("Next after the end: %v", err)
		}
	})
	t.Run("store refusal is the verdict and is recorded", func(t *testing.T) {
		nodes := &recordingNodes{refuse: &verify.Error{Reason: "ek_revoked", Err: errors.New("revoked")}}
		cfg := f.policy(t, appraise.EKPolicyCert, f.TrustDir)
		cfg.Nodes = nodes
		_, _, err := attest(t, cfg, context.Background())
		if verify.ReasonOf(err) != "ek_revoked" || len(nodes.refused) != 1 {
			t.Errorf("err %v, refused %v", err, nodes.refused)
		}
	})
	t.Run("refused before the store is recorded too", func(t *testing.T) {
		nodes := &recordingNodes{}
		cfg := f.policy(t, appraise.EKPolicyCert, f.OtherDir)
		cfg.Nodes = nodes
		s := session.New(cfg)
		as, hello, err := agent.BeginWith(f.TPM, f.cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer as.Close()
		if _, _, err := s.Next(context.Background(), hello); verify.ReasonOf(err) != session.ReasonEKNotAdmitted {
			t.Fatalf("err %v", err)
		}
		if len(nodes.refused) != 1 || len(nodes.admits) != 0 {
			t.Errorf("admits %d refused %v", len(nodes.admits), nodes.refused)
		}
	})
	t.Run("cancelled context stops before the store", func(t *testing.T) {
		nodes := &recordingNodes{admit: &session.Admission{}}
		cfg := f.policy(t, appraise.EKPolicyCert, f.TrustDir)
		cfg.Nodes = nodes
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, _, err := attest(t, cfg, ctx)
		if !errors.Is(err, context.Canceled) || len(nodes.admits) != 0 {
			t.Errorf("err %v, admits %d", err, len(nodes.admits))
		}
	})
}
