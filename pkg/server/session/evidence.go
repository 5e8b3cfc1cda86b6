package session

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// evidenceStep checks the evidence: the activation proof (full path), one
// quote per selected bank bound to this session, the PCR values and the
// event log; then the node store decides, and with a CA the AK certificate
// is issued and delivered (reply) before the verdict.
func (s *Session) evidenceStep(ctx context.Context, evidenceRaw []byte) ([]byte, *Result, error) {
	cfg := s.cfg
	ev, err := wire.DecodeEvidence(evidenceRaw, cfg.MaxEvidence)
	if err != nil {
		return nil, nil, err
	}
	// Version 1 evidence in a version 2 session (or the reverse) is
	// refused: each session is read under one version's rules only.
	if err := wire.CheckSessionVersion("evidence", ev.Version, s.hello.Version); err != nil {
		return nil, nil, err
	}
	if !s.fast && !wire.CheckActivationProof(ev.ActivationProof, s.secret, s.helloRaw, s.challenge) {
		return nil, nil, &verify.Error{Reason: ReasonActivationProof, Err: errors.New("activation proof does not match: the AK is not in the TPM that holds this EK")}
	}
	if err := s.verifyQuotes(ev); err != nil {
		return nil, nil, err
	}
	if err := s.verifyEventLog(ev); err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}

	var adm *Admission
	if cfg.Nodes != nil {
		if adm, err = cfg.Nodes.Admit(ctx, &s.facts); err != nil {
			return nil, nil, err
		}
	}
	id, err := s.agentID()
	if err != nil {
		return nil, nil, err
	}
	res := &Result{AgentID: id, Selectors: appraise.Selectors(selectorFacts(&s.facts, adm, cfg.PCRSelectors), cfg.PCRSelectors),
		Facts: &s.facts, Admission: adm, FastPath: s.fast}
	if cfg.Issuer == nil || (s.fast && !cfg.Issuer.Renew(s.akNotAfter)) {
		return nil, res, nil
	}
	// The AK certificate is an addition to the node's identity, not a
	// condition of it: a CA that cannot certify this TPM (unknown model) or
	// fails leaves the node admitted, without a delivery; the shell logs it.
	if res.AKCertChain, err = cfg.Issuer.IssueAK(ctx, &s.facts, id); err != nil {
		res.AKCertChain, res.AKCertError = nil, err
		return nil, res, nil
	}
	reply, err := wire.Encode(wire.Delivery{Version: s.hello.Version, AKCertChain: res.AKCertChain})
	if err != nil {
		return nil, nil, err
	}
	s.result = res
	return reply, nil, nil
}

// ackStep takes the agent's acknowledgement of the delivery. The node is
// admitted whether or not the agent could keep the chain (it falls back to
// the full path next time).
func (s *Session) ackStep(msg []byte) (*Result, error) {
	if _, err := wire.DecodeAck(msg); err != nil {
		return nil, err
	}
	return s.result, nil
}

func (s *Session) agentID() (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(s.cfg.TrustDomain, "spire", "agent", "tpm", s.facts.EKHash)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("agent ID: %w", err)
	}
	return id, nil
}

