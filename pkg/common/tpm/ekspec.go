package tpm

import (
	"crypto"
	"encoding/binary"
	"encoding/hex"

	"github.com/google/go-tpm/tpm2"
)

// ekSpec is one EK template of the TCG EK Credential Profile for TPM
// Family 2.0 (version 2.5, section 2.2 "Default EK Templates": the low
// range L-1/L-2 and the high range H-1..H-7), with where its certificate
// and persistent key live.
//
// The high range differs from the low range in four ways that all change
// the key a TPM derives from the same endorsement seed: nameAlg follows
// the key size (SHA-384 for RSA-3072/4096 and P-384, SHA-512 for P-521),
// the symmetric cipher is AES-256 beyond 2048/P-256, the authPolicy is
// PolicyB = PolicyOR{PolicyA, PolicyC} in nameAlg with userWithAuth SET
// (objectAttributes 0x000300f2; swtpm 0.7 uses the same), and unique is
// the empty buffer instead of zeros of the key size.
type ekSpec struct {
	name      string // "RSA-2048 (L-1)"
	alg       EKAlg  // canonical EKAlg of the key: rsa2048, p256, ...
	high      bool
	rsaBits   int              // 0 for ECC
	curve     tpm2.TPMECCCurve // for ECC
	nameAlg   tpm2.TPMIAlgHash
	symBits   int
	certIndex uint32   // TCG NV index of the EK certificate
	handles   []uint32 // persistent handles where the key is usually kept
}

// ekSpecs lists every supported template. The order is the order of
// preference of EKAuto after RSA-2048 (L-1) and P-256 (L-2).
var ekSpecs = []*ekSpec{
	{name: "RSA-2048 (L-1)", alg: EKRSA2048, rsaBits: 2048, nameAlg: tpm2.TPMAlgSHA256, symBits: 128, certIndex: 0x01c00002, handles: []uint32{0x81010001}},
	{name: "ECC P-256 (L-2)", alg: EKP256, curve: tpm2.TPMECCNistP256, nameAlg: tpm2.TPMAlgSHA256, symBits: 128, certIndex: 0x01c0000a, handles: []uint32{0x81010002, 0x8101000a}},
	{name: "RSA-2048 (H-1)", alg: EKRSA2048, high: true, rsaBits: 2048, nameAlg: tpm2.TPMAlgSHA256, symBits: 128, certIndex: 0x01c00012, handles: []uint32{0x81010012}},
	{name: "ECC P-256 (H-2)", alg: EKP256, high: true, curve: tpm2.TPMECCNistP256, nameAlg: tpm2.TPMAlgSHA256, symBits: 128, certIndex: 0x01c00014, handles: []uint32{0x81010014}},
	{name: "ECC P-384 (H-3)", alg: EKP384, high: true, curve: tpm2.TPMECCNistP384, nameAlg: tpm2.TPMAlgSHA384, symBits: 256, certIndex: 0x01c00016, handles: []uint32{0x81010016}},
	{name: "ECC P-521 (H-4)", alg: EKP521, high: true, curve: tpm2.TPMECCNistP521, nameAlg: tpm2.TPMAlgSHA512, symBits: 256, certIndex: 0x01c00018, handles: []uint32{0x81010018}},
	{name: "RSA-3072 (H-6)", alg: EKRSA3072, high: true, rsaBits: 3072, nameAlg: tpm2.TPMAlgSHA384, symBits: 256, certIndex: 0x01c0001c, handles: []uint32{0x8101001c}},
	{name: "RSA-4096 (H-7)", alg: EKRSA4096, high: true, rsaBits: 4096, nameAlg: tpm2.TPMAlgSHA384, symBits: 256, certIndex: 0x01c0001e, handles: []uint32{0x8101001e}},
}

// EKCertIndex returns the TCG NV index of the certificate of the EK of alg
// (low range for rsa2048 and p256), or 0 for an unknown alg. internal/tpmtest
// provisions certificates there.
func EKCertIndex(alg EKAlg) uint32 {
	if s := primarySpec(alg); s != nil {
		return s.certIndex
	}
	return 0
}

// EKPersistentHandle returns the persistent handle where the EK of alg is
// usually kept (0x81010001 RSA-2048, 0x81010002 P-256, 0x810100xx for the
// high range, xx the low byte of its certificate index), or 0.
func EKPersistentHandle(alg EKAlg) uint32 {
	if s := primarySpec(alg); s != nil {
		return s.handles[0]
	}
	return 0
}

// EKTemplate returns the TCG template (TPMT_PUBLIC, unique empty or zero)
// of the EK of alg, for TPM2_CreatePrimary under the endorsement
// hierarchy.
func EKTemplate(alg EKAlg) (tpm2.TPMTPublic, bool) {
	if s := primarySpec(alg); s != nil {
		return s.template(), true
	}
	return tpm2.TPMTPublic{}, false
}

