// Package softagent is a software stand-in for a TPM 2.0 and the tpmid agent
// that drives it, for load generation only (test/bench/load). Each Attester
// has its own ECC P-256 EK, certified by a test CA with a TCG-profile EK
// certificate, and its own ECDSA P-256 AK with the TPMT_PUBLIC and
// TPMS_CREATION_DATA a TPM returns from TPM2_Create. It answers the
// server's challenge as TPM2_ActivateCredential
// (softtpm.ActivateCredentialECC, one ECDH) and TPM2_Quote would, over PCR
// values replayed from a real event log, and sends that log.
//
// Security caveat: the server cannot tell these attesters from TPMs (nothing
// it checks tells a key in a TPM from a key in memory; only the EK
// certificate's issuer vouches for that, and here it is a test CA the
// harness made). That is right for measuring the server's cost and wrong for
// anything else: never put the test CA in a real ek_ca_bundle.
package softagent

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/tpmid/tpmid/internal/softtpm"
	"github.com/tpmid/tpmid/internal/testca"
	"github.com/tpmid/tpmid/pkg/common/eventlog"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpmname"
	"github.com/tpmid/tpmid/pkg/common/wire"
)

// Boot is the measured boot every attester reports: one event log and the
// PCR values it replays to.
type Boot struct {
	EventLog []byte
	PCRs     pcrs.Values

	mu      sync.Mutex
	digests map[string][]byte // selection -> PCR digest, memoised
}

// NewBoot parses and replays log. The quotes then cover exactly what the log
// explains, which is what the server checks.
func NewBoot(log []byte) (*Boot, error) {
	l, err := eventlog.Parse(log)
	if err != nil {
		return nil, fmt.Errorf("softagent: event log: %w", err)
	}
	v, err := l.Replay()
	if err != nil {
		return nil, fmt.Errorf("softagent: replaying the event log: %w", err)
	}
	return &Boot{EventLog: log, PCRs: v, digests: map[string][]byte{}}, nil
}

// value is PCR idx of bank as the replay left it, or its reset value (all
// zeros) when the log never extends it.
func (b *Boot) value(bank pcrs.Alg, idx int) []byte {
	if v, ok := b.PCRs.Get(bank, idx); ok {
		return v
	}
	return make([]byte, bank.Size())
}

// quoteDigest is TPM2_Quote's pcrDigest for the selection: SHA-256 (the AK's
// signing hash) over the selected values in index order. It is the same for
// every attester, so it is computed once per selection.
func (b *Boot) quoteDigest(bank pcrs.Alg, idx []int) []byte {
	key := fmt.Sprint(bank, idx)
	b.mu.Lock()
	defer b.mu.Unlock()
	if d, ok := b.digests[key]; ok {
		return d
	}
	h := sha256.New()
	for _, i := range slices.Sorted(slices.Values(idx)) {
		h.Write(b.value(bank, i))
	}
	d := h.Sum(nil)
	b.digests[key] = d
	return d
}

// Attester is one software TPM and its agent. Its methods are not safe for
// concurrent use: like a TPM, it serves one session at a time (the server
// refuses a quote whose clock went backwards, and two interleaved sessions
// could send their quotes out of order).
type Attester struct {
	Hostname string

	boot     *Boot
	ek       *ecdh.PrivateKey
	ekPub    []byte // PKIX DER
	ekCert   []byte // DER
	ak       *ecdsa.PrivateKey
	akPublic []byte // TPMT_PUBLIC
	akName   []byte
	akQName  []byte // qualified name, the quotes' qualifiedSigner
	create   wire.AK
	start    time.Time
	clock    uint64
	// akCertChain is the AK certificate chain the server's CA delivered,
	// presented in later hellos (the fast path); nil until one is.
	akCertChain [][]byte
}

// New makes an attester: EK, EK certificate from ca, AK and its creation
// attestation.
func New(ca *testca.CA, boot *Boot, hostname string) (*Attester, error) {
	ekKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ek, err := ekKey.ECDH()
	if err != nil {
		return nil, err
	}
	ekPub, err := x509.MarshalPKIXPublicKey(&ekKey.PublicKey)
	if err != nil {
		return nil, err
	}
	// "SIMU", the simulator's manufacturer ID, as the project's tests use.
	ekCert, err := ca.IssueEK(&ekKey.PublicKey, "id:53494D55", "softagent", "id:00010002")
	if err != nil {
		return nil, fmt.Errorf("softagent: EK certificate: %w", err)
	}
	a := &Attester{Hostname: hostname, boot: boot, ek: ek, ekPub: ekPub, ekCert: ekCert, start: time.Now()}
	if err := a.makeAK(); err != nil {
		return nil, err
	}
	return a, nil
}

