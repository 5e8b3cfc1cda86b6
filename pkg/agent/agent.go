// Package agent is the attester side of protocol v1: it gathers the EK and
// AK, answers the server's challenge with TPM2_ActivateCredential and one
// TPM2_Quote per requested bank, and sends the event log. All TPM work goes
// through pkg/common/tpm.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tpmid/tpmid/pkg/common/boundedfile"
	"github.com/tpmid/tpmid/pkg/common/pcrs"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/common/wire"
)

// Config is what the agent plugin needs to attest.
type Config struct {
	TPM         tpm.Config
	EKAlgorithm tpm.EKAlg
	AKAlgorithm tpm.AKAlg
	// DataDir keeps the TPM-wrapped AK blob between attestations; empty
	// means a fresh AK every time.
	DataDir string
	// EKCertificatePath supplies the EK certificate for TPMs that keep none
	// in NV (some firmware TPMs publish theirs online); it is used only
	// when the TPM has none, and must be for the TPM's EK (the server checks).
	EKCertificatePath string
	Hostname          string
}

// maxEKCert bounds an EK certificate read from disk.
const maxEKCert = 8 << 10

// maxAKBlob bounds the AK blob read from disk.
const maxAKBlob = 64 << 10

// Session is one attestation in progress. Close it when done.
type Session struct {
	cfg   Config
	tpm   *tpm.TPM
	owned bool    // Close closes the TPM only when Begin opened it
	ek    *tpm.EK // nil on the fast path until a credential needs it
	ekPub []byte  // the EK public key (PKIX DER) the hello names
	ak    *tpm.AK
	chain [][]byte // the AK certificate chain sent in the hello
	hello []byte
	nonce []byte
}

// Begin opens the TPM, loads or creates the AK and returns the hello.
func Begin(cfg Config) (*Session, []byte, error) {
	return BeginContext(context.Background(), cfg)
}

// BeginContext is Begin bound to ctx: once ctx is done, the session's TPM
// work stops before its next TPM command with ctx.Err().
func BeginContext(ctx context.Context, cfg Config) (*Session, []byte, error) {
	t, err := tpm.Open(cfg.TPM)
	if err != nil {
		return nil, nil, err
	}
	s := &Session{cfg: cfg, tpm: t.WithContext(ctx), owned: true}
	hello, err := s.begin()
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, hello, nil
}

func (s *Session) begin() ([]byte, error) {
	var err error
	var created bool
	if s.ak, created, err = s.loadOrCreateAK(); err != nil {
		return nil, fmt.Errorf("attestation key: %w", err)
	}
	// With a kept AK and its certificate, the fast path needs no EK
	// command: the EK's public key and certificate come from data_dir.
	var ekPub, ekCert []byte
	if !created {
		s.chain = s.loadChain()
		if s.chain != nil {
			ekPub, ekCert = s.loadEKCache()
		}
	}
	if ekPub == nil {
		s.chain = nil
		if ekPub, ekCert, err = s.readEK(); err != nil {
			return nil, err
		}
	}
	s.ekPub = ekPub
	s.nonce = make([]byte, wire.NonceSize)
	if _, err := io.ReadFull(rand.Reader, s.nonce); err != nil {
		return nil, err
	}
	params := s.ak.Params()
	s.hello, err = wire.EncodeHello(&wire.Hello{
		Version:     wire.Version,
		EK:          wire.EK{Certificate: ekCert, Public: ekPub},
		AK:          wire.AK{Public: params.Public, CreateData: params.CreateData},
		AKCertChain: s.chain,
		Nonce:       s.nonce,
		Hostname:    s.cfg.Hostname,
	})
	return s.hello, err
}

// readEK finds the EK: from the EK kept in data_dir when there is one
// (one TPM2_ReadPublic of its persistent handle, compared with the kept
// public area), else by discovery in the TPM (tpm.EK). The certificate is
// the TPM's, or ek_certificate_path's when the TPM has none. The EK is
// kept in data_dir for the next attestation and the fast path.
func (s *Session) readEK() (pub, cert []byte, err error) {
	if blob := s.loadEKBlob(); blob != nil {
		if ek, err := s.tpm.EKFromCache(blob); err == nil {
			s.ek = ek
		}
	}
	if s.ek == nil {
		if s.ek, err = s.tpm.EK(s.cfg.EKAlgorithm); err != nil {
			return nil, nil, fmt.Errorf("endorsement key: %w", err)
		}
	}
	cert = s.ek.CertDER
	if len(cert) == 0 && s.cfg.EKCertificatePath != "" {
		raw, err := boundedfile.Read(s.cfg.EKCertificatePath, maxEKCert)
		if err != nil {
			return nil, nil, fmt.Errorf("ek_certificate_path: %w", err)
		}
		if block, _ := pem.Decode(raw); block != nil {
			raw = block.Bytes
		}
		if cert, err = tpm.TrimDER(raw); err != nil {
			return nil, nil, fmt.Errorf("ek_certificate_path: %w", err)
		}
	}
	s.saveEKCache(s.ek, cert)
	return s.ek.PublicDER, cert, nil
}

// BeginWith is Begin on a TPM the caller opened and closes (tests keep one
// simulator across sessions, as a machine keeps its TPM).
func BeginWith(t *tpm.TPM, cfg Config) (*Session, []byte, error) {
	return BeginWithContext(context.Background(), t, cfg)
}

// BeginWithContext is BeginWith bound to ctx (see BeginContext).
func BeginWithContext(ctx context.Context, t *tpm.TPM, cfg Config) (*Session, []byte, error) {
	s := &Session{cfg: cfg, tpm: t.WithContext(ctx)}
	hello, err := s.begin()
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, hello, nil
}