// primarySpec is the first spec of a canonical or alias EKAlg.
func primarySpec(alg EKAlg) *ekSpec {
	c := canonical(alg)
	for _, s := range ekSpecs {
		if s.alg == c {
			return s
		}
	}
	return nil
}

// specsFor lists the specs an EKAlg selects, in order of preference.
func specsFor(alg EKAlg) []*ekSpec {
	if alg == EKAuto {
		return ekSpecs
	}
	c := canonical(alg)
	var out []*ekSpec
	for _, s := range ekSpecs {
		if s.alg == c {
			out = append(out, s)
		}
	}
	return out
}

// template builds the spec's TPMT_PUBLIC.
func (s *ekSpec) template() tpm2.TPMTPublic {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		AdminWithPolicy:     true,
		Restricted:          true,
		Decrypt:             true,
		UserWithAuth:        s.high,
	}
	policy := policyA(s.nameAlg)
	if s.high {
		policy = policyB(s.nameAlg)
	}
	sym := tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(s.symBits)),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
	pub := tpm2.TPMTPublic{NameAlg: s.nameAlg, ObjectAttributes: attrs, AuthPolicy: tpm2.TPM2BDigest{Buffer: policy}}
	if s.rsaBits != 0 {
		var unique []byte
		if !s.high {
			unique = make([]byte, s.rsaBits/8)
		}
		pub.Type = tpm2.TPMAlgRSA
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{Symmetric: sym, KeyBits: tpm2.TPMKeyBits(s.rsaBits)})
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: unique})
		return pub
	}
	var x, y []byte
	if !s.high {
		x, y = make([]byte, 32), make([]byte, 32)
	}
	pub.Type = tpm2.TPMAlgECC
	pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: sym,
		Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
		CurveID:   s.curve,
		KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	})
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}})
	return pub
}

// Command codes and handles that enter the EK policy digests.
const (
	ccPolicySecret      = 0x00000151
	ccPolicyOR          = 0x00000171
	ccPolicyAuthorizeNV = 0x00000192
	rhEndorsement       = 0x4000000B
)

// ekPolicyNVNames are the Names of the EK policy NV indices 0x01c07f01
// (SHA-256), 0x01c07f02 (SHA-384) and 0x01c07f03 (SHA-512), given by the
// TCG EK Credential Profile 2.5, table 14 "Policy Index Names": PolicyC
// is TPM2_PolicyAuthorizeNV of that index. They are fixed by the profile
// (the index's public area is specified), so no TPM command reads them.
var ekPolicyNVNames = map[tpm2.TPMIAlgHash]string{
	tpm2.TPMAlgSHA256: "000b0c9d717e9c3fe69fda41769450bb145957f8b3610e084dbf65591a5d11ecd83f",
	tpm2.TPMAlgSHA384: "000cdb62fca346612c976732ff4e8621fb4e858be82586486504f7d02e621f8d7d61ae32cfc60c4d120609ed6768afcf090c",
	tpm2.TPMAlgSHA512: "000d1c47c0bbcbd3cf7d7cae6987d31937c171015dde3b7f0d3c869bca1f7e8a223b9acfadb49b7c9cf14d450f41e9327de34d9291eece2c58ab1dc10e9059cce560",
}

func hashOf(alg tpm2.TPMIAlgHash) crypto.Hash {
	h, err := alg.Hash()
	if err != nil {
		panic("tpm: EK spec with unknown nameAlg") // the table above has only SHA-2
	}
	return h
}

// policyExtend is TPM 2.0 Part 1, 19.7.2: digest' = H(digest || cc || data).
func policyExtend(h crypto.Hash, digest []byte, cc uint32, data ...[]byte) []byte {
	w := h.New()
	w.Write(digest)
	binary.Write(w, binary.BigEndian, cc)
	for _, d := range data {
		w.Write(d)
	}
	return w.Sum(nil)
}

// policyA is TPM2_PolicySecret(TPM_RH_ENDORSEMENT) with an empty
// policyRef, from a zero digest: PolicyA of the profile, the whole
// authPolicy of the low range.
func policyA(alg tpm2.TPMIAlgHash) []byte {
	h := hashOf(alg)
	var name [4]byte
	binary.BigEndian.PutUint32(name[:], rhEndorsement)
	d := policyExtend(h, make([]byte, h.Size()), ccPolicySecret, name[:])
	w := h.New()
	w.Write(d) // the policyRef (empty) step
	return w.Sum(nil)
}

// policyC is TPM2_PolicyAuthorizeNV of the profile's policy index.
func policyC(alg tpm2.TPMIAlgHash) []byte {
	h := hashOf(alg)
	name, _ := hex.DecodeString(ekPolicyNVNames[alg])
	return policyExtend(h, make([]byte, h.Size()), ccPolicyAuthorizeNV, name)
}

// policyB is TPM2_PolicyOR{PolicyA, PolicyC}: the high range authPolicy.
func policyB(alg tpm2.TPMIAlgHash) []byte {
	h := hashOf(alg)
	return policyExtend(h, make([]byte, h.Size()), ccPolicyOR, policyA(alg), policyC(alg))
}
