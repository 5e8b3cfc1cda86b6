package tpm

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/tpmid/tpmid/pkg/common/pcrs"
)

// AKAlg selects the attestation key:
//
//	"ecdsa", "p256"  ECC NIST P-256, ECDSA with SHA-256 (the default)
//	"p384"           ECC NIST P-384, ECDSA with SHA-384 (nameAlg SHA-384)
//	"rsa", "rsa2048" RSA 2048, RSASSA-PKCS1-v1_5 with SHA-256
//	"rsa3072"        RSA 3072, RSASSA-PKCS1-v1_5 with SHA-256
//
// Quotes are signed with the AK's own scheme, so a P-384 AK signs with
// SHA-384.
type AKAlg string

// AK algorithms.
const (
	AKDefault AKAlg = ""
	AKECDSA   AKAlg = "ecdsa" // alias of AKP256
	AKRSA     AKAlg = "rsa"   // alias of AKRSA2048
	AKP256    AKAlg = "p256"
	AKP384    AKAlg = "p384"
	AKRSA2048 AKAlg = "rsa2048"
	AKRSA3072 AKAlg = "rsa3072"
)

// AKAlgs lists every accepted non-empty AKAlg, aliases included.
var AKAlgs = []AKAlg{AKECDSA, AKP256, AKP384, AKRSA, AKRSA2048, AKRSA3072}

// Canonical maps "" and the aliases to p256, p384, rsa2048 or rsa3072;
// an unknown AKAlg is returned unchanged.
func (a AKAlg) Canonical() AKAlg {
	switch a {
	case AKDefault, AKECDSA:
		return AKP256
	case AKRSA:
		return AKRSA2048
	}
	return a
}

// MaxAKBlob bounds an AK blob given to LoadAK.
const MaxAKBlob = 64 << 10

// AKTemplate returns the TPMT_PUBLIC template of a restricted signing AK
// of alg, as NewAK creates it.
func AKTemplate(alg AKAlg) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		SignEncrypt:         true,
	}
	ecc := func(nameAlg tpm2.TPMIAlgHash, curve tpm2.TPMECCCurve, hash tpm2.TPMIAlgHash) tpm2.TPMTPublic {
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: nameAlg, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: hash}),
				},
				CurveID: curve,
				KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}
	}
	rsa := func(bits int) tpm2.TPMTPublic {
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTRSAScheme{
					Scheme:  tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				KeyBits: tpm2.TPMKeyBits(bits),
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}
	}
	switch alg.Canonical() {
	case AKP256:
		return ecc(tpm2.TPMAlgSHA256, tpm2.TPMECCNistP256, tpm2.TPMAlgSHA256), nil
	case AKP384:
		return ecc(tpm2.TPMAlgSHA384, tpm2.TPMECCNistP384, tpm2.TPMAlgSHA384), nil
	case AKRSA2048:
		return rsa(2048), nil
	case AKRSA3072:
		return rsa(3072), nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("%w: AK algorithm %q (want one of %v or empty)", ErrBadAlgorithm, alg, AKAlgs)
}

// AKParams are the AK's TPM2_Create outputs the server needs: Public is
// TPM2B_PUBLIC contents (TPMT_PUBLIC), CreateData TPMS_CREATION_DATA (the
// server reads the parent's Name from it to check the AK's hierarchy).
type AKParams struct {
	Public, CreateData []byte
}

// AK is an attestation key loaded in the TPM: a restricted signing key
// under an SRK of the endorsement hierarchy (see srk). Close it to flush
// it.
type AK struct {
	handle          uint32
	name            tpm2.TPM2BName
	parent          tpm2.TPM2BName // the SRK's Name, kept in the blob
	transientParent bool           // made under tpmid's transient SRK, kept in the blob
	private         []byte         // TPM2B_PRIVATE contents, SRK-wrapped
	params          AKParams
	pub             crypto.PublicKey
	closed          bool
}

