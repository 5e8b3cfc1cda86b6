// Package wire defines tpmid's node attestation protocol, versions 1 and 2:
// the messages the agent and server plugins exchange over SPIRE's
// attestation stream, their size bounds, and the bindings that tie a
// session together (quote extraData and the activation proof).
//
// Hello, challenge, delivery and acknowledgement are JSON in both versions;
// []byte fields are base64 (encoding/json's default). Evidence is JSON in
// version 1 and a binary envelope in version 2 (evidence2.go), which
// carries the event log as raw bytes. The hello's version selects the
// protocol of the whole session (docs/protocol.md). Every decoder checks
// the size bound before parsing, rejects unknown fields and versions, and
// checks the length of every fixed-size field, so the verifier never works
// on a message it did not fully understand.
package wire

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// Protocol versions. Servers speak both (they upgrade first, as SPIRE
// does); agents send Version.
const (
	Version1 = 1
	Version2 = 2
	// Version is the version agents speak.
	Version = Version2
)

// Supported reports whether v is a protocol version this package speaks.
func Supported(v int) bool { return v == Version1 || v == Version2 }

// MaxTransported is the largest protocol message that can reach the server
// plugin at all: 4 MiB (4194304 bytes), gRPC's default receive limit, which
// both spire-server's Agent API (SPIRE v1.13.3 sets no other) and the
// plugin's own gRPC server (spire-plugin-sdk pluginmain, go-plugin's
// DefaultGRPCServer) apply, less the 5 bytes of protobuf framing (a 1-byte
// field tag and a 4-byte length) of the bytes field that carries the
// message (evidence travels so on both hops; the hello shares SPIRE's first
// message with the agent's CSR, so it has a little less). A larger message
// is refused by gRPC (ResourceExhausted) before tpmid sees it, so no
// configured bound may exceed this.
const MaxTransported = 4<<20 - 5

// Default size bounds, overridable in the server config.
const (
	DefaultMaxHello = 64 << 10
	// DefaultMaxEvidence stays 64 KiB under MaxTransported, so that
	// evidence just over it still arrives and is refused with our own
	// message naming the size and the limit. It holds the largest event
	// log the server parses (2 MiB, eventlog.DefaultLimits.MaxLogSize,
	// about 2.7 MiB in version 1's base64; 2 MiB plus at most 37 KB of
	// header in the version 2 envelope) with room for the quotes and PCR
	// values.
	DefaultMaxEvidence  = 4<<20 - 64<<10
	DefaultMaxChallenge = 16 << 10
)

// Field bounds.
const (
	NonceSize            = 32
	maxHostname          = 253
	maxCert              = 8 << 10
	maxIntermediates     = 8
	maxAKField           = 4 << 10
	maxCredentialField   = 1 << 10
	maxQuotes            = 8
	maxQuoteAttest       = 2 << 10
	maxQuoteSignature    = 1 << 10
	maxSelectionPCRCount = pcrs.MaxIndex + 1
)

// Sentinel errors; callers map them to gRPC InvalidArgument.
var (
	ErrTooLarge  = errors.New("message too large")
	ErrMalformed = errors.New("malformed message")
	ErrVersion   = errors.New("unsupported protocol version")
)

// sizeError names the message that is over its bound; it is ErrTooLarge.
type sizeError struct {
	message     string
	size, limit int
}

func (e *sizeError) Error() string {
	return fmt.Sprintf("%s too large (%d bytes, limit %d)", e.message, e.size, e.limit)
}

func (e *sizeError) Is(target error) bool { return target == ErrTooLarge }

// EK carries the endorsement key.
type EK struct {
	// Certificate is the EK certificate DER, trimmed of NV padding; empty
	// when the TPM has none (then only an allowlist can admit it).
	Certificate []byte `json:"certificate,omitempty"`
	// Intermediates the agent found (e.g. in NV), DER.
	Intermediates [][]byte `json:"intermediates,omitempty"`
	// Public is the EK public key, PKIX DER. Its SHA-256 names the agent.
	Public []byte `json:"public"`
}

