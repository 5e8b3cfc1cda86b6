package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// MaxAKPublicSize bounds ParseAKPublic's input. A TPM2B_PUBLIC is at most
// about 1.3 KB (RSA-8192 with a SHA-512 policy); PEM of a PKIX RSA-8192 key is
// about 1.5 KB.
const MaxAKPublicSize = 4096

// AKPublic is a parsed attestation key.
type AKPublic struct {
	// Public is an *rsa.PublicKey or *ecdsa.PublicKey.
	Public crypto.PublicKey
	// TPMTPublic is the canonical TPMT_PUBLIC encoding, nil if the key came
	// from PKIX.
	TPMTPublic []byte
	// Name is the TPM Name (nameAlg || H_nameAlg(TPMT_PUBLIC)), nil if PKIX.
	Name []byte
}

// ParseAKPublic accepts a TPMT_PUBLIC, a TPM2B_PUBLIC, a PKIX
// SubjectPublicKeyInfo in DER, or the same in a PEM "PUBLIC KEY" block.
// TPM encodings must be canonical (no trailing bytes). Only RSA (1024..8192
// bits) and NIST P-256/P-384/P-521 ECC keys are accepted.
func ParseAKPublic(b []byte) (*AKPublic, error) {
	if len(b) == 0 {
		return nil, failf(ReasonAKMalformed, "empty AK public key")
	}
	if len(b) > MaxAKPublicSize {
		return nil, failf(ReasonAKMalformed, "AK public key is %d bytes, limit %d", len(b), MaxAKPublicSize)
	}
	if t := bytes.TrimSpace(b); bytes.HasPrefix(t, []byte("-----BEGIN")) {
		blk, rest := pem.Decode(t)
		if blk == nil {
			return nil, failf(ReasonAKMalformed, "bad PEM")
		}
		if blk.Type != "PUBLIC KEY" {
			return nil, failf(ReasonAKMalformed, "PEM block %q, want \"PUBLIC KEY\"", blk.Type)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, failf(ReasonAKMalformed, "data after the PEM block")
		}
		return parsePKIX(blk.Bytes)
	}
	if b[0] == 0x30 { // ASN.1 SEQUENCE; no TPMT_PUBLIC or TPM2B_PUBLIC of sane size starts so.
		return parsePKIX(b)
	}
	if len(b) >= 2 && int(binary.BigEndian.Uint16(b)) == len(b)-2 {
		return parseTPMTPublic(b[2:])
	}
	return parseTPMTPublic(b)
}

func parsePKIX(der []byte) (*AKPublic, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, failf(ReasonAKMalformed, "PKIX public key: %v", err)
	}
	if err := checkKey(pub); err != nil {
		return nil, err
	}
	return &AKPublic{Public: pub}, nil
}

func parseTPMTPublic(b []byte) (*AKPublic, error) {
	if p, err := parsePublic(b); !errors.Is(err, errSlowPath) {
		if err != nil {
			return nil, failf(ReasonAKMalformed, "TPMT_PUBLIC: %v", err)
		}
		key := p.key()
		if k, ok := key.(*rsa.PublicKey); ok && k.N.BitLen() != int(p.KeyBits) {
			return nil, failf(ReasonAKMalformed, "RSA modulus has %d bits, keyBits says %d", k.N.BitLen(), p.KeyBits)
		}
		if err := checkKey(key); err != nil {
			return nil, err
		}
		return &AKPublic{Public: key, TPMTPublic: bytes.Clone(b), Name: p.name(b)}, nil
	}
	// Shapes the fast decoder does not cover, decoded by go-tpm.
	pub, err := unmarshalCanonical[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, failf(ReasonAKMalformed, "TPMT_PUBLIC: %v", err)
	}
	if pub.Type != tpm2.TPMAlgRSA && pub.Type != tpm2.TPMAlgECC {
		return nil, failf(ReasonAKMalformed, "TPMT_PUBLIC type 0x%04x, want RSA or ECC", uint16(pub.Type))
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, failf(ReasonAKMalformed, "TPMT_PUBLIC key: %v", err)
	}
	if pub.Type == tpm2.TPMAlgRSA {
		parms, _ := pub.Parameters.RSADetail()
		if k := key.(*rsa.PublicKey); k.N.BitLen() != int(parms.KeyBits) {
			return nil, failf(ReasonAKMalformed, "RSA modulus has %d bits, keyBits says %d", k.N.BitLen(), parms.KeyBits)
		}
	}
	if err := checkKey(key); err != nil {
		return nil, err
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, failf(ReasonAKMalformed, "TPMT_PUBLIC nameAlg 0x%04x: %v", uint16(pub.NameAlg), err)
	}
	return &AKPublic{Public: key, TPMTPublic: bytes.Clone(b), Name: name.Buffer}, nil
}