// akBlob is go-attestation's serializedKey (attest/storage.go), kept so
// that blobs written by earlier tpmid versions, which used go-attestation,
// load unchanged. Blobs written now load in go-attestation too, but carry
// no creation attestation, which its ActivationParameters.Generate needs.
type akBlob struct {
	Encoding   uint8 `json:"KeyEncoding"` // 2: keyEncodingEncrypted
	TPMVersion uint8 // 2
	Public     []byte
	CreateData []byte
	// go-attestation's CreateAttestation and CreateSignature
	// (TPM2_CertifyCreation's outputs) are in blobs made before
	// 2026-11-26; they are no longer made, read or sent.
	Name string
	Blob []byte `json:"KeyBlob"`
	// ParentName is the SRK's TPM Name (tpmid's addition; go-attestation
	// ignores it). With it LoadAK needs no TPM2_ReadPublic of the SRK: the
	// Name only fills go-tpm's handle bookkeeping, since the SRK is
	// authorised by an (empty) password, which involves no Name; a stale
	// one changes nothing the TPM checks.
	ParentName []byte `json:",omitempty"`
	// TransientParent (tpmid's addition): the parent is tpmid's transient
	// ECC SRK in the endorsement hierarchy, not the key at 0x81000001 (see
	// srk); LoadAK makes it again and checks it has ParentName.
	TransientParent bool `json:",omitempty"`
}

const keyEncodingEncrypted = 2

// NewAK creates an AK (TPM2_Create under the SRK, then TPM2_Load). If the
// SRK is missing it is created and persisted first (see srk).
//
// Security: the AK's attributes (fixedTPM, restricted, sign) prove nothing
// until a verifier has seen it activate a credential for a trusted EK.
// There is no TPM2_CertifyCreation: its attestation is signed by the AK
// itself, so it proves nothing before activation and nothing that
// activation does not prove after it (docs/verification.md); it cost a
// TPM signature per new AK.
func (t *TPM) NewAK(alg AKAlg) (*AK, error) {
	tmpl, err := AKTemplate(alg)
	if err != nil {
		return nil, err
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.unlock()
	parent, err := t.srk()
	if err != nil {
		return nil, err
	}
	tp := t.tp()
	cr, err := tpm2.Create{ParentHandle: parent.AuthHandle, InPublic: tpm2.New2B(tmpl)}.Execute(tp)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("TPM2_Create of the %s AK: %w", alg.Canonical(), err), parent.release(t))
	}
	ak, err := t.loadAK(parent, cr.OutPrivate.Buffer, cr.OutPublic.Bytes())
	if err != nil {
		return nil, err
	}
	ak.params.CreateData = cr.CreationData.Bytes()
	return ak, nil
}

// loadAK runs TPM2_Load of an AK under the SRK and checks its public area.
//
// It releases parent (flushes it if transient) on every path: a loaded key
// needs no parent, so NewAK and LoadAK need not each remember to.
func (t *TPM) loadAK(parent storageParent, private, public []byte) (ak *AK, err error) {
	defer func() {
		if rerr := parent.release(t); rerr != nil {
			if ak != nil {
				rerr = errors.Join(rerr, t.flush(ak.handle))
			}
			ak, err = nil, errors.Join(err, rerr)
		}
	}()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		return nil, fmt.Errorf("AK public area: %w", err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("AK public area: %w", err)
	}
	lr, err := tpm2.Load{
		ParentHandle: parent.AuthHandle,
		InPrivate:    tpm2.TPM2BPrivate{Buffer: private},
		InPublic:     tpm2.BytesAs2B[tpm2.TPMTPublic](public),
	}.Execute(t.tp())
	if err != nil {
		return nil, fmt.Errorf("TPM2_Load of the AK: %w", err)
	}
	return &AK{
		handle:          uint32(lr.ObjectHandle),
		name:            lr.Name,
		parent:          parent.Name,
		transientParent: parent.transient,
		private:         private,
		params:          AKParams{Public: public},
		pub:             key,
	}, nil
}

