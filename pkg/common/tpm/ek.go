package tpm

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// EKAlg selects the endorsement key (TCG EK Credential Profile 2.5
// templates; see docs/tpm-access.md):
//
//	"rsa", "rsa2048"  RSA 2048 (L-1, cert 0x01c00002; else H-1, 0x01c00012)
//	"rsa3072"         RSA 3072 (H-6, cert 0x01c0001c)
//	"rsa4096"         RSA 4096 (H-7, cert 0x01c0001e)
//	"ecc", "p256"     ECC P-256 (L-2, cert 0x01c0000a; else H-2, 0x01c00014)
//	"p384"            ECC P-384 (H-3, cert 0x01c00016; swtpm --ecc)
//	"p521"            ECC P-521 (H-4, cert 0x01c00018)
//	""                the RSA-2048 L-1 EK when it has a certificate, else
//	                  the P-256 L-2 EK when it has one, else the first
//	                  other EK with a certificate in the order H-1, H-2,
//	                  H-3, H-4, H-6, H-7, else the RSA-2048 L-1 EK
//	                  without certificate.
//
// "" prefers RSA so that an agent moved from spire-tpm-plugin, which
// always uses the RSA EK, keeps its agent ID (decision of 2026-11-25,
// docs/tpm-access.md).
type EKAlg string

// EK algorithms.
const (
	EKAuto    EKAlg = ""
	EKRSA     EKAlg = "rsa" // alias of EKRSA2048
	EKECC     EKAlg = "ecc" // alias of EKP256
	EKRSA2048 EKAlg = "rsa2048"
	EKRSA3072 EKAlg = "rsa3072"
	EKRSA4096 EKAlg = "rsa4096"
	EKP256    EKAlg = "p256"
	EKP384    EKAlg = "p384"
	EKP521    EKAlg = "p521"
)

// EKAlgs lists every accepted non-empty EKAlg, aliases included.
var EKAlgs = []EKAlg{EKRSA, EKRSA2048, EKRSA3072, EKRSA4096, EKECC, EKP256, EKP384, EKP521}

// canonical maps the aliases rsa and ecc to rsa2048 and p256.
func canonical(a EKAlg) EKAlg {
	switch a {
	case EKRSA:
		return EKRSA2048
	case EKECC:
		return EKP256
	}
	return a
}

// Valid reports whether a is "" or one of EKAlgs.
func (a EKAlg) Valid() bool { return a == EKAuto || slices.Contains(EKAlgs, a) }

// MaxEKCert bounds the NV index holding an EK certificate. Real EK
// certificates are 0.8-1.6 KiB; NV indices are usually 1-2 KiB with 0xFF
// padding.
const MaxEKCert = 4096

// nvReadChunk is how much one TPM2_NV_Read asks for: every PC-client TPM
// has TPM_PT_NV_BUFFER_MAX >= 1024, so no capability query is needed.
const nvReadChunk = 1024

// EK is an endorsement key with its certificate, if the TPM has one.
type EK struct {
	// Alg is EKRSA for RSA 2048, EKECC for P-256, else the canonical
	// EKAlg of the key (EKRSA3072, EKP384, ...).
	Alg EKAlg
	// Template names the TCG template, e.g. "ECC P-384 (H-3)".
	Template string
	// Public is *rsa.PublicKey or *ecdsa.PublicKey.
	Public crypto.PublicKey
	// PublicDER is Public in PKIX (SubjectPublicKeyInfo) DER.
	PublicDER []byte
	// CertDER is the EK certificate trimmed of NV padding; nil if the TPM
	// has none for this EK.
	CertDER []byte

	spec   *ekSpec
	pub    tpm2.TPMTPublic // the EK's public area
	name   []byte          // its TPM Name
	handle uint32          // persistent handle, 0 when Activate recreates it
}