// srkName stands for the Name of the storage key the AK is created under
// (a TPM's SRK); the server reads but does not check it.
var srkName = func() []byte {
	d := sha256.Sum256([]byte("softagent SRK"))
	return append([]byte{0x00, 0x0b}, d[:]...)
}()

// makeAK makes what TPM2_Create returns for a restricted ECDSA P-256
// signing key created under the SRK: its TPMT_PUBLIC and
// TPMS_CREATION_DATA (the agent has not run TPM2_CertifyCreation since
// 2026-11-26).
func (a *Attester) makeAK() error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pt, err := k.PublicKey.ECDH()
	if err != nil {
		return err
	}
	raw := pt.Bytes() // 0x04 || X || Y
	pub := tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, NoDA: true, Restricted: true, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: raw[1:33]},
			Y: tpm2.TPM2BECCParameter{Buffer: raw[33:]},
		}),
	}
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return err
	}
	// The agent's SRK is a primary key of the endorsement hierarchy; the
	// server refuses AKs elsewhere (ak_hierarchy).
	srkQName, err := tpmname.EndorsementPrimary(srkName)
	if err != nil {
		return err
	}
	cd := tpm2.Marshal(tpm2.TPMSCreationData{
		PCRSelect:           tpm2.TPMLPCRSelection{},
		PCRDigest:           tpm2.TPM2BDigest{Buffer: nil},
		Locality:            tpm2.TPMALocality{TPMLocZero: true},
		ParentNameAlg:       tpm2.TPMAlgSHA256,
		ParentName:          tpm2.TPM2BName{Buffer: srkName},
		ParentQualifiedName: tpm2.TPM2BName{Buffer: srkQName},
		OutsideInfo:         tpm2.TPM2BData{},
	})
	a.ak, a.akPublic, a.akName = k, tpm2.Marshal(pub), name.Buffer
	if a.akQName, err = tpmname.Qualify(srkQName, a.akName); err != nil {
		return err
	}
	a.create = wire.AK{Public: a.akPublic, CreateData: cd}
	return nil
}

// quoteAttest encodes the TPMS_ATTEST of a quote by the AK, with the clock
// of a TPM powered on at a.start that never reset.
func (a *Attester) quoteAttest(extra []byte, info *tpm2.TPMSQuoteInfo) []byte {
	// The TPM's clock only moves forward; two calls within a millisecond
	// still give increasing values.
	c := uint64(time.Since(a.start).Milliseconds()) + 1000
	if c <= a.clock {
		c = a.clock + 1
	}
	a.clock = c
	return tpm2.Marshal(tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: tpm2.TPM2BName{Buffer: a.akQName},
		ExtraData:       tpm2.TPM2BData{Buffer: extra},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: c, ResetCount: 1, RestartCount: 0, Safe: true},
		FirmwareVersion: 0x0001000200030004,
		Attested:        tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, info),
	})
}

// sign is the TPMT_SIGNATURE (ECDSA, SHA-256) a TPM makes with the AK over
// SHA-256(msg), r and s each padded to 32 bytes as TPMs return them.
func (a *Attester) sign(msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, a.ak, d[:])
	if err != nil {
		return nil, err
	}
	return tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, 32))},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, 32))},
		}),
	}), nil
}

// EKPublic is the EK's PKIX DER; its SHA-256 names the agent.
func (a *Attester) EKPublic() []byte { return a.ekPub }

// Session is one attestation of an attester: its hello, then its answer
// to the server's challenge.
type Session struct {
	a     *Attester
	nonce []byte
	hello []byte
	// activate is TPM2_ActivateCredential; tests replace it to play an
	// agent whose TPM does not hold the EK.
	activate func(blob, secret []byte) ([]byte, error)
	fast     bool // the challenge carried no credential
}