// LoadAK loads an AK from a blob made by (*AK).Blob, or by go-attestation
// (tpmid before 2026-11-25), with TPM2_Load under its SRK: one command
// when the blob names the SRK at 0x81000001 (ParentName); TPM2_CreatePrimary
// of tpmid's transient SRK first, and its TPM2_FlushContext after, when
// the blob was made under that (TransientParent); TPM2_ReadPublic of the
// SRK first for a blob that names no parent. The blob's private part is
// encrypted by the SRK, so it loads only in the TPM that made it.
func (t *TPM) LoadAK(blob []byte) (*AK, error) {
	if len(blob) > MaxAKBlob {
		return nil, fmt.Errorf("AK blob of %d bytes: %w (bound %d)", len(blob), ErrTooLarge, MaxAKBlob)
	}
	var b akBlob
	if err := json.Unmarshal(blob, &b); err != nil {
		return nil, fmt.Errorf("AK blob: %w", err)
	}
	if b.Encoding != keyEncodingEncrypted || len(b.Public) == 0 || len(b.Blob) == 0 {
		return nil, fmt.Errorf("AK blob: encoding %d with %d-byte public and %d-byte private parts, want an SRK-wrapped key", b.Encoding, len(b.Public), len(b.Blob))
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.unlock()
	var parent storageParent
	var err error
	switch {
	case b.TransientParent:
		if parent, err = t.transientSRK(); err != nil {
			return nil, err
		}
		if !bytes.Equal(parent.Name.Buffer, b.ParentName) {
			return nil, errors.Join(errors.New("AK blob: tpmid's transient SRK has another Name than the AK's parent: the endorsement hierarchy's seed changed, or the blob is from another TPM"), parent.release(t))
		}
	case len(b.ParentName) > 0:
		parent = persistentParent(tpm2.TPM2BName{Buffer: b.ParentName})
	default:
		if parent, err = t.persistentSRK(); err != nil {
			return nil, err
		}
	}
	ak, err := t.loadAK(parent, b.Blob, b.Public)
	if err != nil {
		return nil, err
	}
	ak.params.CreateData = b.CreateData
	return ak, nil
}

// Blob returns the AK in a form LoadAK accepts (go-attestation's JSON
// serialisation: TPM2B_PUBLIC, the SRK-wrapped TPM2B_PRIVATE and the
// creation parameters). It holds no secret in clear, but keep it with
// integrity: a swapped blob would make the agent present another AK.
func (k *AK) Blob() ([]byte, error) {
	b, err := json.Marshal(akBlob{
		Encoding: keyEncodingEncrypted, TPMVersion: 2,
		Public: k.params.Public, CreateData: k.params.CreateData,
		Blob: k.private, ParentName: k.parent.Buffer, TransientParent: k.transientParent,
	})
	if err != nil {
		return nil, fmt.Errorf("serialising AK: %w", err)
	}
	return b, nil
}

// Params returns the AK's attestation parameters for the server.
func (k *AK) Params() AKParams { return k.params }

// Public returns the AK's public key (*ecdsa.PublicKey or *rsa.PublicKey).
func (k *AK) Public() crypto.PublicKey { return k.pub }

// Close flushes the AK from the TPM (TPM2_FlushContext), also through a
// view whose context is done. Closing twice is a no-op.
func (k *AK) Close(t *TPM) error {
	if err := t.lockCleanup(); err != nil {
		return err
	}
	defer t.unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	if err := t.flush(k.handle); err != nil {
		return fmt.Errorf("flushing AK: %w", err)
	}
	return nil
}

// Activate decrypts a credential made by TPM2_MakeCredential (or its
// software equivalent) for (ek, ak) with TPM2_ActivateCredential. The EK
// is authorised by a policy session in the EK's nameAlg
// (TPM2_StartAuthSession, TPM2_PolicySecret on the endorsement hierarchy
// with empty auth, and for the high range TPM2_PolicyOR of PolicyA and
// PolicyC), flushed afterwards; an EK that is not persisted is recreated
// from its template (TPM2_CreatePrimary) and flushed. credential is
// TPM2B_ID_OBJECT and secret TPM2B_ENCRYPTED_SECRET, both with their
// 2-byte size prefix. Failure wraps ErrActivation.
//
// Security: returning the secret proves to its maker that ak is in the
// TPM holding ek; the caller must not reveal it except as the protocol's
// keyed proof. A credential made for another EK fails inside the TPM.
func (t *TPM) Activate(ak *AK, ek *EK, credential, secret []byte) ([]byte, error) {
	if ak == nil || ek == nil || ek.spec == nil {
		return nil, fmt.Errorf("%w: nil AK or EK", ErrActivation)
	}
	cred, err := unwrap2B(credential)
	if err != nil {
		return nil, fmt.Errorf("%w: credential blob: %w", ErrActivation, err)
	}
	sec, err := unwrap2B(secret)
	if err != nil {
		return nil, fmt.Errorf("%w: encrypted secret: %w", ErrActivation, err)
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.unlock()
	if ak.closed {
		return nil, fmt.Errorf("%w: AK is closed", ErrClosed)
	}
	out, err := t.activate(ak, ek, cred, sec)
	if err != nil {
		return nil, fmt.Errorf("%w: TPM2_ActivateCredential with the %s EK: %w", ErrActivation, ek.Template, err)
	}
	return out, nil
}

func (t *TPM) activate(ak *AK, ek *EK, cred, sec []byte) (out []byte, err error) {
	ekHandle, release, err := t.loadEK(ek)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, release()) }()
	tp := t.tp()
	// A one-off session (continueSession clear): the TPM flushes it when
	// TPM2_ActivateCredential succeeds, go-tpm when the command fails; a
	// session left by a failure before that is flushed below.
	sess := tpm2.Policy(ek.spec.nameAlg, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
		if _, err := (tpm2.PolicySecret{
			AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: h,
			NonceTPM:      nonce,
		}).Execute(tp); err != nil {
			return fmt.Errorf("TPM2_PolicySecret(endorsement): %w", err)
		}
		if ek.spec.high {
			if _, err := (tpm2.PolicyOr{
				PolicySession: h,
				PHashList: tpm2.TPMLDigest{Digests: []tpm2.TPM2BDigest{
					{Buffer: policyA(ek.spec.nameAlg)}, {Buffer: policyC(ek.spec.nameAlg)},
				}},
			}).Execute(tp); err != nil {
				return fmt.Errorf("TPM2_PolicyOR: %w", err)
			}
		}
		return nil
	})
	defer func() {
		if h := sess.Handle(); err != nil && h != tpm2.TPMRHNull {
			if ferr := t.flush(uint32(h)); ferr != nil && !isHandleError(ferr) {
				err = errors.Join(err, fmt.Errorf("flushing the policy session: %w", ferr))
			}
		}
	}()
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(ak.handle), Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: tpm2.TPMHandle(ekHandle), Name: tpm2.TPM2BName{Buffer: ek.name}, Auth: sess},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: cred},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: sec},
	}.Execute(tp)
	if err != nil {
		return nil, err
	}
	return rsp.CertInfo.Buffer, nil
}

