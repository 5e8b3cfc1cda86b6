// Package session runs the server side of one protocol v1 attestation:
// Start checks a hello and produces the challenge, Finish checks the
// evidence and produces the agent's identity. It holds no connection and no
// database; the plugin shell moves bytes and maps errors to gRPC codes.
package session

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/google/go-attestation/attest"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// Policy is the server plugin's configuration, already parsed.
type Policy struct {
	TrustDomain spiffeid.TrustDomain
	EKPolicy    appraise.EKPolicy
	EKTrust     *verify.EKTrust    // nil when the policy needs none
	Allowlist   appraise.Allowlist // nil when the policy needs none
	// Selections are the banks and PCRs every agent must quote.
	Selections      []wire.Selection
	RequireEventLog bool
	PCRSelectors    bool
	MaxHello        int
	MaxEvidence     int

	// Now and Rand default to time.Now and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
}

// Reasons the session itself rejects for (verify and eventlog have theirs).
const (
	ReasonEKMalformed     verify.Reason = "ek_malformed"
	ReasonEKMismatch      verify.Reason = "ek_mismatch"
	ReasonEKNotAdmitted   verify.Reason = "ek_not_admitted"
	ReasonQuoteMissing    verify.Reason = "quote_missing"
	ReasonEventLogMissing verify.Reason = "eventlog_missing"
	ReasonEventLog        verify.Reason = "eventlog_invalid"
	// ReasonEventLogTampered: a record's digest is not the hash of its data
	// where the firmware profile defines it so (eventlog.ErrEventTampered).
	ReasonEventLogTampered verify.Reason = "eventlog_tampered"
	// ReasonEventLogPCR7: PCR7 does not follow the firmware profile's
	// grammar (eventlog.ErrPCR7Grammar, a conflicting or invalid SecureBoot).
	ReasonEventLogPCR7    verify.Reason = "eventlog_pcr7"
	ReasonAKCreation      verify.Reason = "ak_creation"
	ReasonQuoteWeak       verify.Reason = "quote_weak"
	ReasonActivationProof verify.Reason = "activation_proof"
)

