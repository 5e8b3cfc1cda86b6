// Package session runs the server side of one attestation (protocol
// version 1 or 2, as the hello says; docs/protocol.md) as a sequence of
// steps, hello -> challenge -> evidence -> verdict, each fed one agent
// message by Next. It holds no connection and no database: it
// talks to small injected ports (EK admission, the node store) and takes a
// context that reaches every one of them, so a cancelled stream stops the
// work. The plugin shell only relays messages and maps errors to gRPC codes.
package session

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/appraise"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// EKAdmission decides whether an EK may attest at all (certificate chain
// and TCG profile, allowlist), before any challenge is made.
type EKAdmission interface {
	// AdmitEK returns the certificate's facts when a certificate was
	// verified (nil when the EK was admitted without one), or a
	// *verify.Error naming why the EK is refused.
	AdmitEK(ctx context.Context, ek *EKClaim) (*verify.EKFacts, error)
}

// Nodes is the node store's step: after the evidence is verified, it
// decides with the operator's state (enrollment, revocation, reboot
// counters, reference profiles) and records the attempt.
type Nodes interface {
	// Admit decides on a verified node and records it, all in one
	// transaction; a refusal is a *verify.Error.
	Admit(ctx context.Context, f *Facts) (*Admission, error)
	// Refused records an attempt that ended in err, at any step.
	Refused(ctx context.Context, f *Facts, err error)
}

// AKIssuer is tpmid's CA as the session uses it: it certifies an admitted
// node's AK, and checks the certificate an agent presents for the fast path.
type AKIssuer interface {
	// IssueAK returns the AK certificate chain (leaf first, DER) for a node
	// that was just admitted with full TPM evidence.
	IssueAK(ctx context.Context, f *Facts, id spiffeid.ID) ([][]byte, error)
	// CheckAK reports whether chain is a certificate this CA issued,
	// unexpired at now, for exactly this AK public key, this EK and this
	// agent ID; it returns the leaf's expiry. Any error means the full path.
	CheckAK(ctx context.Context, chain [][]byte, f *Facts, ak crypto.PublicKey, id spiffeid.ID) (notAfter time.Time, err error)
	// Renew reports whether a certificate expiring at notAfter should be
	// replaced now.
	Renew(notAfter time.Time) bool
}

// Admission is what the node store adds to an admitted node's identity.
type Admission struct {
	Hostname string   // the enrolled or bound hostname; "" when not bound
	Groups   []string // the host's groups
	Profile  string   // the profile that allowed the boot, "" when none applied
}

// Config is one parsed server configuration with its ports.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	EK          EKAdmission
	// Nodes is nil when no store is configured: every verified node is
	// admitted as it is, nothing is recorded.
	Nodes Nodes
	// Issuer is nil when no CA is configured: no delivery step, no fast path.
	Issuer AKIssuer
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
	ReasonEventLogPCR7 verify.Reason = "eventlog_pcr7"
	// ReasonAKCreation: a step-ca client's AK creation data or creation
	// attestation does not check (tpmid ca serve, with go-attestation);
	// the plugin's sessions check no creation attestation.
	ReasonAKCreation verify.Reason = "ak_creation"
	// ReasonAKHierarchy: the AK is not a child of an endorsement-hierarchy
	// primary key, so its quotes' counters are obfuscated.
	ReasonAKHierarchy     verify.Reason = verify.ReasonAKHierarchy
	ReasonQuoteWeak       verify.Reason = "quote_weak"
	ReasonActivationProof verify.Reason = "activation_proof"
	// ReasonQuoteCounters: the quotes of one answer disagree on the TPM's
	// reset or restart count or clock (they come from one boot).
	ReasonQuoteCounters verify.Reason = "quote_counters"
)

// ErrDone: Next was called after the session ended.
var ErrDone = errors.New("attestation session already ended")

func reject(r verify.Reason, format string, args ...any) error {
	return &verify.Error{Reason: r, Err: fmt.Errorf(format, args...)}
}

// Facts is everything verification established about a node, kept typed
// for the node store, the CA and the logs. Fields fill in step by step.
type Facts struct {
	EKHash   string           // lowercase hex SHA-256 of the EK's PKIX DER
	EKPublic []byte           // PKIX DER
	EKCert   []byte           // DER as sent; nil without one
	EK       *verify.EKFacts  // the verified certificate's facts; nil when admitted without
	Hostname string           // claimed by the agent; not verified
	AKName   []byte           // TPM Name of the AK
	AKPublic crypto.PublicKey // the AK's public key
	Quotes   []verify.QuoteFacts
	PCRs     pcrs.Values   // the quoted values
	Log      *eventlog.Log // nil when no log was sent
	Replayed *eventlog.Replayed
	// SecureBoot is the verified Secure Boot state; nil without a log.
	SecureBoot *eventlog.SecureBootState
}