// unwrap2B strips the 2-byte size of a TPM2B, which must match.
func unwrap2B(b []byte) ([]byte, error) {
	if len(b) < 2 || int(b[0])<<8|int(b[1]) != len(b)-2 {
		return nil, fmt.Errorf("not a TPM2B (%d bytes)", len(b))
	}
	return b[2:], nil
}

// Quote signs the given PCRs of one bank with the AK (TPM2_Quote with the
// AK's own signing scheme), with extraData as qualifyingData. attest is
// the TPMS_ATTEST structure and signature the TPMT_SIGNATURE. extraData
// is at most 64 bytes on most TPMs (the size of the AK's name digest).
//
// Security: the caller must read PCR values in the same session and the
// verifier must check the quote's PCR digest against them; a quote
// alone proves only the digest.
func (t *TPM) Quote(ak *AK, extraData []byte, bank pcrs.Alg, pcrList []int) (attest, signature []byte, err error) {
	list, err := checkSelection(bank, pcrList)
	if err != nil {
		return nil, nil, err
	}
	if ak == nil {
		return nil, nil, fmt.Errorf("TPM2_Quote: nil AK")
	}
	if err := t.lock(); err != nil {
		return nil, nil, err
	}
	defer t.unlock()
	if ak.closed {
		return nil, nil, fmt.Errorf("%w: AK is closed", ErrClosed)
	}
	bitmap := make([]byte, 3)
	for _, i := range list {
		bitmap[i/8] |= 1 << (i % 8)
	}
	q, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: tpm2.TPMHandle(ak.handle), Name: ak.name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: extraData},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMIAlgHash(bank), PCRSelect: bitmap}}},
	}.Execute(t.tp())
	if err != nil {
		return nil, nil, fmt.Errorf("TPM2_Quote bank %s PCRs %v: %w", bank, list, err)
	}
	return q.Quoted.Bytes(), tpm2.Marshal(q.Signature), nil
}

// isHandleError reports a TPM_RC_HANDLE answer: the handle is not loaded
// (already flushed).
func isHandleError(err error) bool { return errors.Is(err, tpm2.TPMRCHandle) }