// verifyQuotes checks one quote per selected bank, bound to this session,
// over exactly the selected PCRs, signed strongly enough, and from one boot.
func (s *Session) verifyQuotes(ev *wire.Evidence) error {
	values, err := ev.Values()
	if err != nil {
		return err
	}
	extra := wire.QuoteExtraData(s.serverNonce, s.hello.Nonce, s.helloRaw)
	// The counters are facts (reboot tracking, rollback refusals) only if
	// the AK is in the endorsement hierarchy, where the TPM does not
	// obfuscate them; each quote's signed qualifiedSigner must say so.
	akQN, err := verify.EndorsementQualifiedName(s.ak.Name, s.hello.AK.CreateData)
	if err != nil {
		return err
	}
	s.facts.PCRs = pcrs.Values{}
	for _, sel := range s.cfg.Selections {
		bank, want, err := wire.SelectionBank(sel)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(ev.Quotes, func(q wire.Quote) bool { return q.Bank == sel.Bank })
		if i < 0 {
			return reject(ReasonQuoteMissing, "no quote over bank %s, which the policy requires", sel.Bank)
		}
		q := ev.Quotes[i]
		facts, err := verify.VerifyQuote(s.ak.Public, verify.Quote{Attest: q.Attest, Signature: q.Signature}, extra, values)
		if err != nil {
			return fmt.Errorf("quote over bank %s: %w", sel.Bank, err)
		}
		if err := verify.CheckSelection(facts, bank, want); err != nil {
			return err
		}
		if err := verify.CheckAKHierarchy(akQN, facts.QualifiedSigner); err != nil {
			return fmt.Errorf("quote over bank %s: %w", sel.Bank, err)
		}
		if err := appraise.CheckQuoteStrength(facts.Weak); err != nil {
			return &verify.Error{Reason: ReasonQuoteWeak, Err: fmt.Errorf("quote over bank %s: %w", sel.Bank, err)}
		}
		if len(s.facts.Quotes) > 0 {
			// Reboot tracking reads one set of counters: quotes of one
			// answer come from one boot, so they must agree.
			f0 := s.facts.Quotes[0]
			if f0.ResetCount != facts.ResetCount || f0.RestartCount != facts.RestartCount {
				return reject(ReasonQuoteCounters, "quote over bank %s has reset/restart count %d/%d, quote over %s %d/%d",
					sel.Bank, facts.ResetCount, facts.RestartCount, f0.Bank, f0.ResetCount, f0.RestartCount)
			}
		}
		s.facts.Quotes = append(s.facts.Quotes, *facts)
		for _, idx := range want {
			v, _ := values.Get(bank, idx)
			s.facts.PCRs.Set(bank, idx, v)
		}
	}
	return nil
}

// verifyEventLog parses the log, replays it to the quoted PCRs, and reads
// the Secure Boot state from PCR7 by the firmware profile.
func (s *Session) verifyEventLog(ev *wire.Evidence) error {
	switch {
	case len(ev.EventLog) == 0 && s.cfg.RequireEventLog:
		return reject(ReasonEventLogMissing, "no event log, and require_event_log is on")
	case len(ev.EventLog) == 0:
		return nil
	}
	log, err := eventlog.Parse(ev.EventLog)
	if err != nil {
		return &verify.Error{Reason: ReasonEventLog, Err: fmt.Errorf("event log: %w", err)}
	}
	replayed, err := eventlog.VerifyAgainst(log, s.facts.PCRs)
	switch {
	case errors.Is(err, eventlog.ErrEventTampered):
		return &verify.Error{Reason: ReasonEventLogTampered, Err: fmt.Errorf("event log: %w", err)}
	case errors.As(err, new(*eventlog.MismatchError)):
		// The error names each PCR and the event from which it differs.
		return &verify.Error{Reason: ReasonEventLog, Err: err}
	case err != nil:
		return &verify.Error{Reason: ReasonEventLog, Err: fmt.Errorf("event log does not replay to the quoted PCRs: %w", err)}
	}
	// A quoted value the log does not explain is as bad as one it
	// contradicts: the operator asked for PCRs whose history we must see.
	if len(replayed.UncheckedBanks) > 0 {
		return reject(ReasonEventLog, "the event log has no digests for quoted bank(s) %v, so it cannot explain them", replayed.UncheckedBanks)
	}
	for bank, idx := range replayed.Unexplained {
		if len(idx) > 0 {
			return reject(ReasonEventLog, "quoted %s PCR(s) %v are not at their reset value but the event log never extends them", bank, idx)
		}
	}
	// The Secure Boot selector comes only from a PCR7 that follows the
	// firmware profile; a PCR7 that contradicts it is refused, never read
	// as "unknown", because only an edited log or an extra extend after
	// boot produces one.
	sb, err := eventlog.VerifiedSecureBoot(log, replayed)
	switch {
	case errors.Is(err, eventlog.ErrEventTampered):
		return &verify.Error{Reason: ReasonEventLogTampered, Err: fmt.Errorf("event log: %w", err)}
	case err != nil:
		return &verify.Error{Reason: ReasonEventLogPCR7, Err: fmt.Errorf("event log: %w", err)}
	}
	s.facts.Log, s.facts.Replayed, s.facts.SecureBoot = log, replayed, sb
	return nil
}
