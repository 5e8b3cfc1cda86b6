package agent

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tpmid/tpmid/pkg/common/boundedfile"
	"github.com/tpmid/tpmid/pkg/common/tpm"
	"github.com/tpmid/tpmid/pkg/common/wire"
)

// Files the agent keeps in data_dir (mode 0600, in a 0700 directory):
//
//	ak-<alg>.blob       the TPM-wrapped AK (useless without this TPM)
//	ak-<alg>.chain.pem  its certificate chain from tpmid's CA, leaf first
//	ek.json             the EK public key and certificate, so the fast path
//	                    sends no EK command, and the EK's template, public
//	                    area and handle, so a first attestation checks it
//	                    with one TPM2_ReadPublic instead of rediscovering it
const (
	ekCacheFile = "ek.json"
	maxChain    = 64 << 10
)

type ekCache struct {
	Alg         string `json:"alg"`
	Public      []byte `json:"public"`
	Certificate []byte `json:"certificate,omitempty"`
	// TPM is tpm.(*EK).CacheBlob (absent in files of earlier versions).
	TPM json.RawMessage `json:"tpm,omitempty"`
}

// Next answers the server's next message: a challenge with evidence, a
// delivery with an acknowledgement.
func (s *Session) Next(msg []byte) ([]byte, error) {
	if wire.IsDelivery(msg) {
		return s.accept(msg)
	}
	return s.Respond(msg)
}

// accept keeps a delivered AK certificate chain beside the AK blob, if it
// is for this AK, and acknowledges it.
func (s *Session) accept(msg []byte) ([]byte, error) {
	d, err := wire.DecodeDelivery(msg)
	if err != nil {
		return nil, fmt.Errorf("server delivery: %w", err)
	}
	leaf, err := x509.ParseCertificate(d.AKCertChain[0])
	if err != nil {
		return nil, fmt.Errorf("delivered AK certificate: %w", err)
	}
	if !publicKeysEqual(leaf.PublicKey, s.ak.Public()) {
		return nil, errors.New("delivered AK certificate is for another key than this AK")
	}
	stored := false
	if s.cfg.DataDir != "" {
		var buf bytes.Buffer
		for _, der := range d.AKCertChain {
			pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
		}
		if err := writeFileAtomic(s.akPath(".chain.pem"), buf.Bytes()); err != nil {
			return nil, fmt.Errorf("keeping the AK certificate in data_dir: %w", err)
		}
		stored = true
	}
	return wire.Encode(wire.Ack{Version: wire.Version, Stored: stored})
}

// loadChain returns the kept chain when it is for the loaded AK, else nil.
func (s *Session) loadChain() [][]byte {
	raw, err := boundedfile.Read(s.akPath(".chain.pem"), maxChain)
	if err != nil {
		return nil
	}
	var chain [][]byte
	for blk, rest := pem.Decode(raw); blk != nil; blk, rest = pem.Decode(rest) {
		chain = append(chain, blk.Bytes)
	}
	if len(chain) == 0 {
		return nil
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil || !publicKeysEqual(leaf.PublicKey, s.ak.Public()) {
		return nil
	}
	return chain
}

func (s *Session) ekCachePath() string { return filepath.Join(s.cfg.DataDir, ekCacheFile) }

// readEKCache returns the kept EK entry of the configured algorithm, or
// nil.
func (s *Session) readEKCache() *ekCache {
	if s.cfg.DataDir == "" {
		return nil
	}
	raw, err := boundedfile.Read(s.ekCachePath(), 2*tpm.MaxEKCache)
	if err != nil {
		return nil
	}
	var c ekCache
	if json.Unmarshal(raw, &c) != nil || c.Alg != string(s.cfg.EKAlgorithm) || len(c.Public) == 0 {
		return nil
	}
	if _, err := x509.ParsePKIXPublicKey(c.Public); err != nil {
		return nil
	}
	return &c
}

// loadEKCache returns the kept EK's public key and certificate, or nils.
func (s *Session) loadEKCache() (pub, cert []byte) {
	if c := s.readEKCache(); c != nil {
		return c.Public, c.Certificate
	}
	return nil, nil
}

// loadEKBlob returns the kept tpm.EK cache blob, or nil.
func (s *Session) loadEKBlob() []byte {
	if c := s.readEKCache(); c != nil && len(c.TPM) > 0 {
		return c.TPM
	}
	return nil
}

// saveEKCache keeps the EK for the next attestation; failing to is
// harmless.
func (s *Session) saveEKCache(ek *tpm.EK, cert []byte) {
	if s.cfg.DataDir == "" {
		return
	}
	c := ekCache{Alg: string(s.cfg.EKAlgorithm), Public: ek.PublicDER, Certificate: cert}
	if blob, err := ek.CacheBlob(); err == nil {
		c.TPM = blob
	}
	if b, err := json.Marshal(c); err == nil {
		_ = writeFileAtomic(s.ekCachePath(), b)
	}
}

// needEK loads the EK when the server wants TPM2_ActivateCredential after
// a hello made from the cache (one TPM2_ReadPublic with a kept EK). A TPM
// whose EK is not the cached one drops the cache and the chain, so the
// next attestation starts afresh.
func (s *Session) needEK() error {
	if s.ek != nil {
		return nil
	}
	var ek *tpm.EK
	if blob := s.loadEKBlob(); blob != nil {
		ek, _ = s.tpm.EKFromCache(blob)
	}
	if ek == nil {
		var err error
		if ek, err = s.tpm.EK(s.cfg.EKAlgorithm); err != nil {
			return fmt.Errorf("endorsement key: %w", err)
		}
	}
	if !bytes.Equal(ek.PublicDER, s.ekPub) {
		os.Remove(s.ekCachePath())
		os.Remove(s.akPath(".chain.pem"))
		return errors.New("the kept EK is not this TPM's: data_dir cleared, attest again")
	}
	s.ek = ek
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