// EK returns the endorsement key of the given algorithm (see EKAlg).
//
// Commands: TPM2_GetCapability(HANDLES) for the NV indices in 0x01c0xxxx
// and the persistent handles in 0x8101xxxx (two commands, instead of a
// failing probe per template); for the chosen EK, TPM2_NV_ReadPublic of its
// certificate index (to bound its size) and TPM2_NV_Read; then
// TPM2_ReadPublic of its persistent handle, whose public area must be
// exactly the TCG template's with the certificate's key. When the key is
// not persisted (or another key sits there), it is recreated from the
// template with TPM2_CreatePrimary under the endorsement hierarchy
// (empty endorsement auth) and flushed at once; Activate recreates it
// again. Nothing is persisted.
//
// Security: nothing here proves the key is a genuine TPM's: the caller's
// verifier must chain CertDER to a manufacturer root or match an enrolled
// key, and see the TPM activate a credential for it.
func (t *TPM) EK(alg EKAlg) (*EK, error) {
	if !alg.Valid() {
		return nil, fmt.Errorf("%w: EK algorithm %q (want one of %v or empty)", ErrBadAlgorithm, alg, EKAlgs)
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.unlock()

	nv, err := t.handles(0x01c00000, 0x01c0ffff)
	if err != nil {
		return nil, err
	}
	persisted, err := t.handles(0x81010000, 0x810100ff)
	if err != nil {
		return nil, err
	}
	specs := specsFor(alg)
	var chosen *ekSpec
	for _, s := range specs {
		if slices.Contains(nv, s.certIndex) {
			chosen = s
			break
		}
	}
	if chosen == nil {
		// No certificate: "" and rsa2048 use the RSA-2048 L-1 EK,
		// recreated if need be (its certificate may come from
		// ek_certificate_path, or the server may enrol the key); any
		// other named EK must have its certificate.
		if alg != EKAuto && canonical(alg) != EKRSA2048 {
			var have []string
			for _, s := range ekSpecs {
				if slices.Contains(nv, s.certIndex) {
					have = append(have, s.name)
				}
			}
			return nil, fmt.Errorf("%w: no %s EK certificate (NV 0x%08x); the TPM has EK certificates for %v", ErrNoEK, specs[0].name, specs[0].certIndex, have)
		}
		return t.ekFromSpec(specs[0], persisted, nil)
	}
	der, err := t.readNV(chosen.certIndex)
	if err != nil {
		return nil, fmt.Errorf("%w: %s EK certificate: %w", ErrNoEK, chosen.name, err)
	}
	cert, err := TrimDER(der)
	if err != nil {
		return nil, fmt.Errorf("%s EK certificate at NV 0x%08x: %w", chosen.name, chosen.certIndex, err)
	}
	return t.ekFromSpec(chosen, persisted, bytes.Clone(cert))
}

// ekFromSpec finds or recreates the key of s, checks it against the
// certificate (when given and parsable) and returns the EK.
func (t *TPM) ekFromSpec(s *ekSpec, persisted []uint32, cert []byte) (*EK, error) {
	var certKey crypto.PublicKey
	if cert != nil {
		// Some real EK certificates do not parse with crypto/x509 (e.g.
		// negative serial numbers); the server judges those. When it
		// parses, the key must be the certificate's.
		if c, err := x509.ParseCertificate(cert); err == nil {
			certKey = c.PublicKey
		}
	}
	tmpl := s.template()
	for _, h := range s.handles {
		if !slices.Contains(persisted, h) {
			continue
		}
		rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}.Execute(t.tp())
		if err != nil {
			continue
		}
		pub, err := rsp.OutPublic.Contents()
		if err != nil || !sameTemplate(pub, &tmpl) {
			continue
		}
		ek, err := newEK(s, pub, cert)
		if err != nil || (certKey != nil && !samePublicKey(ek.Public, certKey)) {
			continue
		}
		ek.handle = h
		return ek, nil
	}
	pub, err := t.createEK(&tmpl, s)
	if err != nil {
		return nil, err
	}
	ek, err := newEK(s, pub, cert)
	if err != nil {
		return nil, err
	}
	if certKey != nil && !samePublicKey(ek.Public, certKey) {
		return nil, fmt.Errorf("%w: the certificate at NV 0x%08x is not for the %s EK this TPM derives from its template", ErrNoEK, s.certIndex, s.name)
	}
	return ek, nil
}

// createEK runs TPM2_CreatePrimary of the template under the endorsement
// hierarchy and flushes the key at once.
func (t *TPM) createEK(tmpl *tpm2.TPMTPublic, s *ekSpec) (*tpm2.TPMTPublic, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(*tmpl),
	}.Execute(t.tp())
	if err != nil {
		return nil, fmt.Errorf("%w: TPM2_CreatePrimary of the %s EK: %w", ErrNoEK, s.name, err)
	}
	pub, perr := rsp.OutPublic.Contents()
	ferr := t.flush(uint32(rsp.ObjectHandle))
	if perr != nil {
		return nil, fmt.Errorf("TPM2_CreatePrimary of the %s EK: public area: %w", s.name, perr)
	}
	if ferr != nil {
		return nil, ferr
	}
	return pub, nil
}

// loadEK returns a handle on the EK for TPM2_ActivateCredential: its
// persistent handle, or a transient one from TPM2_CreatePrimary that the
// returned function flushes.
func (t *TPM) loadEK(ek *EK) (uint32, func() error, error) {
	if ek.handle != 0 {
		return ek.handle, func() error { return nil }, nil
	}
	tmpl := ek.spec.template()
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t.tp())
	if err != nil {
		return 0, nil, fmt.Errorf("TPM2_CreatePrimary of the %s EK: %w", ek.spec.name, err)
	}
	h := uint32(rsp.ObjectHandle)
	flush := func() error { return t.flush(h) }
	if !bytes.Equal(rsp.Name.Buffer, ek.name) {
		return 0, nil, errors.Join(fmt.Errorf("%w: the TPM's %s EK is not the one read before", ErrNoEK, ek.spec.name), flush())
	}
	return h, flush, nil
}

