package session

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"io"
	"strings"

	"github.com/tpmid/tpmid/pkg/common/wire"
	"github.com/tpmid/tpmid/pkg/server/verify"
)

// EKClaim is the EK an agent presents in its hello, decoded.
type EKClaim struct {
	Public        crypto.PublicKey
	Hash          string
	Certificate   *x509.Certificate // nil when the agent sent none
	Intermediates []*x509.Certificate
}

// helloStep checks the hello: the EK by the EK admission port, the AK's
// attributes, strength and creation data, and answers with a challenge
// that carries TPM2_MakeCredential output for (EK public, AK name).
func (s *Session) helloStep(ctx context.Context, helloRaw []byte) ([]byte, error) {
	cfg := s.cfg
	hello, err := wire.DecodeHello(helloRaw, cfg.MaxHello)
	if err != nil {
		return nil, err
	}
	s.hello, s.helloRaw = hello, helloRaw
	s.facts.Hostname = strings.ToLower(hello.Hostname)

	claim, err := s.ekClaim(hello)
	if err != nil {
		return nil, err
	}
	if s.facts.EK, err = cfg.EK.AdmitEK(ctx, claim); err != nil {
		return nil, err
	}

	if s.ak, err = verify.ParseAKPublic(hello.AK.Public); err != nil {
		return nil, err
	}
	if err := verify.CheckAKAttributes(s.ak); err != nil {
		return nil, err
	}
	if err := verify.CheckAKStrength(s.ak); err != nil {
		return nil, err
	}
	s.facts.AKName, s.facts.AKPublic = s.ak.Name, s.ak.Public
	if s.fastPath(ctx, hello) {
		// The AK certificate stands in for TPM2_MakeCredential: this CA
		// issued it after a full attestation bound this AK to this EK.
		return s.sendChallenge(nil)
	}
	// TPM2_MakeCredential for (EK by its TCG template, AK name). The AK's
	// creation attestation is not checked: it is signed by the AK itself,
	// so it proves nothing until activation, and activation alone proves
	// more. The credential activates only for a loaded object with this
	// Name, hence these attributes, and a TPM holds a fixedTPM object only
	// if it made it (docs/verification.md, 2026-11-25;
	// TestActivationProvesTheAKIsTPMResident).
	secret := make([]byte, credentialSecretSize)
	if _, err := io.ReadFull(cfg.rand(), secret); err != nil {
		return nil, fmt.Errorf("credential secret: %w", err)
	}
	blob, encSecret, err := verify.MakeCredential(cfg.rand(), claim.Public, s.ak.Name, secret)
	if err != nil {
		return nil, err
	}
	s.secret = secret
	return s.sendChallenge(&wire.Credential{Blob: blob, Secret: encSecret})
}

// credentialSecretSize is the size of the credential's secret: 32 bytes,
// which fits the TPM2B_DIGEST of every EK nameAlg (SHA-256 and up).
const credentialSecretSize = 32

// fastPath reports whether the hello's AK certificate chain is one this CA
// issued, unexpired, for this AK, EK and agent ID. Anything else, including
// no CA or no chain, is the full path: it never fails open.
func (s *Session) fastPath(ctx context.Context, hello *wire.Hello) bool {
	if s.cfg.Issuer == nil || len(hello.AKCertChain) == 0 {
		return false
	}
	id, err := s.agentID()
	if err != nil {
		return false
	}
	notAfter, err := s.cfg.Issuer.CheckAK(ctx, hello.AKCertChain, &s.facts, s.ak.Public, id)
	if err != nil {
		return false
	}
	s.fast, s.akNotAfter = true, notAfter
	return true
}

// sendChallenge draws the server nonce and encodes the challenge; cred is
// nil on the fast path.
func (s *Session) sendChallenge(cred *wire.Credential) ([]byte, error) {
	cfg := s.cfg
	s.serverNonce = make([]byte, wire.NonceSize)
	if _, err := io.ReadFull(cfg.rand(), s.serverNonce); err != nil {
		return nil, fmt.Errorf("server nonce: %w", err)
	}
	ch := wire.Challenge{
		Version:          s.hello.Version, // the session speaks the hello's version
		Nonce:            s.serverNonce,
		Selections:       cfg.Selections,
		EventLogRequired: cfg.RequireEventLog,
		Credential:       cred,
	}
	var err error
	if s.challenge, err = wire.Encode(ch); err != nil {
		return nil, err
	}
	return s.challenge, nil
}

// ekClaim decodes the hello's EK: its public key (whose hash names the
// agent), and the certificate and intermediates when sent. The certificate
// must be for the same key.
func (s *Session) ekClaim(hello *wire.Hello) (*EKClaim, error) {
	pub, err := x509.ParsePKIXPublicKey(hello.EK.Public)
	if err != nil {
		return nil, reject(ReasonEKMalformed, "EK public key is not PKIX DER: %v", err)
	}
	hash, err := verify.EKHash(pub)
	if err != nil {
		return nil, reject(ReasonEKMalformed, "EK public key: %v", err)
	}
	s.facts.EKHash, s.facts.EKPublic = hash, hello.EK.Public
	c := &EKClaim{Public: pub, Hash: hash}
	if len(hello.EK.Certificate) == 0 {
		return c, nil
	}
	if c.Certificate, err = verify.ParseEKCert(hello.EK.Certificate); err != nil {
		return nil, err
	}
	s.facts.EKCert = c.Certificate.Raw
	if !publicKeysEqual(c.Certificate.PublicKey, pub) {
		return nil, reject(ReasonEKMismatch, "EK certificate is for another key than the EK public key sent")
	}
	for i, der := range hello.EK.Intermediates {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, reject(ReasonEKMalformed, "EK intermediate %d: %v", i, err)
		}
		c.Intermediates = append(c.Intermediates, ic)
	}
	return c, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