func reject(r verify.Reason, format string, args ...any) error {
	return &verify.Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

// Session is one attestation in progress.
type Session struct {
	policy      *Policy
	hello       *wire.Hello
	helloRaw    []byte
	challenge   []byte
	secret      []byte
	serverNonce []byte
	ak          *verify.AKPublic
	facts       appraise.Facts
}

// Result is what an admitted agent gets.
type Result struct {
	AgentID   spiffeid.ID
	Selectors []string
	Facts     appraise.Facts
}

// Start checks the hello: the EK against ek_policy, the AK's attributes and
// creation data, and answers with a challenge that carries
// TPM2_MakeCredential output for (EK public, AK name).
func Start(p *Policy, helloRaw []byte) (*Session, []byte, error) {
	hello, err := wire.DecodeHello(helloRaw, p.MaxHello)
	if err != nil {
		return nil, nil, err
	}
	s := &Session{policy: p, hello: hello, helloRaw: helloRaw}

	ekPub, err := x509.ParsePKIXPublicKey(hello.EK.Public)
	if err != nil {
		return nil, nil, reject(ReasonEKMalformed, "EK public key is not PKIX DER: %v", err)
	}
	ekHash, err := verify.EKHash(ekPub)
	if err != nil {
		return nil, nil, reject(ReasonEKMalformed, "EK public key: %v", err)
	}
	s.facts.EKHash = ekHash
	if err := s.admitEK(ekPub); err != nil {
		return nil, nil, err
	}

	if s.ak, err = verify.ParseAKPublic(hello.AK.Public); err != nil {
		return nil, nil, err
	}
	if err := verify.CheckAKAttributes(s.ak); err != nil {
		return nil, nil, err
	}
	if err := verify.CheckAKStrength(s.ak); err != nil {
		return nil, nil, err
	}
	params := attest.ActivationParameters{
		EK: ekPub,
		AK: attest.AttestationParameters{
			Public:            hello.AK.Public,
			CreateData:        hello.AK.CreateData,
			CreateAttestation: hello.AK.CreateAttestation,
			CreateSignature:   hello.AK.CreateSignature,
		},
		Rand: p.rand(),
	}
	// Generate runs go-attestation's CheckAKParameters (creation data digest,
	// TPM_GENERATED creation attestation signed by the AK, name match) before
	// TPM2_MakeCredential.
	secret, cred, err := params.Generate()
	if err != nil {
		return nil, nil, &verify.Error{Reason: ReasonAKCreation, Err: err}
	}
	s.secret = secret

	s.serverNonce = make([]byte, wire.NonceSize)
	if _, err := io.ReadFull(p.rand(), s.serverNonce); err != nil {
		return nil, nil, fmt.Errorf("server nonce: %w", err)
	}
	ch := wire.Challenge{
		Version:          wire.Version,
		Nonce:            s.serverNonce,
		Selections:       p.Selections,
		EventLogRequired: p.RequireEventLog,
		Credential:       &wire.Credential{Blob: cred.Credential, Secret: cred.Secret},
	}
	if s.challenge, err = wire.Encode(ch); err != nil {
		return nil, nil, err
	}
	return s, s.challenge, nil
}

// admitEK checks the EK certificate (when there is one) and the allowlist
// as ek_policy says, and records the certificate's TCG attributes.
func (s *Session) admitEK(ekPub crypto.PublicKey) error {
	p, hello := s.policy, s.hello
	certErr := errors.New("no EK certificate")
	if len(hello.EK.Certificate) > 0 {
		cert, err := verify.ParseEKCert(hello.EK.Certificate)
		if err != nil {
			return err
		}
		if !publicKeysEqual(cert.PublicKey, ekPub) {
			return reject(ReasonEKMismatch, "EK certificate is for another key than the EK public key sent")
		}
		if p.EKPolicy.NeedsTrust() {
			var extra []*x509.Certificate
			for i, der := range hello.EK.Intermediates {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					return reject(ReasonEKMalformed, "EK intermediate %d: %v", i, err)
				}
				extra = append(extra, c)
			}
			facts, err := verify.VerifyEKCert(cert, extra, p.EKTrust, p.now())
			var ve *verify.Error
			if errors.As(err, &ve) && ve.Reason == verify.ReasonEKCertProfile {
				// A trusted CA's certificate for a key that is not an EK:
				// whoever holds that key could answer the credential in
				// software. Hostile, so refused outright: no allowlist
				// rescues it, and no challenge is made.
				return &verify.Error{Reason: verify.ReasonEKCertProfile, Err: fmt.Errorf("EK %s: %w", s.facts.EKHash, ve.Err)}
			}
			certErr = err
			if err == nil {
				s.facts.Manufacturer, s.facts.Model, s.facts.Version, s.facts.EKIssuer = facts.Manufacturer, facts.Model, facts.Version, facts.Issuer
				s.facts.EKQuirk = facts.Quirk
			}
		}
	}
	allowlisted := p.Allowlist != nil && p.Allowlist.Contains(s.facts.EKHash)
	if err := appraise.AdmitEK(p.EKPolicy, certErr, allowlisted); err != nil {
		return &verify.Error{Reason: ReasonEKNotAdmitted, Err: fmt.Errorf("EK %s: %w", s.facts.EKHash, err)}
	}
	return nil
}