func newEK(s *ekSpec, pub *tpm2.TPMTPublic, cert []byte) (*EK, error) {
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %s EK public area: %w", ErrBadAlgorithm, s.name, err)
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the EK public key: %w", err)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, fmt.Errorf("EK name: %w", err)
	}
	alg := s.alg
	switch alg {
	case EKRSA2048:
		alg = EKRSA
	case EKP256:
		alg = EKECC
	}
	return &EK{Alg: alg, Template: s.name, Public: key, PublicDER: der, CertDER: cert, spec: s, pub: *pub, name: name.Buffer}, nil
}

// sameTemplate reports whether pub is tmpl apart from unique, i.e. a key
// made from this template.
func sameTemplate(pub, tmpl *tpm2.TPMTPublic) bool {
	ma := marshalNoUnique(pub)
	return ma != nil && bytes.Equal(ma, marshalNoUnique(tmpl))
}

// marshalNoUnique encodes a public area up to its parameters.
func marshalNoUnique(p *tpm2.TPMTPublic) []byte {
	q := *p
	switch q.Type {
	case tpm2.TPMAlgRSA:
		q.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{})
	case tpm2.TPMAlgECC:
		q.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{})
	default:
		return nil
	}
	return tpm2.Marshal(q)
}

func samePublicKey(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// handles lists the handles in [first, last] (TPM2_GetCapability
// TPM_CAP_HANDLES, at most 64).
func (t *TPM) handles(first, last uint32) ([]uint32, error) {
	vals, _, err := legacy.GetCapability(t.s.ch, legacy.CapabilityHandles, 64, first)
	if err != nil {
		return nil, fmt.Errorf("TPM2_GetCapability(HANDLES from 0x%08x): %w", first, err)
	}
	var out []uint32
	for _, v := range vals {
		if h, ok := v.(tpmutil.Handle); ok && uint32(h) >= first && uint32(h) <= last {
			out = append(out, uint32(h))
		}
	}
	return out, nil
}

// readNV reads a whole NV index with its own (empty) auth, bounded by
// MaxEKCert: TPM2_NV_ReadPublic, then TPM2_NV_Read in chunks.
func (t *TPM) readNV(idx uint32) ([]byte, error) {
	tp := t.tp()
	rp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(idx)}.Execute(tp)
	if err != nil {
		return nil, fmt.Errorf("TPM2_NV_ReadPublic 0x%08x: %w", idx, err)
	}
	nvPub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("TPM2_NV_ReadPublic 0x%08x: %w", idx, err)
	}
	size := int(nvPub.DataSize)
	if size > MaxEKCert {
		return nil, fmt.Errorf("NV index 0x%08x holds %d bytes: %w (bound %d)", idx, size, ErrTooLarge, MaxEKCert)
	}
	nh := tpm2.NamedHandle{Handle: tpm2.TPMHandle(idx), Name: rp.NVName}
	out := make([]byte, 0, size)
	for len(out) < size {
		n := min(size-len(out), nvReadChunk)
		r, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: nh.Handle, Name: nh.Name, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    nh,
			Size:       uint16(n),
			Offset:     uint16(len(out)),
		}.Execute(tp)
		if err != nil {
			return nil, fmt.Errorf("TPM2_NV_Read 0x%08x at %d: %w", idx, len(out), err)
		}
		if len(r.Data.Buffer) == 0 || len(r.Data.Buffer) > n {
			return nil, fmt.Errorf("TPM2_NV_Read 0x%08x at %d: %d bytes, asked %d", idx, len(out), len(r.Data.Buffer), n)
		}
		out = append(out, r.Data.Buffer...)
	}
	return out, nil
}

// TrimDER returns the prefix of b that is one complete DER SEQUENCE (such
// as a certificate), dropping trailing bytes (the 0xFF padding of NV
// indices). It reads only the outer tag and length; it does not validate
// the contents. Errors wrap ErrBadDER.
func TrimDER(b []byte) ([]byte, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrBadDER, len(b))
	}
	if b[0] != 0x30 {
		return nil, fmt.Errorf("%w: outer tag 0x%02x is not SEQUENCE (0x30)", ErrBadDER, b[0])
	}
	hdr, n := 2, uint64(b[1])
	switch {
	case b[1] == 0x80:
		return nil, fmt.Errorf("%w: indefinite length is not DER", ErrBadDER)
	case b[1] > 0x80:
		ll := int(b[1] & 0x7f)
		if ll > 4 {
			return nil, fmt.Errorf("%w: %d length octets", ErrBadDER, ll)
		}
		if len(b) < 2+ll {
			return nil, fmt.Errorf("%w: truncated in the length octets", ErrBadDER)
		}
		if b[2] == 0 {
			return nil, fmt.Errorf("%w: non-minimal length encoding", ErrBadDER)
		}
		n = 0
		for _, c := range b[2 : 2+ll] {
			n = n<<8 | uint64(c)
		}
		if n < 0x80 {
			return nil, fmt.Errorf("%w: non-minimal length encoding", ErrBadDER)
		}
		hdr = 2 + ll
	}
	if n > uint64(len(b)-hdr) {
		return nil, fmt.Errorf("%w: truncated: SEQUENCE of %d bytes but only %d follow the header", ErrBadDER, n, len(b)-hdr)
	}
	return b[:hdr+int(n)], nil
}