// loadOrCreateAK reuses the AK kept in DataDir when the TPM can load it,
// it has the configured algorithm and it is in the endorsement hierarchy;
// otherwise it creates one (TPM2_Create under the SRK) and keeps its
// wrapped blob.
func (s *Session) loadOrCreateAK() (ak *tpm.AK, created bool, err error) {
	if s.cfg.DataDir == "" {
		ak, err := s.tpm.NewAK(s.cfg.AKAlgorithm)
		return ak, true, err
	}
	path := s.akPath(".blob")
	if blob, err := boundedfile.Read(path, maxAKBlob); err == nil {
		ak, err := s.tpm.LoadAK(blob)
		switch {
		case err == nil && ak.InEndorsementHierarchy():
			return ak, false, nil
		case err == nil:
			// Made by an earlier tpmid under another program's owner SRK:
			// its counters are obfuscated, the server refuses it
			// (ak_hierarchy); replace it.
			ak.Close(s.tpm)
		}
	}
	ak, err = s.tpm.NewAK(s.cfg.AKAlgorithm)
	if err != nil {
		return nil, false, err
	}
	blob, err := ak.Blob()
	if err == nil {
		err = writeFileAtomic(path, blob)
	}
	if err != nil {
		ak.Close(s.tpm)
		return nil, false, fmt.Errorf("keeping the AK blob in data_dir: %w", err)
	}
	// A new AK makes the old certificate useless.
	os.Remove(s.akPath(".chain.pem"))
	return ak, true, nil
}

// akPath is the data_dir file of the configured AK algorithm with suffix:
// one AK per algorithm, so changing ak_algorithm takes effect. P-256 and
// RSA-2048 keep the names of their first aliases (ak-ecdsa, ak-rsa), so
// AKs kept by earlier versions are found.
func (s *Session) akPath(suffix string) string {
	alg := string(s.cfg.AKAlgorithm.Canonical())
	switch s.cfg.AKAlgorithm.Canonical() {
	case tpm.AKP256:
		alg = "ecdsa"
	case tpm.AKRSA2048:
		alg = "rsa"
	}
	return filepath.Join(s.cfg.DataDir, "ak-"+alg+suffix)
}

// Respond answers a challenge with evidence.
func (s *Session) Respond(challengeRaw []byte) ([]byte, error) {
	ch, err := wire.DecodeChallenge(challengeRaw)
	if err != nil {
		return nil, fmt.Errorf("server challenge: %w", err)
	}
	ev := &wire.Evidence{Version: wire.Version, PCRs: map[string]map[int][]byte{}}
	if ch.Credential != nil {
		if err := s.needEK(); err != nil {
			return nil, err
		}
		secret, err := s.tpm.Activate(s.ak, s.ek, ch.Credential.Blob, ch.Credential.Secret)
		if err != nil {
			return nil, fmt.Errorf("TPM2_ActivateCredential: %w", err)
		}
		ev.ActivationProof = wire.ActivationProof(secret, s.hello, challengeRaw)
	}
	extra := wire.QuoteExtraData(ch.Nonce, s.nonce, s.hello)
	for _, sel := range ch.Selections {
		bank, idx, err := wire.SelectionBank(sel)
		if err != nil {
			return nil, err
		}
		values, attest, sig, err := s.quote(bank, idx, extra)
		if err != nil {
			return nil, fmt.Errorf("quote over bank %s: %w", bank, err)
		}
		ev.Quotes = append(ev.Quotes, wire.Quote{Bank: bank.String(), Attest: attest, Signature: sig})
		ev.PCRs[bank.String()] = values
	}
	log, err := s.tpm.EventLog()
	switch {
	case err == nil:
		ev.EventLog = log
	case ch.EventLogRequired:
		return nil, fmt.Errorf("the server requires the event log: %w", err)
	}
	return wire.EncodeEvidence(ev)
}

// quote signs the PCRs with TPM2_Quote, then reads them (TPM2_PCR_Read)
// and checks they hash to the quote's digest; if something extended a PCR
// in between, it quotes once more, so the values sent match the quote.
func (s *Session) quote(bank pcrs.Alg, idx []int, extra []byte) (map[int][]byte, []byte, []byte, error) {
	for attempt := 0; ; attempt++ {
		attest, sig, err := s.tpm.Quote(s.ak, extra, bank, idx)
		if err != nil {
			return nil, nil, nil, err
		}
		values, err := s.tpm.ReadPCRs(bank, idx)
		if err != nil {
			return nil, nil, nil, err
		}
		if tpm.QuotedPCRsMatch(attest, values, idx) || attempt == 1 {
			return values, attest, sig, nil
		}
	}
}

// Close flushes the AK and closes the TPM.
func (s *Session) Close() error {
	var errs []error
	if s.ak != nil {
		errs = append(errs, s.ak.Close(s.tpm))
	}
	if s.owned {
		errs = append(errs, s.tpm.Close())
	}
	return errors.Join(errs...)
}

// AK returns the session's attestation key (tests quote with it directly).
func (s *Session) AK() *tpm.AK { return s.ak }

// Commands reports the TPM commands this session has sent.
func (s *Session) Commands() uint64 { return s.tpm.Commands() }

// CommandCodes renders the commands this session's TPM was sent by code,
// "0x0000017e:2 0x00000158:1", sorted by code, for the agent's log.
func (s *Session) CommandCodes() string {
	counts := s.tpm.CommandCounts()
	codes := make([]uint32, 0, len(counts))
	for c := range counts {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	parts := make([]string, 0, len(codes))
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("0x%08x:%d", c, counts[c]))
	}
	return strings.Join(parts, " ")
}

// FastPath reports whether the hello presented a kept AK certificate.
func (s *Session) FastPath() bool { return len(s.chain) > 0 }

func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