// Finish checks the evidence: the activation proof, one quote per selected
// bank bound to this session, the PCR values and the event log.
func (s *Session) Finish(evidenceRaw []byte) (*Result, error) {
	p := s.policy
	ev, err := wire.DecodeEvidence(evidenceRaw, p.MaxEvidence)
	if err != nil {
		return nil, err
	}
	if !wire.CheckActivationProof(ev.ActivationProof, s.secret, s.helloRaw, s.challenge) {
		return nil, &verify.Error{Reason: ReasonActivationProof, Err: errors.New("activation proof does not match: the AK is not in the TPM that holds this EK")}
	}
	values, err := ev.Values()
	if err != nil {
		return nil, err
	}
	extra := wire.QuoteExtraData(s.serverNonce, s.hello.Nonce, s.helloRaw)
	quoted := pcrs.Values{}
	s.facts.PCRs = map[string]string{}
	for _, sel := range p.Selections {
		bank, want, err := wire.SelectionBank(sel)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(ev.Quotes, func(q wire.Quote) bool { return q.Bank == sel.Bank })
		if i < 0 {
			return nil, reject(ReasonQuoteMissing, "no quote over bank %s, which the policy requires", sel.Bank)
		}
		q := ev.Quotes[i]
		facts, err := verify.VerifyQuote(s.ak.Public, verify.Quote{Attest: q.Attest, Signature: q.Signature}, extra, values)
		if err != nil {
			return nil, fmt.Errorf("quote over bank %s: %w", sel.Bank, err)
		}
		if err := verify.CheckSelection(facts, bank, want); err != nil {
			return nil, err
		}
		if err := appraise.CheckQuoteStrength(facts.Weak); err != nil {
			return nil, &verify.Error{Reason: ReasonQuoteWeak, Err: fmt.Errorf("quote over bank %s: %w", sel.Bank, err)}
		}
		for _, idx := range want {
			v, _ := values.Get(bank, idx)
			quoted.Set(bank, idx, v)
			s.facts.PCRs[bank.String()+":"+strconv.Itoa(idx)] = hex.EncodeToString(v)
		}
	}

	switch {
	case len(ev.EventLog) == 0 && p.RequireEventLog:
		return nil, reject(ReasonEventLogMissing, "no event log, and require_event_log is on")
	case len(ev.EventLog) > 0:
		log, err := eventlog.Parse(ev.EventLog)
		if err != nil {
			return nil, &verify.Error{Reason: ReasonEventLog, Err: fmt.Errorf("event log: %w", err)}
		}
		replayed, err := eventlog.VerifyAgainst(log, quoted)
		switch {
		case errors.Is(err, eventlog.ErrEventTampered):
			return nil, &verify.Error{Reason: ReasonEventLogTampered, Err: fmt.Errorf("event log: %w", err)}
		case err != nil:
			return nil, &verify.Error{Reason: ReasonEventLog, Err: fmt.Errorf("event log does not replay to the quoted PCRs: %w", err)}
		}
		// A quoted value the log does not explain is as bad as one it
		// contradicts: the operator asked for PCRs whose history we must see.
		if len(replayed.UncheckedBanks) > 0 {
			return nil, reject(ReasonEventLog, "the event log has no digests for quoted bank(s) %v, so it cannot explain them", replayed.UncheckedBanks)
		}
		for bank, idx := range replayed.Unexplained {
			if len(idx) > 0 {
				return nil, reject(ReasonEventLog, "quoted %s PCR(s) %v are not at their reset value but the event log never extends them", bank, idx)
			}
		}
		// The Secure Boot selector comes only from a PCR7 that follows the
		// firmware profile; a PCR7 that contradicts it is refused, never
		// read as "unknown", because only an edited log or an extra extend
		// after boot produces one.
		sb, err := eventlog.VerifiedSecureBoot(log, replayed)
		switch {
		case errors.Is(err, eventlog.ErrEventTampered):
			return nil, &verify.Error{Reason: ReasonEventLogTampered, Err: fmt.Errorf("event log: %w", err)}
		case err != nil:
			return nil, &verify.Error{Reason: ReasonEventLogPCR7, Err: fmt.Errorf("event log: %w", err)}
		case sb.Mode != eventlog.SecureBootUnknown:
			s.facts.SecureBoot = sb.Mode.String()
		}
	}

	id, err := spiffeid.FromSegments(p.TrustDomain, "spire", "agent", "tpm", s.facts.EKHash)
	if err != nil {
		return nil, fmt.Errorf("agent ID: %w", err)
	}
	return &Result{AgentID: id, Selectors: appraise.Selectors(s.facts, p.PCRSelectors), Facts: s.facts}, nil
}

func (p *Policy) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Policy) rand() io.Reader {
	if p.Rand != nil {
		return p.Rand
	}
	return rand.Reader
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
