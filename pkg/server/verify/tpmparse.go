package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// Reflection-free decoders for the TPM structures on the server's hot path:
// TPMS_ATTEST of a quote, TPMT_SIGNATURE and TPMT_PUBLIC. go-tpm decodes
// them by reflection and unmarshalCanonical re-encodes them to prove there
// is no slack, which cost more than the quote's ECDSA verification. These
// decoders read each field once, in place, and refuse exactly what
// unmarshalCanonical refuses: a structure must be consumed to its last
// byte, every size must fit what is left, a sized field must hold exactly
// its contents, and a TPMI_YES_NO must be 0 or 1 (go-tpm would re-encode
// any other value as 1). TestFastParseAgreesWithGoTPM and
// FuzzFastParseAgreesWithGoTPM hold them to go-tpm's answer.
//
// They cover the shapes an AK and its quotes have. Anything else (another
// signature scheme, a symmetric definition, a KDF, an unknown curve or
// name algorithm) is errSlowPath: the caller decodes it with go-tpm as
// before, so the fast decoders never change what is accepted.
var errSlowPath = errors.New("not a shape the fast decoder covers")

// tpmReader reads big-endian TPM fields; the first short read sticks.
type tpmReader struct {
	b   []byte
	err error
}

func (r *tpmReader) short(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s: out of data", what)
	}
}