// Clock returns the reset and restart counts, clock and safe flag of the
// quotes (Finish checked that they agree).
func (f *Facts) Clock() (reset, restart uint32, clock uint64, safe bool) {
	if len(f.Quotes) == 0 {
		return 0, 0, 0, false
	}
	q := f.Quotes[0]
	return q.ResetCount, q.RestartCount, q.Clock, q.Safe
}

// Result is what an admitted agent gets.
type Result struct {
	AgentID   spiffeid.ID
	Selectors []string
	Facts     *Facts
	Admission *Admission // nil without a node store
	// FastPath: the AK certificate stood in for MakeCredential.
	FastPath bool
	// AKCertChain is the chain delivered to the agent, nil when none was.
	AKCertChain [][]byte
	// AKCertError says why no AK certificate was issued, if one was due.
	AKCertError error
}

type stage int

const (
	awaitHello stage = iota
	awaitEvidence
	awaitAck
	done
)

// Session is one attestation in progress. It is not safe for concurrent use.
type Session struct {
	cfg   *Config
	stage stage
	facts Facts

	hello       *wire.Hello
	helloRaw    []byte
	challenge   []byte
	secret      []byte
	serverNonce []byte
	ak          *verify.AKPublic
	// fast: the hello's AK certificate stood in for TPM2_MakeCredential.
	fast       bool
	akNotAfter time.Time
	result     *Result // held while the delivery is acknowledged
}

// New starts a session under cfg.
func New(cfg *Config) *Session { return &Session{cfg: cfg} }

// Next feeds the agent's next message to the current step. It returns
// either the server's next message (reply) or, at the end, the verdict
// (res). Any error ends the session; with a node store, the attempt is
// recorded as refused.
func (s *Session) Next(ctx context.Context, msg []byte) (reply []byte, res *Result, err error) {
	switch s.stage {
	case awaitHello:
		reply, err = s.helloStep(ctx, msg)
		s.stage = awaitEvidence
	case awaitEvidence:
		reply, res, err = s.evidenceStep(ctx, msg)
		s.stage = done
		if reply != nil {
			s.stage = awaitAck
		}
	case awaitAck:
		res, err = s.ackStep(msg)
		s.stage = done
	default:
		return nil, nil, ErrDone
	}
	if err != nil {
		s.End(ctx, err)
		return nil, nil, err
	}
	return reply, res, nil
}

// End ends the session with err: with a node store, the attempt is
// recorded as refused (once the EK hash is known). Next calls it on its
// own errors; the shell calls it when the agent stops answering between
// steps. The record must not be lost to the agent's cancelled stream, so
// it has its own short deadline.
func (s *Session) End(ctx context.Context, err error) {
	s.stage = done
	if s.cfg.Nodes == nil || s.facts.EKHash == "" {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s.cfg.Nodes.Refused(rctx, &s.facts, err)
}

// Facts returns what the session has established so far.
func (s *Session) Facts() *Facts { return &s.facts }

// selectorFacts turns the verified facts and the admission into the input
// of appraise.Selectors. The PCR values are formatted only when pcr
// selectors are on (withPCRs): otherwise nothing reads them.
func selectorFacts(f *Facts, a *Admission, withPCRs bool) appraise.Facts {
	sf := appraise.Facts{EKHash: f.EKHash}
	if f.EK != nil {
		sf.Manufacturer, sf.Model, sf.Version, sf.EKIssuer, sf.EKQuirk = f.EK.Manufacturer, f.EK.Model, f.EK.Version, f.EK.Issuer, f.EK.Quirk
		for _, q := range f.EK.ChainQuirks {
			sf.EKChainQuirks = append(sf.EKChainQuirks, string(q))
		}
	}
	if f.SecureBoot != nil && f.SecureBoot.Mode != eventlog.SecureBootUnknown {
		sf.SecureBoot = f.SecureBoot.Mode.String()
	}
	if withPCRs {
		sf.PCRs = map[string]string{}
		for _, bank := range f.PCRs.Banks() {
			for _, idx := range f.PCRs.Indices(bank) {
				v, _ := f.PCRs.Get(bank, idx)
				sf.PCRs[bank.String()+":"+strconv.Itoa(idx)] = hex.EncodeToString(v)
			}
		}
	}
	if a != nil {
		sf.Host, sf.Groups, sf.Profile = a.Hostname, a.Groups, a.Profile
	}
	return sf
}

func (c *Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Config) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}