// AK carries the attestation key's TPM2_Create outputs.
type AK struct {
	Public     []byte `json:"public"`      // TPMT_PUBLIC
	CreateData []byte `json:"create_data"` // TPMS_CREATION_DATA: its parent's Name is checked (ak_hierarchy)
	// CreateAttestation and CreateSignature are TPM2_CertifyCreation's
	// TPMS_ATTEST and TPMT_SIGNATURE, which agents before 2026-11-26 sent.
	// They are bounded and otherwise ignored: signed by the AK itself, they
	// prove nothing that TPM2_ActivateCredential does not prove better
	// (docs/verification.md), and agents no longer run TPM2_CertifyCreation.
	CreateAttestation []byte `json:"create_attestation,omitempty"`
	CreateSignature   []byte `json:"create_signature,omitempty"`
}

// Hello is the agent's first message.
type Hello struct {
	Version     int      `json:"version"`
	EK          EK       `json:"ek"`
	AK          AK       `json:"ak"`
	AKCertChain [][]byte `json:"ak_cert_chain,omitempty"`
	Nonce       []byte   `json:"nonce"`
	Hostname    string   `json:"hostname"`
}

// Selection names the PCRs of one bank the server wants quoted.
type Selection struct {
	Bank string `json:"bank"`
	PCRs []int  `json:"pcrs"`
}

// Credential is the output of TPM2_MakeCredential for (EK public, AK name).
type Credential struct {
	Blob   []byte `json:"blob"`   // TPM2B_ID_OBJECT contents
	Secret []byte `json:"secret"` // TPM2B_ENCRYPTED_SECRET contents
}

// Challenge is the server's answer to a hello.
type Challenge struct {
	Version          int         `json:"version"`
	Nonce            []byte      `json:"nonce"`
	Selections       []Selection `json:"selections"`
	EventLogRequired bool        `json:"event_log_required"`
	Credential       *Credential `json:"credential,omitempty"`
}

// Quote is one TPM2_Quote over one bank.
type Quote struct {
	Bank      string `json:"bank"`
	Attest    []byte `json:"attest"`    // TPMS_ATTEST
	Signature []byte `json:"signature"` // TPMT_SIGNATURE
}

// Evidence is the agent's answer to a challenge.
type Evidence struct {
	Version int     `json:"version"`
	Quotes  []Quote `json:"quotes"`
	// PCRs holds the values the quotes cover: bank name -> index -> value.
	PCRs     map[string]map[int][]byte `json:"pcrs"`
	EventLog []byte                    `json:"event_log,omitempty"`
	// ActivationProof is HMAC-SHA256(activated secret, TranscriptHash).
	ActivationProof []byte `json:"activation_proof,omitempty"`
}

// Encode marshals any protocol message.
func Encode(v any) ([]byte, error) { return json.Marshal(v) }

// EncodeHello encodes a hello; DecodeHello is its inverse.
func EncodeHello(h *Hello) ([]byte, error) { return Encode(h) }

// EncodeEvidence encodes evidence in its version's encoding: JSON for
// version 1, the binary envelope from version 2 on; DecodeEvidence is its
// inverse. The encoding is the protocol's business: callers build an
// Evidence and never marshal it themselves.
func EncodeEvidence(e *Evidence) ([]byte, error) {
	if e.Version >= Version2 {
		return encodeEvidenceBinary(e)
	}
	return Encode(e)
}

func decode(message string, b []byte, max int, v any) error {
	if max > 0 && len(b) > max {
		return &sizeError{message: message, size: len(b), limit: max}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the message", ErrMalformed)
	}
	return nil
}

func checkVersion(message string, v int) error {
	if !Supported(v) {
		return fmt.Errorf("%s has %w %d (versions %d and %d are spoken here)", message, ErrVersion, v, Version1, Version2)
	}
	return nil
}