// FastPath reports whether the server's challenge carried no credential:
// it took the hello's AK certificate instead of TPM2_MakeCredential.
func (s *Session) FastPath() bool { return s.fast }

// Start draws a fresh agent nonce and encodes the hello, as the agent does
// for every attestation.
func (a *Attester) Start() (*Session, error) {
	nonce := make([]byte, wire.NonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	hello, err := wire.EncodeHello(&wire.Hello{
		Version:     wire.Version,
		EK:          wire.EK{Certificate: a.ekCert, Public: a.ekPub},
		AK:          a.create,
		AKCertChain: a.akCertChain,
		Nonce:       nonce,
		Hostname:    a.Hostname,
	})
	if err != nil {
		return nil, err
	}
	activate := func(blob, secret []byte) ([]byte, error) {
		return softtpm.ActivateCredentialECC(a.ek, a.akName, blob, secret)
	}
	return &Session{a: a, nonce: nonce, hello: hello, activate: activate}, nil
}

// Hello is the session's first message.
func (s *Session) Hello() []byte { return s.hello }

// ErrDelivery: Answer was given an AK certificate delivery, which Deliver
// takes.
var ErrDelivery = errors.New("softagent: the server sent an AK certificate delivery: answer it with Deliver")

// HasAKCert reports whether the attester holds a delivered AK certificate
// chain, so that its hellos ask for the fast path.
func (a *Attester) HasAKCert() bool { return len(a.akCertChain) > 0 }

// Deliver takes the server's AK certificate delivery, as the agent keeps
// the chain with its AK, and returns the acknowledgement.
func (s *Session) Deliver(deliveryRaw []byte) ([]byte, error) {
	d, err := wire.DecodeDelivery(deliveryRaw)
	if err != nil {
		return nil, err
	}
	s.a.akCertChain = d.AKCertChain
	return wire.Encode(wire.Ack{Version: d.Version, Stored: true})
}

// Answer answers the server's challenge with the evidence: the activation
// proof (TPM2_ActivateCredential in software), one quote per selected bank
// bound to the session by wire.QuoteExtraData, the PCR values and the log.
func (s *Session) Answer(challengeRaw []byte) ([]byte, error) {
	if wire.IsDelivery(challengeRaw) {
		return nil, ErrDelivery
	}
	ch, err := wire.DecodeChallenge(challengeRaw)
	if err != nil {
		return nil, err
	}
	a := s.a
	ev := &wire.Evidence{Version: wire.Version, PCRs: map[string]map[int][]byte{}}
	s.fast = ch.Credential == nil
	if ch.Credential != nil {
		secret, err := s.activate(ch.Credential.Blob, ch.Credential.Secret)
		if err != nil {
			return nil, fmt.Errorf("softagent: TPM2_ActivateCredential: %w", err)
		}
		ev.ActivationProof = wire.ActivationProof(secret, s.hello, challengeRaw)
	}
	extra := wire.QuoteExtraData(ch.Nonce, s.nonce, s.hello)
	for _, sel := range ch.Selections {
		bank, idx, err := wire.SelectionBank(sel)
		if err != nil {
			return nil, err
		}
		q, err := a.quote(bank, idx, extra)
		if err != nil {
			return nil, err
		}
		ev.Quotes = append(ev.Quotes, q)
		values := map[int][]byte{}
		for _, i := range idx {
			values[i] = a.boot.value(bank, i)
		}
		ev.PCRs[bank.String()] = values
	}
	ev.EventLog = a.boot.EventLog
	return wire.EncodeEvidence(ev)
}

// quote is TPM2_Quote with the AK over one bank's selected PCRs.
func (a *Attester) quote(bank pcrs.Alg, idx []int, extra []byte) (wire.Quote, error) {
	sel := make([]byte, 3) // PCRs 0..23
	for _, i := range idx {
		sel[i/8] |= 1 << (i % 8)
	}
	att := a.quoteAttest(extra, &tpm2.TPMSQuoteInfo{
		PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMIAlgHash(bank), PCRSelect: sel}}},
		PCRDigest: tpm2.TPM2BDigest{Buffer: a.boot.quoteDigest(bank, idx)},
	})
	sig, err := a.sign(att)
	if err != nil {
		return wire.Quote{}, err
	}
	return wire.Quote{Bank: bank.String(), Attest: att, Signature: sig}, nil
}