func (r *tpmReader) u8(what string) uint8 {
	if r.err != nil || len(r.b) < 1 {
		r.short(what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *tpmReader) u16(what string) uint16 {
	if r.err != nil || len(r.b) < 2 {
		r.short(what)
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *tpmReader) u32(what string) uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.short(what)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *tpmReader) u64(what string) uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.short(what)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *tpmReader) bytes(n int, what string) []byte {
	if r.err != nil || len(r.b) < n {
		r.short(what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// tpm2b reads a TPM2B: a 16-bit size and that many bytes.
func (r *tpmReader) tpm2b(what string) []byte { return r.bytes(int(r.u16(what+" size")), what) }

// end requires the structure to be consumed exactly.
func (r *tpmReader) end() error {
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return nil
}

// attestHeader is the part of a TPMS_ATTEST every type shares (TPM 2.0
// Part 2, 10.12.12). Byte fields alias the input.
type attestHeader struct {
	QualifiedSigner []byte
	ExtraData       []byte
	Clock           uint64
	ResetCount      uint32
	RestartCount    uint32
	Safe            bool
	FirmwareVersion uint64
}

// header reads a TPMS_ATTEST up to its attested union, requiring the
// magic and the type typ.
func (r *tpmReader) attestHeader(typ uint16, typName string) (h attestHeader, err error) {
	if m := r.u32("magic"); r.err == nil && m != tpmGeneratedValue {
		return h, fmt.Errorf("magic 0x%08x is not TPM_GENERATED_VALUE", m)
	}
	if t := r.u16("type"); r.err == nil && t != typ {
		return h, fmt.Errorf("type 0x%04x is not %s", t, typName)
	}
	h = attestHeader{
		QualifiedSigner: r.tpm2b("qualifiedSigner"),
		ExtraData:       r.tpm2b("extraData"),
		Clock:           r.u64("clock"),
		ResetCount:      r.u32("resetCount"),
		RestartCount:    r.u32("restartCount"),
	}
	switch safe := r.u8("safe"); {
	case r.err != nil:
	case safe > 1:
		return h, fmt.Errorf("safe is %d, not a TPMI_YES_NO", safe)
	default:
		h.Safe = safe == 1
	}
	h.FirmwareVersion = r.u64("firmwareVersion")
	return h, nil
}

// quoteAttest is a decoded TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
type quoteAttest struct {
	attestHeader
	PCRSelect tpm2.TPMLPCRSelection
	PCRDigest []byte
}

// maxPCRSelections is go-tpm's bound on a TPML's count (maxListLength).
const maxPCRSelections = 4096

// parseQuoteAttest decodes a TPMS_ATTEST that must be a quote (TPM 2.0
// Part 2, 10.12.12 TPMS_ATTEST and 10.12.1 TPMS_QUOTE_INFO).
func parseQuoteAttest(b []byte) (*quoteAttest, error) {
	r := &tpmReader{b: b}
	h, err := r.attestHeader(tpmSTAttestQuote, "TPM_ST_ATTEST_QUOTE")
	if err != nil {
		return nil, err
	}
	a := &quoteAttest{attestHeader: h}
	if err := r.pcrSelection(&a.PCRSelect); err != nil {
		return nil, err
	}
	a.PCRDigest = r.tpm2b("pcrDigest")
	if err := r.end(); err != nil {
		return nil, err
	}
	return a, nil
}

// tpmSignature is a decoded TPMT_SIGNATURE of an RSASSA, RSAPSS or ECDSA
// scheme (TPM 2.0 Part 2, 11.3.4). Byte fields alias the input.
type tpmSignature struct {
	Alg  tpm2.TPMIAlgSigScheme
	Hash tpm2.TPMIAlgHash
	RSA  []byte // RSASSA, RSAPSS
	R, S []byte // ECDSA
}

// parseSignature decodes b; other schemes are errSlowPath.
func parseSignature(b []byte) (*tpmSignature, error) {
	r := &tpmReader{b: b}
	s := &tpmSignature{Alg: tpm2.TPMIAlgSigScheme(r.u16("sigAlg"))}
	if r.err != nil {
		return nil, r.err
	}
	switch s.Alg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		s.Hash = tpm2.TPMIAlgHash(r.u16("hash"))
		s.RSA = r.tpm2b("sig")
	case tpm2.TPMAlgECDSA:
		s.Hash = tpm2.TPMIAlgHash(r.u16("hash"))
		s.R = r.tpm2b("signatureR")
		s.S = r.tpm2b("signatureS")
	default:
		return nil, errSlowPath
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return s, nil
}

// tpmPublic is a decoded TPMT_PUBLIC of an RSA or ECC key with no
// symmetric definition and no KDF, and a NULL or single-hash signing scheme
// (TPM 2.0 Part 2, 12.2.4). Byte fields alias the input.
type tpmPublic struct {
	Type       tpm2.TPMIAlgPublic
	NameAlg    tpm2.TPMIAlgHash
	Attributes uint32
	AuthPolicy []byte
	Scheme     tpm2.TPMAlgID
	SchemeHash tpm2.TPMIAlgHash
	KeyBits    uint16 // RSA
	Exponent   uint32 // RSA
	CurveID    tpm2.TPMECCCurve
	N          []byte // RSA
	X, Y       []byte // ECC
}

// parsePublic decodes b; shapes beyond tpmPublic's are errSlowPath.
func parsePublic(b []byte) (*tpmPublic, error) {
	r := &tpmReader{b: b}
	p := &tpmPublic{
		Type:       tpm2.TPMIAlgPublic(r.u16("type")),
		NameAlg:    tpm2.TPMIAlgHash(r.u16("nameAlg")),
		Attributes: r.u32("objectAttributes"),
		AuthPolicy: r.tpm2b("authPolicy"),
	}
	if r.err != nil {
		return nil, r.err
	}
	if p.Type != tpm2.TPMAlgRSA && p.Type != tpm2.TPMAlgECC {
		return nil, errSlowPath
	}
	if _, err := p.NameAlg.Hash(); err != nil {
		return nil, errSlowPath
	}
	if sym := r.u16("symmetric"); r.err == nil && tpm2.TPMAlgID(sym) != tpm2.TPMAlgNull {
		return nil, errSlowPath
	}
	p.Scheme = tpm2.TPMAlgID(r.u16("scheme"))
	if r.err != nil {
		return nil, r.err
	}
	switch {
	case p.Scheme == tpm2.TPMAlgNull:
	case p.Type == tpm2.TPMAlgRSA && (p.Scheme == tpm2.TPMAlgRSASSA || p.Scheme == tpm2.TPMAlgRSAPSS),
		p.Type == tpm2.TPMAlgECC && p.Scheme == tpm2.TPMAlgECDSA:
		p.SchemeHash = tpm2.TPMIAlgHash(r.u16("scheme hash"))
	default:
		return nil, errSlowPath
	}
	if p.Type == tpm2.TPMAlgRSA {
		p.KeyBits = r.u16("keyBits")
		p.Exponent = r.u32("exponent")
		p.N = r.tpm2b("unique rsa")
	} else {
		p.CurveID = tpm2.TPMECCCurve(r.u16("curveID"))
		if kdf := r.u16("kdf"); r.err == nil && tpm2.TPMAlgID(kdf) != tpm2.TPMAlgNull {
			return nil, errSlowPath
		}
		if r.err == nil {
			switch p.CurveID {
			case tpm2.TPMECCNistP256, tpm2.TPMECCNistP384, tpm2.TPMECCNistP521:
			default:
				return nil, errSlowPath
			}
		}
		p.X = r.tpm2b("unique x")
		p.Y = r.tpm2b("unique y")
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return p, nil
}

// key is the public key, as tpm2.Pub makes it (an RSA exponent of 0 means
// 65537).
func (p *tpmPublic) key() crypto.PublicKey {
	if p.Type == tpm2.TPMAlgRSA {
		e := int(p.Exponent)
		if e == 0 {
			e = 65537
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(p.N), E: e}
	}
	var c elliptic.Curve
	switch p.CurveID {
	case tpm2.TPMECCNistP256:
		c = elliptic.P256()
	case tpm2.TPMECCNistP384:
		c = elliptic.P384()
	default:
		c = elliptic.P521()
	}
	return &ecdsa.PublicKey{Curve: c, X: new(big.Int).SetBytes(p.X), Y: new(big.Int).SetBytes(p.Y)}
}

// name is the TPM Name of the encoded public area b that p was decoded
// from: nameAlg || H_nameAlg(b). b is canonical (parsePublic consumed it
// exactly), so it is the encoding tpm2.ObjectName would hash.
func (p *tpmPublic) name(b []byte) []byte {
	h, _ := p.NameAlg.Hash() // parsePublic checked it
	d := h.New()
	d.Write(b)
	out := make([]byte, 2, 2+h.Size())
	binary.BigEndian.PutUint16(out, uint16(p.NameAlg))
	return d.Sum(out)
}

// creationData is a decoded TPMS_CREATION_DATA (TPM 2.0 Part 2, 15.1), the
// AK's creation context that a creation attestation's creationHash
// certifies. Byte fields alias the input.
type creationData struct {
	PCRSelect           tpm2.TPMLPCRSelection
	PCRDigest           []byte
	Locality            uint8
	ParentNameAlg       tpm2.TPMAlgID
	ParentName          []byte
	ParentQualifiedName []byte
	OutsideInfo         []byte
}

// parseCreationData decodes a TPMS_CREATION_DATA, canonically.
func parseCreationData(b []byte) (*creationData, error) {
	r := &tpmReader{b: b}
	c := &creationData{}
	if err := r.pcrSelection(&c.PCRSelect); err != nil {
		return nil, err
	}
	c.PCRDigest = r.tpm2b("pcrDigest")
	c.Locality = r.u8("locality")
	c.ParentNameAlg = tpm2.TPMAlgID(r.u16("parentNameAlg"))
	c.ParentName = r.tpm2b("parentName")
	c.ParentQualifiedName = r.tpm2b("parentQualifiedName")
	c.OutsideInfo = r.tpm2b("outsideInfo")
	if err := r.end(); err != nil {
		return nil, err
	}
	return c, nil
}

// pcrSelection reads a TPML_PCR_SELECTION into l.
func (r *tpmReader) pcrSelection(l *tpm2.TPMLPCRSelection) error {
	n := r.u32("pcrSelect count")
	if r.err == nil && n > maxPCRSelections {
		return fmt.Errorf("pcrSelect count %d", n)
	}
	// Each TPMS_PCR_SELECTION takes at least 3 bytes: bound the
	// allocation by what is left.
	if r.err == nil && int(n) > len(r.b)/3 {
		return fmt.Errorf("pcrSelect count %d: out of data", n)
	}
	if r.err != nil {
		return nil // reported by end
	}
	l.PCRSelections = make([]tpm2.TPMSPCRSelection, n)
	for i := range l.PCRSelections {
		s := &l.PCRSelections[i]
		s.Hash = tpm2.TPMIAlgHash(r.u16("pcrSelect hash"))
		s.PCRSelect = r.bytes(int(r.u8("sizeofSelect")), "pcrSelect")
	}
	return nil
}