// CheckSessionVersion refuses a message whose version is not the session's
// (the hello's): a session speaks one version from start to end, so that
// nothing of one encoding is ever read under the other's rules.
func CheckSessionVersion(message string, got, session int) error {
	if got != session {
		return fmt.Errorf("%s has %w %d in a version %d session", message, ErrVersion, got, session)
	}
	return nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

func checkLen(name string, b []byte, min, max int) error {
	if len(b) < min || len(b) > max {
		if min == max {
			return malformed("%s is %d bytes, want %d", name, len(b), min)
		}
		return malformed("%s is %d bytes, want %d..%d", name, len(b), min, max)
	}
	return nil
}

// DecodeHello parses and checks a hello of at most max bytes.
func DecodeHello(b []byte, max int) (*Hello, error) {
	var h Hello
	if err := decode("hello", b, max, &h); err != nil {
		return nil, err
	}
	if err := checkVersion("hello", h.Version); err != nil {
		return nil, err
	}
	checks := []error{
		checkLen("agent nonce", h.Nonce, NonceSize, NonceSize),
		checkLen("EK public key", h.EK.Public, 1, maxCert),
		checkLen("EK certificate", h.EK.Certificate, 0, maxCert),
		checkLen("AK public", h.AK.Public, 1, maxAKField),
		checkLen("AK creation data", h.AK.CreateData, 1, maxAKField),
		checkLen("AK creation attestation", h.AK.CreateAttestation, 0, maxAKField),
		checkLen("AK creation signature", h.AK.CreateSignature, 0, maxAKField),
	}
	if len(h.Hostname) > maxHostname {
		checks = append(checks, malformed("hostname is %d bytes, limit %d", len(h.Hostname), maxHostname))
	}
	if len(h.EK.Intermediates) > maxIntermediates {
		checks = append(checks, malformed("%d EK intermediates, limit %d", len(h.EK.Intermediates), maxIntermediates))
	}
	for i, c := range h.EK.Intermediates {
		checks = append(checks, checkLen(fmt.Sprintf("EK intermediate %d", i), c, 1, maxCert))
	}
	if len(h.AKCertChain) > maxIntermediates {
		checks = append(checks, malformed("%d AK certificates, limit %d", len(h.AKCertChain), maxIntermediates))
	}
	for i, c := range h.AKCertChain {
		checks = append(checks, checkLen(fmt.Sprintf("AK certificate %d", i), c, 1, maxCert))
	}
	if err := errors.Join(checks...); err != nil {
		return nil, err
	}
	return &h, nil
}

// DecodeChallenge parses and checks a challenge.
func DecodeChallenge(b []byte) (*Challenge, error) {
	var c Challenge
	if err := decode("challenge", b, DefaultMaxChallenge, &c); err != nil {
		return nil, err
	}
	if err := checkVersion("challenge", c.Version); err != nil {
		return nil, err
	}
	if err := checkLen("server nonce", c.Nonce, NonceSize, NonceSize); err != nil {
		return nil, err
	}
	if len(c.Selections) == 0 || len(c.Selections) > maxQuotes {
		return nil, malformed("%d PCR selections, want 1..%d", len(c.Selections), maxQuotes)
	}
	for _, s := range c.Selections {
		if _, err := selectionPCRs(s); err != nil {
			return nil, err
		}
	}
	if c.Credential != nil {
		if err := errors.Join(
			checkLen("credential blob", c.Credential.Blob, 1, maxCredentialField),
			checkLen("credential secret", c.Credential.Secret, 1, maxCredentialField),
		); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

// SelectionBank parses a selection's bank and checks its indices.
func SelectionBank(s Selection) (pcrs.Alg, []int, error) {
	a, err := pcrs.ParseAlg(s.Bank)
	if err != nil {
		return 0, nil, malformed("selection: %v", err)
	}
	idx, err := selectionPCRs(s)
	return a, idx, err
}

func selectionPCRs(s Selection) ([]int, error) {
	if _, err := pcrs.ParseAlg(s.Bank); err != nil {
		return nil, malformed("selection: %v", err)
	}
	if len(s.PCRs) == 0 || len(s.PCRs) > maxSelectionPCRCount {
		return nil, malformed("selection of bank %s has %d PCRs, want 1..%d", s.Bank, len(s.PCRs), maxSelectionPCRCount)
	}
	seen := map[int]bool{}
	for _, i := range s.PCRs {
		if i < 0 || i > pcrs.MaxIndex || seen[i] {
			return nil, malformed("selection of bank %s: PCR %d out of range or repeated", s.Bank, i)
		}
		seen[i] = true
	}
	return s.PCRs, nil
}

// DecodeEvidence parses and checks evidence of at most max bytes, in
// either encoding: the version 2 envelope (which IsBinaryEvidence tells) or
// version 1 JSON. The caller must still check that the version is its
// session's (CheckSessionVersion). Byte fields of a version 2 evidence
// alias b, which must not change while the evidence is used.
func DecodeEvidence(b []byte, max int) (*Evidence, error) {
	if max > 0 && len(b) > max {
		return nil, &sizeError{message: "evidence", size: len(b), limit: max}
	}
	var e *Evidence
	if IsBinaryEvidence(b) {
		var err error
		if e, err = decodeEvidenceBinary(b); err != nil {
			return nil, err
		}
	} else {
		e = new(Evidence)
		if err := decode("evidence", b, max, e); err != nil {
			return nil, err
		}
		if e.Version != Version1 {
			if Supported(e.Version) {
				return nil, fmt.Errorf("JSON evidence has %w %d: only version 1 evidence is JSON", ErrVersion, e.Version)
			}
			return nil, checkVersion("evidence", e.Version)
		}
	}
	if err := checkEvidence(e); err != nil {
		return nil, err
	}
	return e, nil
}

// checkEvidence checks the field bounds both encodings share.
func checkEvidence(e *Evidence) error {
	if len(e.Quotes) == 0 || len(e.Quotes) > maxQuotes {
		return malformed("%d quotes, want 1..%d", len(e.Quotes), maxQuotes)
	}
	for i, q := range e.Quotes {
		if err := errors.Join(
			checkLen(fmt.Sprintf("quote %d attest", i), q.Attest, 1, maxQuoteAttest),
			checkLen(fmt.Sprintf("quote %d signature", i), q.Signature, 1, maxQuoteSignature),
		); err != nil {
			return err
		}
	}
	if _, err := e.values(false); err != nil {
		return err
	}
	if len(e.ActivationProof) != 0 {
		if err := checkLen("activation proof", e.ActivationProof, sha256.Size, sha256.Size); err != nil {
			return err
		}
	}
	return nil
}

// Values converts the evidence's PCR values, checking banks, indices and
// sizes. The values are copies: verified facts outlive the message, which a
// version 2 evidence aliases.
func (e *Evidence) Values() (pcrs.Values, error) { return e.values(true) }

func (e *Evidence) values(clone bool) (pcrs.Values, error) {
	out := pcrs.Values{}
	for name, bank := range e.PCRs {
		a, err := pcrs.ParseAlg(name)
		if err != nil {
			return nil, malformed("PCR values: %v", err)
		}
		for i, v := range bank {
			if i < 0 || i > pcrs.MaxIndex {
				return nil, malformed("PCR values: bank %s index %d out of range", name, i)
			}
			if len(v) != a.Size() {
				return nil, malformed("PCR values: bank %s PCR %d is %d bytes, want %d", name, i, len(v), a.Size())
			}
			if clone {
				v = bytes.Clone(v)
			}
			out.Set(a, i, v)
		}
	}
	return out, nil
}

// PCRsFromValues is the inverse of Evidence.Values.
func PCRsFromValues(v pcrs.Values) map[string]map[int][]byte {
	out := map[string]map[int][]byte{}
	for a, bank := range v {
		out[a.String()] = bank
	}
	return out
}

const label = "tpmid/v1"

// QuoteExtraData is the extraData every quote of a session must carry:
// SHA-256("tpmid/v1" || server nonce || agent nonce || SHA-256(hello)).
// It binds the quote to this session (both nonces: neither side alone picks
// it) and to the exact hello, hence to the EK and AK the server checked.
func QuoteExtraData(serverNonce, agentNonce, hello []byte) []byte {
	helloHash := sha256.Sum256(hello)
	h := sha256.New()
	h.Write([]byte(label))
	h.Write(serverNonce)
	h.Write(agentNonce)
	h.Write(helloHash[:])
	return h.Sum(nil)
}

// TranscriptHash hashes the exact bytes of hello and challenge, each length
// prefixed so that no two transcripts share an encoding.
func TranscriptHash(hello, challenge []byte) []byte {
	h := sha256.New()
	h.Write([]byte(label + "/transcript"))
	for _, m := range [][]byte{hello, challenge} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(m)))
		h.Write(n[:])
		h.Write(m)
	}
	return h.Sum(nil)
}

// ActivationProof proves the agent's TPM released the credential secret:
// HMAC-SHA256(secret, TranscriptHash(hello, challenge)). The secret itself
// never travels back, so a recorded proof is useless in another session.
func ActivationProof(secret, hello, challenge []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(TranscriptHash(hello, challenge))
	return m.Sum(nil)
}

// CheckActivationProof compares in constant time.
func CheckActivationProof(proof, secret, hello, challenge []byte) bool {
	return hmac.Equal(proof, ActivationProof(secret, hello, challenge))
}
