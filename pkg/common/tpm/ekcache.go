package tpm

import (
	"bytes"
	"crypto"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// MaxEKCache bounds an EK cache blob given to EKFromCache.
const MaxEKCache = 3 * MaxEKCert

// ekCacheBlob is what (*EK).CacheBlob keeps: enough to use the EK again
// without rediscovering it.
type ekCacheBlob struct {
	Template    string `json:"template"`              // ekSpec.name
	Public      []byte `json:"public"`                // TPMT_PUBLIC
	Handle      uint32 `json:"handle,omitempty"`      // persistent handle, 0 if recreated
	Certificate []byte `json:"certificate,omitempty"` // from NV
}

// CacheBlob serialises the EK (template, public area, persistent handle,
// NV certificate) for EKFromCache. It holds nothing secret.
func (e *EK) CacheBlob() ([]byte, error) {
	if e.spec == nil {
		return nil, fmt.Errorf("%w: EK not read from a TPM", ErrNoEK)
	}
	return json.Marshal(ekCacheBlob{Template: e.spec.name, Public: tpm2.Marshal(e.pub), Handle: e.handle, Certificate: e.CertDER})
}

// EKFromCache returns the EK a CacheBlob describes, checked against the
// TPM with at most one command: TPM2_ReadPublic of its persistent handle,
// whose Name must be the cached public area's. An EK that is not
// persisted costs no command here; Activate recreates it and compares its
// Name then. A blob for another template or key, or a TPM whose EK
// changed (cleared, replaced), fails with ErrNoEK: rediscover with EK.
//
// Security: the cache is agent-local state; a forged one at worst names
// another EK, whose credential this TPM then cannot activate.
func (t *TPM) EKFromCache(blob []byte) (*EK, error) {
	if len(blob) > MaxEKCache {
		return nil, fmt.Errorf("EK cache of %d bytes: %w (bound %d)", len(blob), ErrTooLarge, MaxEKCache)
	}
	var c ekCacheBlob
	if err := json.Unmarshal(blob, &c); err != nil {
		return nil, fmt.Errorf("%w: EK cache: %w", ErrNoEK, err)
	}
	i := slices.IndexFunc(ekSpecs, func(s *ekSpec) bool { return s.name == c.Template })
	if i < 0 {
		return nil, fmt.Errorf("%w: EK cache names template %q", ErrNoEK, c.Template)
	}
	s := ekSpecs[i]
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](c.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: EK cache public area: %w", ErrNoEK, err)
	}
	tmpl := s.template()
	if !sameTemplate(pub, &tmpl) {
		return nil, fmt.Errorf("%w: EK cache public area is not the %s template's", ErrNoEK, s.name)
	}
	if c.Handle != 0 && !slices.Contains(s.handles, c.Handle) {
		return nil, fmt.Errorf("%w: EK cache handle 0x%08x is not one of the %s EK", ErrNoEK, c.Handle, s.name)
	}
	ek, err := newEK(s, pub, c.Certificate)
	if err != nil {
		return nil, err
	}
	if c.Handle == 0 {
		return ek, nil
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.unlock()
	rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(c.Handle)}.Execute(t.tp())
	if err != nil {
		return nil, fmt.Errorf("%w: TPM2_ReadPublic of the kept EK at 0x%08x: %w", ErrNoEK, c.Handle, err)
	}
	if !bytes.Equal(rsp.Name.Buffer, ek.name) {
		return nil, fmt.Errorf("%w: the key at 0x%08x is not the kept %s EK", ErrNoEK, c.Handle, s.name)
	}
	ek.handle = c.Handle
	return ek, nil
}

// QuotedPCRsMatch reports whether values (PCR index to value, the PCRs
// of list in one bank) hash to the pcrDigest of a TPMS_ATTEST quote, in
// the hash of the quote's digest (SHA-256, SHA-384 or SHA-512 by its
// size). It lets the agent read the PCRs once, after TPM2_Quote, instead
// of before and after: if something extended a PCR in between, they do
// not match and the agent quotes again.
func QuotedPCRsMatch(attest []byte, values map[int][]byte, list []int) bool {
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
	if err != nil || a.Type != tpm2.TPMSTAttestQuote {
		return false
	}
	q, err := a.Attested.Quote()
	if err != nil {
		return false
	}
	var h crypto.Hash
	switch len(q.PCRDigest.Buffer) {
	case 32:
		h = crypto.SHA256
	case 48:
		h = crypto.SHA384
	case 64:
		h = crypto.SHA512
	default:
		return false
	}
	l := slices.Clone(list)
	slices.Sort(l)
	l = slices.Compact(l)
	w := h.New()
	for _, i := range l {
		v, ok := values[i]
		if !ok {
			return false
		}
		w.Write(v)
	}
	return bytes.Equal(w.Sum(nil), q.PCRDigest.Buffer)
}