func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 1024 || n > 8192 {
			return failf(ReasonAKMalformed, "RSA key of %d bits (want 1024..8192)", n)
		}
		if k.E < 3 || k.E&1 == 0 {
			return failf(ReasonAKMalformed, "RSA public exponent %d", k.E)
		}
	case *ecdsa.PublicKey:
		if _, err := k.ECDH(); err != nil { // checks the curve and that the point is on it
			return failf(ReasonAKMalformed, "ECC key: %v", err)
		}
	default:
		return failf(ReasonAKMalformed, "unsupported key type %T", pub)
	}
	return nil
}

// Object attributes an AK must have (TPM 2.0 Part 2, 8.3.2 TPMA_OBJECT).
const (
	attrFixedTPM            = 1 << 1
	attrFixedParent         = 1 << 4
	attrSensitiveDataOrigin = 1 << 5
	attrRestricted          = 1 << 16
	attrDecrypt             = 1 << 17
	attrSign                = 1 << 18
)

// CheckAKAttributes requires a TPM-held AK (not a PKIX key) to be a
// restricted signing key that cannot leave its TPM: fixedTPM, fixedParent,
// sensitiveDataOrigin, restricted and sign set, decrypt clear. A restricted
// signing key only signs digests the TPM computed itself (or that do not
// start with TPM_GENERATED_VALUE), which is what makes its quotes evidence.
func CheckAKAttributes(ak *AKPublic) error {
	if ak == nil || ak.TPMTPublic == nil {
		return failf(ReasonAKAttributes, "no TPMT_PUBLIC: attributes cannot be checked for a PKIX key")
	}
	if len(ak.TPMTPublic) < 8 {
		return failf(ReasonAKMalformed, "TPMT_PUBLIC of %d bytes", len(ak.TPMTPublic))
	}
	// TPMT_PUBLIC: type (2), nameAlg (2), objectAttributes (4), ...
	a := binary.BigEndian.Uint32(ak.TPMTPublic[4:8])
	var missing []string
	for _, c := range []struct {
		bit  uint32
		name string
	}{{attrFixedTPM, "fixedTPM"}, {attrFixedParent, "fixedParent"}, {attrSensitiveDataOrigin, "sensitiveDataOrigin"}, {attrRestricted, "restricted"}, {attrSign, "sign"}} {
		if a&c.bit == 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return failf(ReasonAKAttributes, "objectAttributes 0x%08x lack %v", a, missing)
	}
	if a&attrDecrypt != 0 {
		return failf(ReasonAKAttributes, "objectAttributes 0x%08x: decrypt is set", a)
	}
	return nil
}

// CheckAKStrength refuses, before any challenge, an AK whose quotes could
// not be trusted anyway (ReasonAKWeak): an RSA key under 2048 bits, or a
// TPM-held AK whose name algorithm is weaker than SHA-256. The AK's Name (nameAlg || H_nameAlg(TPMT_PUBLIC)) is what
// TPM2_MakeCredential binds the credential to and what the creation
// attestation certifies; with SHA-1 a collision could stand another public
// area, with other attributes or another key, in for the one the TPM holds.
func CheckAKStrength(ak *AKPublic) error {
	if k, ok := ak.rsaKey(); ok && k.N.BitLen() < 2048 {
		return failf(ReasonAKWeak, "RSA key of %d bits, want at least 2048", k.N.BitLen())
	}
	if ak == nil || len(ak.TPMTPublic) < 4 {
		return failf(ReasonAKMalformed, "no TPMT_PUBLIC: the name algorithm cannot be checked")
	}
	// TPMT_PUBLIC: type (2), nameAlg (2), ...
	alg := tpm2.TPMIAlgHash(binary.BigEndian.Uint16(ak.TPMTPublic[2:4]))
	h, err := alg.Hash()
	if err != nil {
		return failf(ReasonAKMalformed, "name algorithm 0x%04x: %v", uint16(alg), err)
	}
	if h.Size() < 32 {
		return failf(ReasonAKWeak, "name algorithm %s (0x%04x) is weaker than SHA-256", h, uint16(alg))
	}
	return nil
}

func (ak *AKPublic) rsaKey() (*rsa.PublicKey, bool) {
	if ak == nil {
		return nil, false
	}
	k, ok := ak.Public.(*rsa.PublicKey)
	return k, ok
}

// unmarshalCanonical decodes a TPM structure with go-tpm and requires that
// re-encoding it gives back exactly the input, which rejects trailing bytes
// and any slack inside sized fields.
func unmarshalCanonical[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte) (t *T, err error) {
	v, err := tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("cannot re-encode: %v", r)
		}
	}()
	if re := tpm2.Marshal(*v); !bytes.Equal(re, b) {
		if len(re) < len(b) {
			return nil, fmt.Errorf("%d trailing bytes", len(b)-len(re))
		}
		return nil, fmt.Errorf("non-canonical encoding")
	}
	return v, nil
}
